"""The cold-build record: grid jobs charged to the first page that needs them, stages against the budget."""
import json

import pandas as pd
import pytest

from ssdlib.grid.jobs import Job
from ssdlib.grid.plan import Plan
from ssdlib.reporting import build_time, pages

PRIOR, TARGET = Job("prior", {"n": 1}, label="prior"), Job("target", {"n": 2}, label="t")
SETUP = Job("attack-setup", {"n": 3}, deps=(PRIOR.name, TARGET.name), label="s")
RUN = Job("attack-run", {"n": 4}, deps=(SETUP.name,), label="r")
PLANS = {"prior": Plan([PRIOR]), "targets": Plan([TARGET]), "attack": Plan([PRIOR, TARGET, SETUP, RUN]),
         "table": Plan([PRIOR, TARGET, SETUP, RUN])}


def report(cached_run=False, failed=False):
    rows = [(PRIOR, 1, 600.0, "ok"), (TARGET, 1, 300.0, "ok"), (SETUP, 1, 60.0, "ok"),
            (RUN, 0 if cached_run else 1, 0.5 if cached_run else 6.0, "error" if failed else "ok")]
    return pd.DataFrame([{"job": j.name, "kind": j.kind, "label": j.label, "status": s, "computed": c, "seconds": t}
                         for j, c, t, s in rows])


def record(**kwargs):
    return build_time.build_record(
        report(**kwargs), PLANS, {"prior": 2.0, "targets": 5.0, "attack": 30.0, "table": 3.0},
        {"grid": 700.0, "pages": 40.0, "html": 20.0}, scale="cpu", workers=2, machine="test", date="2026-12-06")


def test_each_computed_job_is_charged_once_to_the_first_page_that_needs_it():
    rec = record()
    by_page = {p["page"]: p for p in rec["pages"]}
    assert by_page["prior"]["grid_s"] == 600.0 and by_page["targets"]["grid_s"] == 300.0
    assert by_page["attack"]["grid_s"] == 66.0 and by_page["attack"]["jobs"] == 2
    assert by_page["table"]["grid_s"] == 0.0 and by_page["table"]["jobs"] == 0
    assert sum(p["grid_s"] for p in rec["pages"]) == sum(k["seconds"] for k in rec["kinds"].values())
    json.dumps(rec)  # the record is written as JSON


def test_cached_and_failed_jobs_are_not_charged():
    assert {p["page"]: p["grid_s"] for p in record(cached_run=True)["pages"]}["attack"] == 60.0
    rec = record(failed=True)
    assert rec["failed_jobs"] == 1 and {p["page"]: p["grid_s"] for p in rec["pages"]}["attack"] == 60.0


def test_a_report_job_outside_every_plan_or_a_missing_stage_is_an_error():
    extra = pd.concat([report(), pd.DataFrame([{"job": "ghost", "kind": "prior", "label": "", "status": "ok",
                                                "computed": 1, "seconds": 1.0}])])
    with pytest.raises(ValueError, match="in no page's plan"):
        build_time.build_record(extra, PLANS, {}, {"grid": 1, "pages": 1, "html": 1}, scale="cpu", workers=1,
                                machine="m", date="d")
    with pytest.raises(ValueError, match="missing: \\['html'\\]"):
        build_time.build_record(report(), PLANS, {}, {"grid": 1, "pages": 1}, scale="cpu", workers=1,
                                machine="m", date="d")


def test_the_sentences_say_whether_the_build_fits_its_budget():
    text = build_time.build_markdown(record(), "cpu")
    assert "**13 min** in all" in text and "fits (7 % of it)" in text
    assert "- **attack**: grid 1.1 min (2 jobs), page 0.5 min" in text
    slow = record()
    slow["walls"]["grid"] = 4 * 3600.0
    assert "does not fit" in build_time.build_markdown(slow, "cpu")
    assert "ran from that cache in" in text and "(runs overlap)" not in text  # one page at a time
    slow["page_jobs"] = 2
    text = build_time.build_markdown(slow, "cpu")
    assert "ran from that cache, 2 at a time, in" in text and "its own run (runs overlap)." in text
    assert "No cold build at scale `cpu` is on record" in build_time.build_markdown(None, "cpu")


def test_write_pages_writes_the_cold_build_include(tmp_path, monkeypatch):
    monkeypatch.setattr(build_time, "record_path", lambda scale, root=None: tmp_path / f"cold_build_{scale}.json")
    pages.write_pages(["a"], tmp_path)
    assert "No cold build" in (tmp_path / build_time.COLD_BUILD_FILE).read_text()
    (tmp_path / "cold_build_cpu.json").write_text(json.dumps(record()))
    pages.write_pages(["a"], tmp_path)
    assert "**13 min** in all" in (tmp_path / build_time.COLD_BUILD_FILE).read_text()


def test_the_readme_states_the_recorded_cold_build():
    """The README's cold-build time is the recorded one (data/measurements/cold_build_cpu.json), not a typed guess."""
    from ssdlib.utils import REPO_ROOT
    record = build_time.load_record("cpu")
    if record is None:
        pytest.skip("no cold build of the cpu book on record")
    total = sum(record["walls"][k] for k in ("grid", "pages", "html"))
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"took **{build_time._hm(total)}** on" in readme and record["date"] in readme


def test_a_build_in_parts_reads_each_report_and_keeps_the_computing_record(tmp_path):
    import importlib.util
    from ssdlib.utils import REPO_ROOT
    spec = importlib.util.spec_from_file_location("cold_build", REPO_ROOT / "benchmarks" / "cold_build.py")
    cold_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cold_build)
    first = report().iloc[:2]                        # the part that was stopped: its journal
    first.to_json(tmp_path / "part1.jsonl", orient="records", lines=True)
    second = report().assign(computed=[0, 0, 1, 1])  # the resumed part finds the first two in the cache
    second.to_csv(tmp_path / "part2.csv", index=False)
    both = cold_build.read_reports([tmp_path / "part1.jsonl", tmp_path / "part2.csv"])
    assert sorted(both.job) == sorted(report().job) and (both.computed == 1).all()
