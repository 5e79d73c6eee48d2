"""The notebook runner: toc order, parameter precedence, literal parsing, digests."""
import json

import pytest

from ssdlib.reporting import runner


def test_toc_lists_executed_notebooks_in_order():
    names = runner.toc_notebooks()
    assert names and names.index("theory") < names.index("solver")


def test_every_toc_notebook_has_a_source_and_profiles_for_each_scale():
    profiles = runner.load_profiles()
    for name in runner.toc_notebooks():
        assert runner.source_of(name, profiles).exists()
        for scale in runner.SCALES:
            assert runner.parameters_for(name, scale, profiles)["scale"] == scale


def test_parameter_precedence():
    profiles = {"common": {"cpu": {"a": 1, "b": 1}},
                "nb": {"parameters": {"b": 5, "d": 4}, "cpu": {"b": 2, "c": 2}}}
    params = runner.parameters_for("nb", "cpu", profiles, {"c": 3})
    assert params == {"scale": "cpu", "a": 1, "b": 2, "c": 3, "d": 4}
    assert runner.parameters_for("nb", "smoke", profiles)["b"] == 5
    with pytest.raises(ValueError, match="unknown scale"):
        runner.parameters_for("nb", "huge", profiles)


@pytest.mark.parametrize("text, value", [("3", 3), ("0.5", 0.5), ("[1, 2]", [1, 2]), ("None", None),
                                         ("cuda", "cuda"), ("[lfw_ir152]", ["lfw_ir152"]),
                                         ('["lfw"]', ["lfw"]), ("{lokt: [lfw_ir152]}", {"lokt": ["lfw_ir152"]})])
def test_parse_value(text, value):
    assert runner.parse_value(text) == value


def test_parse_value_rejects_a_broken_list():
    """A list that is neither a literal nor YAML is an error, not the string a notebook would iterate over."""
    with pytest.raises(ValueError, match="neither a Python literal nor YAML"):
        runner.parse_value("[lfw_ir152")


def test_digest_follows_the_environment_the_notebook_runs_in(tmp_path):
    profiles = runner.load_profiles()
    source = runner.source_of("solver", profiles)
    env = runner.environment({"scale": "cpu"})
    assert set(env) == {"data_root", "torch", "device"}
    assert runner.run_digest(source, {"a": 1}) == runner.run_digest(source, {"a": 1})  # stable
    # pointing the loaders at another data root (e.g. the full CelebA) re-executes, as do torch and the device
    other_root = runner.environment({"scale": "cpu", "data_root": str(tmp_path)})
    assert other_root["data_root"] != env["data_root"]
    digests = {runner.run_digest(source, {"a": 1}, e) for e in (env, other_root, {**env, "torch": "0.0"},
                                                                {**env, "device": "cuda"})}
    assert len(digests) == 4


def fake_repo(tmp_path, monkeypatch):
    """A repository with one notebook ``nb`` whose papermill execution is faked (counted, optionally failing)."""
    import json
    monkeypatch.setattr(runner, "REPO_ROOT", tmp_path)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "ssdlib").mkdir()
    nb = {"cells": [{"cell_type": "markdown", "id": "a", "metadata": {}, "source": "# T"}], "metadata": {},
          "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "notebooks" / "nb.ipynb").write_text(json.dumps(nb))
    calls = []

    def execute_notebook(src, out, parameters, **kwargs):
        calls.append(parameters)
        if parameters.get("fail"):
            open(out, "w").write(json.dumps(nb))  # papermill leaves the partly executed copy, then raises
            raise RuntimeError("cell failed")
        open(out, "w").write(json.dumps(nb))

    monkeypatch.setattr("papermill.execute_notebook", execute_notebook)
    return calls


def test_execute_skips_up_to_date_copies_and_reruns_on_change(tmp_path, monkeypatch):
    calls = fake_repo(tmp_path, monkeypatch)
    profiles = {"nb": {"smoke": {"k": 1}}}
    assert runner.execute("nb", "smoke", profiles=profiles)[0] is True
    assert runner.execute("nb", "smoke", profiles=profiles)[0] is False and len(calls) == 1  # up to date
    assert runner.execute("nb", "smoke", overrides={"k": 2}, profiles=profiles)[0] is True  # a parameter changed
    (tmp_path / "ssdlib" / "new.py").write_text("x = 1\n")  # the library changed
    assert runner.execute("nb", "smoke", overrides={"k": 2}, profiles=profiles)[0] is True
    assert runner.execute("nb", "smoke", overrides={"k": 2}, profiles=profiles, force=True)[0] is True
    assert len(calls) == 4
    assert runner.published_scales(["nb"], tmp_path) == {"nb": "smoke"}


def test_a_failing_notebook_keeps_the_last_good_copy_and_the_partial_one(tmp_path, monkeypatch):
    import json
    fake_repo(tmp_path, monkeypatch)
    profiles = {"nb": {}}
    runner.execute("nb", "smoke", profiles=profiles)
    good = (tmp_path / "executed" / "smoke" / "nb.ipynb").read_text()
    with pytest.raises(RuntimeError, match="cell failed"):
        runner.execute("nb", "smoke", overrides={"fail": True}, profiles=profiles)
    assert (tmp_path / "executed" / "smoke" / "nb.ipynb").read_text() == good  # nothing that finished is lost
    assert (tmp_path / "executed" / "failed" / "nb.ipynb").exists()  # the partial copy, for the reader
    assert "fail" not in json.loads(good)["metadata"]["ssd_runner"]["parameters"]


def test_only_at_another_scale_refuses_to_mix_scales(tmp_path, monkeypatch, capsys):
    fake_repo(tmp_path, monkeypatch)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: executed/nb\nchapters:\n  - file: executed/other\n")
    (tmp_path / "notebooks" / "other.ipynb").write_text((tmp_path / "notebooks" / "nb.ipynb").read_text())
    (tmp_path / "notebooks" / "scales.yml").write_text("{}\n")
    assert runner.main(["--scale", "cpu"]) == 0  # the whole book at cpu
    with pytest.raises(SystemExit):
        runner.main(["--scale", "smoke", "--only", "nb"])  # one page at smoke beside cpu pages: refused
    assert "mix scales" in capsys.readouterr().err
    assert runner.main(["--scale", "smoke", "--only", "nb", "--mixed"]) == 0
    assert runner.published_scales(["nb", "other"], tmp_path) == {"nb": "smoke", "other": "cpu"}


def test_strip_widgets_keeps_other_outputs():
    nb = {"metadata": {"widgets": {"state": {}}}, "cells": [{"cell_type": "code", "outputs": [
        {"output_type": "display_data", "data": {runner.WIDGET_MIME: {}, "text/plain": "0%"}},
        {"output_type": "stream", "name": "stdout", "text": "kept"}]}]}
    out = runner.strip_widgets(nb)
    assert "widgets" not in out["metadata"]
    assert out["cells"][0]["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "kept"}]


def test_annotate_titles_the_page_labels_parameters_and_adds_a_banner():
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# Shared title\nintro"},
                    {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "scale = 'cpu'"},
                    {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "scale = 'smoke'"},
                    {"cell_type": "code", "metadata": {}, "source": "x = 1"}]}
    out = runner.annotate(nb, "targets_x", "smoke", 12.0, title="Targets: X")
    sources = ["".join(c["source"]) for c in out["cells"]]
    assert sources[0].startswith("# Targets: X\nintro")
    assert "scale **smoke**" in sources[1] and "--only targets_x" in sources[1]
    assert sources[2].startswith("**Default parameters**") and sources[4].startswith("**Parameters of this build**")
    assert [c["cell_type"] for c in out["cells"]] == ["markdown", "markdown", "markdown", "code", "markdown",
                                                       "code", "code"]
    added = [c["id"] for c in out["cells"] if "id" in c]
    assert len(added) == 3 and len(set(added)) == 3  # every added cell has its own id (nbformat 4.5)


def test_tables_are_written_with_scale_and_date_and_published(tmp_path, monkeypatch):
    import pandas as pd

    from ssdlib.reporting.tables import save_table, show

    monkeypatch.chdir(tmp_path)
    path = save_table(pd.DataFrame({"a": [1, 2], "b": [None, None]}), "demo", scale="smoke")
    table = pd.read_csv(path)
    assert list(table.columns) == ["a", "b", "scale", "run_date"] and set(table.scale) == {"smoke"}
    html = show(pd.DataFrame({"a": [1.23456], "b": [float("nan")]})).to_html()
    assert "1.235" in html and ">b<" not in html  # rounded, all-NaN column dropped
    with pytest.raises(ValueError, match="plain file stem"):
        save_table(pd.DataFrame(), "../escape", scale="smoke")
    monkeypatch.setattr(runner, "REPO_ROOT", tmp_path)
    (tmp_path / "executed" / "smoke" / "tables").mkdir(parents=True)
    (tmp_path / "executed" / "smoke" / "tables" / "t.csv").write_text("a\n1\n")
    assert [p.name for p in runner.publish_tables("smoke")] == ["t.csv"]
    assert (tmp_path / "executed" / "tables" / "t.csv").read_text() == "a\n1\n"


def test_side_by_side_puts_each_quantity_beside_the_paper():
    import pandas as pd

    from ssdlib.reporting.tables import side_by_side, show

    df = pd.DataFrame({"setting": ["A", "A", "B"], "defense": ["x", "y", "x"], "acc": [20.0, 30.125, 40.0],
                       "paper_acc": [94.2, 88.9, None], "l1": [0.12345, 0.2, 0.3], "paper_l1": [None] * 3})
    table = side_by_side(df, ["setting", "defense"], {"Acc (%)": {"ours": "acc", "paper": "paper_acc"},
                                                      "L1": {"ours": "l1", "paper": "paper_l1"}})
    assert list(table.columns) == [("Acc (%)", "ours"), ("Acc (%)", "paper"), ("L1", "ours"), ("L1", "paper")]
    assert table.loc[("A", "y"), ("Acc (%)", "ours")] == 30.125
    html = show(table, precisions={"Acc (%)": 1}).to_html()
    assert "30.1<" in html and "0.123<" in html  # per-group precision, default elsewhere
    assert html.count(">paper<") == 1  # the all-NaN paper L1 column is dropped
    assert ">setting<" in html  # a named index is shown (setting labels once per group)
    with pytest.raises(KeyError, match="no column"):
        side_by_side(df, ["setting"], {"Acc": {"ours": "missing"}})


def test_show_formats_tiny_errors_in_scientific_notation():
    import pandas as pd

    from ssdlib.reporting.tables import show
    html = show(pd.DataFrame({"err": [2.2e-16], "x": [1.234]}), precision=2, formats={"err": "{:.1e}"}).to_html()
    assert "2.2e-16" in html and "1.23" in html and ">0.00<" not in html


def test_page_index_and_banner_come_from_the_runner_records(tmp_path):
    from ssdlib.reporting import pages
    log = ['{"kind": "targets", "cached": true, "seconds": 30.0}', '{"kind": "attacks", "cached": false, "seconds": 12.5}',
           '{"kind": "attacks", "cached": false, "seconds": 1.5}', ""]
    cache = pages.summarize_cache_log(log)
    assert cache == {"targets": {"loaded": 1, "computed": 0, "compute_s": 0.0},
                     "attacks": {"loaded": 0, "computed": 2, "compute_s": 14.0}}
    record = {"scale": "cpu", "parameters": {"scale": "cpu", "attack": "brep"}, "cache": cache,
              "runs": [{"date": "2026-12-01", "seconds": 1800.0}, {"date": "2026-12-05", "seconds": 20.0}]}
    (tmp_path / "a.ipynb").write_text(json.dumps({"metadata": {"ssd_runner": record}}))
    records = pages.page_records(["a", "b"], tmp_path)
    a = records.iloc[0]
    assert a["longest run (s)"] == 1800.0 and a["last run (s)"] == 20.0 and a["date"] == "2026-12-05"
    assert a["depends on"] == "targets" and a["computes"] == "attacks" and a["inputs"] == "attack=brep"
    text = pages.pages_markdown(records)
    assert "**a** (scale `cpu`, 2026-12-05)" in text and "longest of 2 runs on record 30 min" in text
    assert "**b**: not built" in text and "computed into it: attacks" in text
    banner = pages.banner_markdown(records)
    assert "1 page executed on 2026-12-05 at scale **cpu**; 1 page is not built yet" in banner
    pages.write_pages(["a"], tmp_path)
    assert (tmp_path / pages.PAGES_FILE).read_text() == pages.pages_markdown(pages.page_records(["a"], tmp_path))


def test_execution_order_runs_a_page_after_what_it_needs():
    profiles = {"t1": {"needs": ["a", "b"]}, "t2": {"needs": ["t1", "absent"]}, "b": {"needs": ["p"]}}
    assert runner.execution_order(["t1", "t2", "p", "a", "b"], profiles) == ["a", "p", "b", "t1", "t2"]
    assert runner.execution_order(["a", "b"], profiles) == ["a", "b"]
    with pytest.raises(ValueError, match="cycle"):
        runner.execution_order(["x", "y"], {"x": {"needs": ["y"]}, "y": {"needs": ["x"]}})
    order = runner.execution_order(runner.toc_notebooks(), runner.load_profiles())
    assert order.index("table1") > order.index("attack_c2f") and order.index("table2") > order.index("attack_lokt")


def test_run_parallel_starts_a_page_after_what_it_needs_and_at_most_jobs_at_once():
    import threading
    import time
    profiles = {"t1": {"needs": ["a", "b"]}, "t2": {"needs": ["t1"]}}
    order = runner.execution_order(["t1", "t2", "a", "b", "c", "d"], profiles)
    lock, events, live, peak = threading.Lock(), [], [0], [0]

    def run(name):
        with lock:
            events.append(("start", name))
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.05)
        with lock:
            live[0] -= 1
            events.append(("end", name))

    outcome = runner.run_parallel(order, profiles, 2, run)
    assert outcome == {name: "ok" for name in order}
    assert peak[0] == 2  # two at once, never three
    at = {e: i for i, e in enumerate(events)}
    for page, needs in (("t1", ["a", "b"]), ("t2", ["t1"])):
        assert all(at[("end", n)] < at[("start", page)] for n in needs)
    assert [n for kind, n in events if kind == "start"][:2] == order[:2]  # ready pages start in book order
    with pytest.raises(ValueError, match="positive"):
        runner.run_parallel(order, profiles, 0, run)
    events.clear()
    timed = {**profiles, "c": {"exclusive": True}}  # a page that times itself runs alone
    assert set(runner.run_parallel(order, timed, 2, run).values()) == {"ok"}
    at = {e: i for i, e in enumerate(events)}
    assert at[("start", "c")] + 1 == at[("end", "c")]  # nothing started or ended while it ran


def test_run_parallel_skips_what_needs_a_failed_page_and_runs_the_rest():
    ran = []

    def run(name):
        ran.append(name)
        if name == "a":
            raise RuntimeError("cell failed")

    profiles = {"t1": {"needs": ["a"]}, "t2": {"needs": ["t1"]}}
    outcome = runner.run_parallel(["a", "b", "t1", "t2", "c"], profiles, 2, run)
    assert outcome["a"] == "failed: RuntimeError: cell failed"
    assert outcome["t1"] == "skipped: needs a" and outcome["t2"] == "skipped: needs t1"
    assert outcome["b"] == outcome["c"] == "ok" and sorted(ran) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="cycle"):
        runner.run_parallel(["x", "y"], {"x": {"needs": ["y"]}, "y": {"needs": ["x"]}}, 2, lambda name: None)


def test_jobs_runs_each_page_in_its_own_process_and_reports_failures(tmp_path, monkeypatch, capsys):
    fake_repo(tmp_path, monkeypatch)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: executed/nb\nchapters:\n  - file: executed/other\n")
    (tmp_path / "notebooks" / "scales.yml").write_text("other: {needs: [nb]}\n")
    calls = []

    def fake_child(name, scale, args, log_dir):
        calls.append((name, scale, args, log_dir))
        if name == "nb":
            raise RuntimeError("exit status 1")

    monkeypatch.setattr(runner, "_run_in_process", fake_child)
    assert runner.main(["--scale", "smoke", "--jobs", "2", "-p", "k", "3"]) == 1
    assert calls == [("nb", "smoke", ["-p", "k", "3"], tmp_path / "executed" / "smoke" / "logs")]
    err = capsys.readouterr().err
    assert "nb: failed: RuntimeError: exit status 1" in err and "other: skipped: needs nb" in err
    with pytest.raises(SystemExit):
        runner.main(["--scale", "smoke", "--jobs", "0"])
