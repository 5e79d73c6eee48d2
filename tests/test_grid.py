"""The experiment grid (ssdlib.grid): job specs and plans, atomic cache writes with host-unique temporary names, a
failing job's error, and on a real smoke grid: the notebook's gather computes nothing after the grid ran, a 2-worker
Dask LocalCluster gives results bit-identical to in-process, and a worker killed mid-job loses nothing."""
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from ssdlib import cache as C
from ssdlib import grid as G
from ssdlib.grid.jobs import Job

#: The smoke grid of these tests: one setting, the undefended and the SSD row, one attack seed, Mirror.
SMOKE = dict(name="lfw_ir152", scale="smoke", attack="mirror", rows=["none", "ssd"], seeds=[0], extra_seeds=[])


def smoke_plan(evaluator: bool = True) -> G.Plan:
    plan = G.plan_attack_table(**SMOKE)
    return plan if evaluator else G.Plan(j for j in plan if j.kind != "evaluator")


def fresh_cache(path: Path, monkeypatch) -> Path:
    """An empty cache at ``path`` (decoded faces and embeddings linked from the session's test cache)."""
    session = C.cache_root()
    path.mkdir(parents=True, exist_ok=True)
    for kind in ("faces", "embeddings"):
        (path / kind).mkdir(exist_ok=True)
        if (session / kind).is_dir():
            for f in (session / kind).iterdir():
                if f.is_file() and not f.name.startswith("."):
                    (path / kind / f.name).symlink_to(f.resolve())
    monkeypatch.setenv("SSD_CACHE_DIR", str(path))
    return path


#: Payload entries that measure time or describe the machine, not the result.
IGNORED = {"seconds", "environment", "setup_seconds", "train_seconds"}


def differences(x, y, where=""):
    """Where two payloads differ (tensors bit for bit), timing entries left out."""
    if isinstance(x, dict) and isinstance(y, dict):
        if set(x) != set(y):
            return [f"{where}: keys {set(x) ^ set(y)}"]
        return [d for k in x if not (isinstance(k, str) and (k in IGNORED or "seconds" in k))
                for d in differences(x[k], y[k], f"{where}.{k}")]
    if isinstance(x, (list, tuple)):
        if len(x) != len(y):
            return [f"{where}: lengths {len(x)} != {len(y)}"]
        return [d for i, (u, v) in enumerate(zip(x, y)) for d in differences(u, v, f"{where}[{i}]")]
    if isinstance(x, torch.Tensor):
        return [] if isinstance(y, torch.Tensor) and torch.equal(x, y) else [f"{where}: tensors differ"]
    return [] if x == y or (x != x and y != y) else [f"{where}: {x!r} != {y!r}"]


def assert_same_artifacts(a: Path, b: Path) -> int:
    """Every grid artifact of cache ``a`` is in ``b`` under the same key, bit-identical; returns how many."""
    n = 0
    for kind in G.GRID_KINDS:
        names_a = sorted(p.name for p in (a / kind).glob("*.pt")) if (a / kind).is_dir() else []
        names_b = sorted(p.name for p in (b / kind).glob("*.pt")) if (b / kind).is_dir() else []
        assert names_a == names_b, (kind, set(names_a) ^ set(names_b))
        for name in names_a:
            diff = differences(torch.load(a / kind / name, weights_only=False),
                               torch.load(b / kind / name, weights_only=False))
            assert not diff, (kind, name, diff[:5])
            n += 1
    return n


# --- cache: temporary names, atomic writes, recording, forbidding ----------------------------------------------
def test_temporary_names_are_unique_across_hosts_and_processes(tmp_path, monkeypatch):
    target = tmp_path / "models" / "m-abc.pt"
    names = {C.temporary_path(target).name for _ in range(2000)}
    assert len(names) == 2000  # same host and pid: the random suffix differs
    name = next(iter(names))
    assert name.startswith(".m-abc.pt.") and name.endswith(".tmp") and f".{os.getpid()}." in name
    monkeypatch.setattr(C.os, "getpid", lambda: 4242)
    monkeypatch.setattr(C.secrets, "token_hex", lambda n: "00000000")  # even with the same pid and suffix...
    monkeypatch.setattr(C.socket, "gethostname", lambda: "node-a.cluster")
    on_a = C.temporary_path(target)
    monkeypatch.setattr(C.socket, "gethostname", lambda: "node-b.cluster")
    on_b = C.temporary_path(target)
    assert on_a != on_b and "node-a_cluster" in on_a.name and on_a.parent == target.parent  # ...hosts differ


def test_atomic_save_leaves_the_file_and_no_temporary(tmp_path):
    path = C.atomic_save({"x": torch.arange(3)}, tmp_path / "kind" / "a-1.pt")
    assert torch.equal(torch.load(path)["x"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["a-1.pt"]


def test_recording_lists_artifacts_and_forbid_compute_refuses_a_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))
    with C.recording() as found:
        payload, info = C.cached("toys", {"a": 1}, lambda _: {"v": 1})
        C.cached("toys", {"a": 1}, lambda _: {"v": 2})
    assert [(i.kind, i.key, i.cached) for i in found] == [("toys", info.key, False), ("toys", info.key, True)]
    assert payload["environment"]["torch"] == torch.__version__ and payload["environment"]["threads"] >= 1
    with C.forbid_compute(["toys"]):
        assert C.cached("toys", {"a": 1}, lambda _: {"v": 3})[0]["v"] == 1  # a hit is fine
        with pytest.raises(C.CacheMiss, match=r"toys artifact .* forbidden.*\"a\": 2"):
            C.cached("toys", {"a": 2}, lambda _: {"v": 3})
        C.cached("other", {"a": 2}, lambda _: {"v": 3})  # other kinds compute
    monkeypatch.setenv(C.FORBID_ENV, "all")  # what the runner's kernels see
    with pytest.raises(C.CacheMiss):
        C.cached("other", {"a": 3}, lambda _: {"v": 3})


def test_environment_is_recorded_in_computed_payloads(tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))
    with C.environment(device="cpu", threads=1):
        payload, _ = C.cached("toys", {"b": 1}, lambda _: {"v": 1, "environment": {"extra": 1}})
    assert payload["environment"]["device"] == "cpu" and payload["environment"]["extra"] == 1


# --- job specs and plans ---------------------------------------------------------------------------------------
def test_jobs_are_json_specs_named_by_their_parameters():
    job = Job("prior", {"scale": "smoke", "seed": 0, "root": None, "device": None}, label="prior")
    again = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    assert again == job and again.name == job.name and job.name.startswith("prior:prior:")
    assert Job("prior", {**job.params, "seed": 1}).name != job.name
    assert Job("prior", {**job.params, "device": "cuda"}).gpu and not job.gpu
    with pytest.raises(ValueError, match="unknown job kind"):
        Job("dinner", {})
    with pytest.raises(ValueError, match="JSON"):
        Job("prior", {"model": object()})


def test_plan_mirrors_attack_table_and_orders_dependencies():
    plan = smoke_plan()
    assert plan.counts() == {"backbone": 1, "target": 1, "prior": 1, "evaluator": 1, "ceiling": 1,
                             "attack-setup": 2, "attack-run": 4}
    seen = set()
    for job in plan:
        assert set(job.deps) <= seen, job.name
        seen.add(job.name)
    runs = [j for j in plan if j.kind == "attack-run"]
    assert sorted((j.params["row"], j.params["class"]) for j in runs) == [("none", 0), ("none", 1), ("ssd", 0),
                                                                         ("ssd", 1)]
    # the calibrated row needs its temperature, a training-time row its own target; a second plan adds nothing twice
    more = G.plan_attack_table("lfw_ir152", "smoke", "mirror", rows=["mid", "ssd_cal"], seeds=[0], extra_seeds=[],
                               plan=G.Plan(plan))
    kinds = [j.kind for j in more if j.name not in {p.name for p in plan}]
    assert sorted(kinds) == sorted(["target", "calibration"] + ["attack-setup"] * 2 + ["attack-run"] * 4)
    with pytest.raises(ValueError, match="needs"):
        G.Plan([runs[0]])
    bad = G.plan_attack_table("lfw_ir152", "smoke", "mirror", rows=["no_such_row"], seeds=[0], extra_seeds=[])
    with pytest.raises(G.JobError, match=r"(?s)unknown row 'no_such_row'.*\"row\": \"no_such_row\""):
        G.execute(next(j for j in bad if j.kind == "attack-setup"))  # refused where its oracle is built


def test_book_plan_reads_the_runner_profiles():
    from ssdlib.grid.plan import notebook_parameters
    p = notebook_parameters("attack_brep", "cpu")
    assert p["attack"] == "brep" and p["extra_seeds"] == [] and p["variant_classes"] == 10  # scales.yml
    assert p["seeds"] == [0] and p["scale"] == "cpu"  # the notebook's own default
    plans = G.plan_book("smoke", only=["prior", "evaluation", "theory"])
    assert [j.kind for j in plans["prior"]] == ["prior"] and len(plans["theory"]) == 0
    assert sorted(j.params["dataset"] for j in plans["evaluation"]) == ["celeba", "lfw"]
    with pytest.raises(ValueError, match="not in _toc.yml"):
        G.plan_book("smoke", only=["nope"])


@pytest.mark.parametrize("scale", ["smoke", "cpu"])
def test_results_pages_attack_nothing_their_attack_pages_do_not(scale):
    """Tables 1 and 2 and the frontier read the attack pages' runs: with the scale's cuts (scales.yml, "cpu scope")
    their plans hold no attack job that the pages they `need` do not plan, so no cut leaves a table computing."""
    from ssdlib.reporting import runner
    profiles = runner.load_profiles()
    plans = G.plan_book(scale)
    for page in ("table1", "table2", "frontier"):
        needed = {j.name for need in profiles[page]["needs"] for j in plans[need]}
        extra = [j.label for j in plans[page] if j.kind.startswith("attack") and j.name not in needed]
        assert not extra, (page, extra[:5])
    if scale == "cpu":  # every attack of the cpu book runs on LFW / IR-152; the other settings keep their targets
        attacked = {j.params["setting"] for plan in plans.values() for j in plan if j.kind.startswith("attack")}
        assert attacked == {"lfw_ir152"}
        trained = {j.params["setting"] for j in plans["utility"] if j.kind == "target"}
        assert trained == {"celeba_ir152", "lfw_ir152", "lfw_vgg16"}
        assert {j.params["dataset"] for plan in plans.values() for j in plan if j.kind == "evaluator"} == {"lfw"}


def test_baselines_plan_holds_the_perturbation_and_dp_sgd_rows():
    """The second block's planner: every perturbation row of each setting, and the DP-SGD rows (each after its own
    DP-SGD target job) only for the settings of ``dp_settings``, as the page's attack_table calls ask."""
    from ssdlib.experiments import attacks as A
    plan = G.plan_notebook("baselines_mirror", "smoke", overrides={"dp_settings": ["lfw_vgg16"]})
    setups = {(j.params["setting"], j.params["row"]) for j in plan if j.kind == "attack-setup"}
    for s in ("lfw_ir152", "lfw_vgg16"):
        assert {(s, r) for r in ("none", "ssd", *A.BASELINE_ROWS)} <= setups
    assert {r for s, r in setups if r in A.DP_SGD_ROWS and s == "lfw_vgg16"} == set(A.DP_SGD_ROWS)
    assert not any(r in A.DP_SGD_ROWS for s, r in setups if s == "lfw_ir152")
    dp = {j.name: j for j in plan if j.kind == "dp-target"}
    assert sorted(j.params["epsilon"] for j in dp.values()) == [1.0, 8.0]
    for job in plan:
        if job.kind == "attack-setup" and job.params["row"] in A.DP_SGD_ROWS:
            assert set(job.deps) & set(dp), job.name  # attacked after its DP-SGD target is trained
    from ssdlib.grid.plan import unplanned
    assert unplanned(["baselines_mirror", "baselines_brep"]) == []


def test_every_page_that_computes_cached_work_has_a_planner():
    """The analyses' planners: Figure 1 and Table 5 need their targets (and the prior); Figure 3 plans BREP over
    the T grid and Mirror over the eps grid (both budgets) with the undefended row per attack seed; the adaptive page
    plans Mirror behind the averaging attacker only when it runs (``mirror_classes``), the undefended row first."""
    from ssdlib.experiments import ablations as AB
    from ssdlib.grid.plan import unplanned
    assert unplanned() == []
    assert G.plan_notebook("tsne", "cpu").counts() == {"backbone": 1, "target": 1, "prior": 1}
    assert {j.params["setting"] for j in G.plan_notebook("table5", "cpu") if j.kind == "target"} == {
        "celeba_ir152", "lfw_ir152", "lfw_vgg16"}
    plan = G.plan_notebook("ablations", "cpu")
    grid = AB.GRIDS["cpu"]
    setups = [j.params for j in plan if j.kind == "attack-setup"]
    points = {(p["attack"], json.dumps(p.get("point"), sort_keys=True)) for p in setups}
    t_grid, e_grid = AB.temperature_grid("lfw_ir152", "cpu"), AB.distortion_grid("lfw_ir152", "cpu")
    assert points == {("brep", "null"), ("mirror", "null"),
                      *{("brep", json.dumps(t, sort_keys=True)) for t in t_grid},
                      *{("mirror", json.dumps(e, sort_keys=True)) for e in e_grid}}
    assert len(setups) == len(grid["seeds"]) * (2 + len(t_grid) + len(e_grid))
    assert plan.counts()["attack-run"] == grid["classes"] * len(setups)
    assert G.plan_notebook("adaptive", "cpu", overrides={"mirror_classes": 0}).counts().get("adaptive-mirror") is None
    plan = G.plan_notebook("adaptive", "cpu", overrides={"mirror_classes": 62, "mirror_ks": [0.01]})
    mirror = [j for j in plan if j.kind == "adaptive-mirror"]
    assert [j.params["spec"] is None for j in mirror] == [True, False, False, False]
    assert all(mirror[0].name in j.deps for j in mirror[1:]) and {j.params["classes"] for j in mirror} == {62}
    frontier = G.plan_notebook("frontier", "cpu")
    assert {j.params["attack"] for j in frontier if j.kind == "attack-setup" and j.params.get("point")} == {
        "mirror", "brep"}


@pytest.mark.slow
def test_ablation_and_adaptive_pages_gather_from_the_grid_without_computing(tmp_path, monkeypatch):
    """The new planners fill exactly the cache entries the pages' calls read: after the grid of a small ablation
    page and a small adaptive page, ``attack_points`` and ``mirror_with_front`` compute nothing the grid fills."""
    from ssdlib.experiments import ablations as AB
    from ssdlib.experiments import adaptive as AD
    from ssdlib.grid.plan import notebook_parameters
    fresh_cache(tmp_path, monkeypatch)
    ab = dict(classes=1, seeds=[0], temperatures=[0.3], epsilons=[1.0])
    ad = dict(mirror_classes=1, ks=[0.01], literal_ks=[], mirror_ks=[0.01], images=4)
    plan = G.plan_notebook("ablations", "smoke", overrides=ab).merge(
        G.plan_notebook("adaptive", "smoke", overrides=ad))
    report = G.run_grid(plan, progress=False)
    written = {(a["kind"], a["key"]) for arts in report.artifacts for a in arts}
    with C.forbid_compute(G.GRID_KINDS), C.recording() as found:
        for attack, points in (("brep", AB.temperature_grid("lfw_ir152", "smoke", [0.3])),
                               ("mirror", AB.distortion_grid("lfw_ir152", "smoke", [1.0]))):
            table, _ = AB.attack_points("lfw_ir152", "smoke", attack, points, classes=1, seeds=[0])
            assert len(table) == 1 + len(points) + 1  # the undefended row, each point, the prior floor
        ctx = AD.adaptive_context("lfw_ir152", "smoke", images=4)
        specs = [v for v in AD.variants([0.01]) if v.randomness != "robust" or v.k == 0.01]
        page = notebook_parameters("adaptive", "smoke")
        summary, _ = AD.mirror_with_front(ctx, specs, "smoke", classes=1, repeats=page["mirror_repeats"],
                                          grey_levels=page["mirror_grey_levels"], progress=False)
    assert len(summary) == 1 + 2 * len(specs)
    read = {(i.kind, i.key) for i in found if i.kind in G.GRID_KINDS}
    assert {k for k, _ in read} >= {"attacks", "adaptive-mirror"}  # (setups are read only when a run computes)
    assert read <= written and all(i.cached for i in found if i.kind in G.GRID_KINDS)


def test_cli_plan_prints_the_jobs(capsys, tmp_path):
    from ssdlib.grid.__main__ import main
    assert main(["plan", "--scale", "smoke", "--only", "prior", "evaluation", "--json", str(tmp_path / "j.json")]) == 0
    out = capsys.readouterr().out
    assert "3 distinct jobs" in out and "evaluation" in out
    assert len(json.loads((tmp_path / "j.json").read_text())) == 3


# --- failures ----------------------------------------------------------------------------------------------------
def bad_jobs():
    base = {"scale": "smoke", "seed": 0, "root": None, "device": None}
    bad = Job("target", {**base, "setting": "no_such_setting", "defense": "none"}, label="bad")
    after = Job("calibration", {**base, "setting": "no_such_setting", "variant": "ssd"}, (bad.name,), label="after")
    return bad, after


def check_failure_report(err: G.GridError, bad: Job, after: Job) -> None:
    text = str(err)
    assert "no_such_setting" in text and "unknown setting" in text and "configuration:" in text
    assert json.dumps({"kind": bad.kind, "params": bad.params}, sort_keys=True) in text
    rows = err.report.set_index("job")
    assert rows.loc[bad.name, "status"] == "error" and rows.loc[after.name, "status"] == "skipped"
    assert bad.name in rows.loc[after.name, "error"]


def test_a_failing_job_names_its_configuration_and_skips_what_needs_it(tmp_path, monkeypatch):
    fresh_cache(tmp_path, monkeypatch)
    bad, after = bad_jobs()
    with pytest.raises(G.GridError) as caught:
        G.run_grid([bad, after], progress=False)
    check_failure_report(caught.value, bad, after)
    with pytest.raises(G.JobError, match="no_such_setting"):
        G.execute(bad)
    report = G.run_grid([bad, after], progress=False, raise_errors=False)
    assert list(report.status) == ["error", "skipped"]


def test_the_journal_keeps_each_finished_job_as_it_finishes(tmp_path, monkeypatch):
    """A grid that is killed keeps the timings of what finished: one JSON line per job, appended as it ends."""
    fresh_cache(tmp_path, monkeypatch)
    bad, after = bad_jobs()
    journal = tmp_path / "report.jsonl"
    report = G.run_grid([bad, after], progress=False, raise_errors=False, journal=journal)
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["job"] for line in lines] == list(report.job)
    assert [line["status"] for line in lines] == ["error", "skipped"]
    assert all("artifacts" not in line and line["finished_s"] >= 0 for line in lines)


def test_unknown_executor_and_thread_setting_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown executor"):
        G.run_grid([], "carrier-pigeon", progress=False)
    monkeypatch.setenv("SSD_GRID_THREADS", "zero")
    with pytest.raises(ValueError, match="SSD_GRID_THREADS"):
        G.job_threads()


# --- a real smoke grid ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The smoke grid (without the evaluator) run in-process into a cache of its own: the reference artifacts."""
    with pytest.MonkeyPatch.context() as mp:
        path = fresh_cache(tmp_path_factory.mktemp("grid-in-process"), mp)
        report = G.run_grid(smoke_plan(evaluator=False), progress=False)
    assert (report.status == "ok").all() and not report.cached.any()
    return path, report


def _distributed():
    pytest.importorskip("distributed", reason="the optional extra ssdlib[grid] is not installed")


def test_local_workers_start_without_dasks_malloc_trim_threshold(monkeypatch):
    """Dask's MALLOC_TRIM_THRESHOLD_=65536 freezes glibc's adaptive thresholds and makes training jobs fault their
    buffers in again at every step (benchmarks/bench_worker_malloc.py): the grid's workers start without it, even
    where an earlier Dask cluster left it in this process's environment; a value the user configured is kept."""
    _distributed()
    import dask
    from ssdlib.grid import executors as E
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what a Nanny leaves in os.environ when it spawns
    client, cluster = G.make_client("processes", workers=1)
    try:
        assert set(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {None}
    finally:
        client.close()
        cluster.close()
    key = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
    with dask.config.set({key: 1 << 20}):
        assert key not in E._cluster_config()


@pytest.mark.slow
def test_the_notebook_gathers_from_the_grid_without_computing(tmp_path, monkeypatch):
    """After the grid, the notebook's own call (attack_table, as the attack pages make it) computes nothing the grid
    fills, and every grid artifact it reads is one the grid's report lists under the same key."""
    from ssdlib.experiments import attacks as A
    fresh_cache(tmp_path, monkeypatch)
    plan = smoke_plan()
    with C.forbid_compute(G.GRID_KINDS), pytest.raises(C.CacheMiss):
        A.attack_prior("smoke", progress=False)  # before the grid: a miss is an error
    report = G.run_grid(plan, progress=False)
    again = G.run_grid(plan, progress=False)
    assert again.cached.all() and again.computed.sum() == 0
    written = {(a["kind"], a["key"]) for arts in report.artifacts for a in arts}
    (gather,) = plan.gathers
    with C.forbid_compute(G.GRID_KINDS), C.recording() as found:
        table, _, _ = getattr(A, gather["call"])(*gather["args"], **gather["kwargs"], progress=False)
    read = {(i.kind, i.key) for i in found if i.kind in G.GRID_KINDS}
    assert read and read <= written and all(i.cached for i in found if i.kind in G.GRID_KINDS)
    assert set(table.row) == {"none", "ssd", "prior", "ceiling"}


@pytest.mark.slow
def test_two_worker_cluster_is_bit_identical_to_in_process(reference, tmp_path, monkeypatch):
    """A 2-worker LocalCluster runs the smoke grid (plus a failing job and one that needs it): the same cache keys
    and bit-identical payloads as in-process; the failure names its configuration and the rest completes."""
    _distributed()
    ref_path, ref_report = reference
    path = fresh_cache(tmp_path, monkeypatch)
    bad, after = bad_jobs()
    plan = G.Plan([*smoke_plan(evaluator=False), bad, after])
    with pytest.raises(G.GridError) as caught:
        G.run_grid(plan, "processes", workers=2, progress=False)
    check_failure_report(caught.value, bad, after)
    report = caught.value.report
    good = report[~report.job.isin([bad.name, after.name])]
    assert (good.status == "ok").all() and good.worker.str.startswith("tcp://").all()
    assert (good.threads == 1).all() and (good.torch == torch.__version__).all()
    assert assert_same_artifacts(ref_path, path) == len(ref_report)
    prior = torch.load(next((path / "priors").glob("*.pt")), weights_only=False)
    assert prior["environment"]["threads"] == 1 and prior["environment"]["device"] == "cpu"


def _executing(dask_worker):
    return [str(ts.key) for ts in dask_worker.state.executing]


@pytest.mark.slow
def test_a_worker_killed_mid_job_loses_nothing(reference, tmp_path, monkeypatch):
    """SIGKILL the worker running the prior's training (the longest job): Dask reruns it elsewhere (resuming from its
    checkpoint), every job completes, no file is torn or left behind, and the results equal in-process ones."""
    _distributed()
    ref_path, _ = reference
    path = fresh_cache(tmp_path, monkeypatch)
    client, cluster = G.make_client("processes", workers=2)
    result = {}
    try:
        runner = threading.Thread(target=lambda: result.update(
            report=G.run_grid(smoke_plan(evaluator=False), client, progress=False, raise_errors=False)))
        runner.start()
        victim, killed, deadline = None, [], time.monotonic() + 180
        while victim is None and time.monotonic() < deadline and runner.is_alive():
            for address, keys in client.run(_executing).items():
                if any(k.startswith(("prior:", "target:")) for k in keys):
                    victim, killed = address, keys
            time.sleep(0.05)
        assert victim is not None, "no worker was seen running the prior or a target"
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        runner.join(timeout=600)
    finally:
        client.close()
        cluster.close()
    report = result["report"]
    assert (report.status == "ok").all(), report[report.status != "ok"].error.tolist()
    rerun = report.set_index("job").loc[killed, "worker"]
    assert not rerun.str.contains(f"pid {pid})", regex=False).any()  # the killed jobs ran again on another process
    assert not [p for p in path.rglob("*") if p.name.endswith(".tmp")]
    assert_same_artifacts(ref_path, path)


def test_estimate_multiplies_planned_steps_by_step_times():
    """The planner's cost: training steps x the measured GPU step for targets, generator steps x the CPU step scaled
    by the CPU/GPU ratio for the prior (step times given, nothing measured)."""
    from ssdlib.experiments.settings import recipe
    from ssdlib.experiments.targets import private_data
    from ssdlib.grid.cost import GPU_MEASUREMENTS, estimate
    from ssdlib.priors.training import PRIOR_RECIPES
    plans = G.plan_book("paper", only=["prior", "targets_lfw_vgg16"])
    steps = {"ir152_train_step": 5.0, "ir152_forward": 1.0, "vgg16_train_step": 1.0, "vgg16_forward": 0.3,
             "decode": 0.5, "gan_step": 10.0}
    est = estimate(plans, "paper", steps=steps).set_index("notebook")
    gpu = {(s["family"], s["defense"]): s["step_ms"] / 1000 for s in json.loads(GPU_MEASUREMENTS.read_text())["steps"]}
    ratio = steps["ir152_train_step"] / gpu[("ir152", "none")]
    assert est.loc["prior", "device_hours"] == pytest.approx(PRIOR_RECIPES["paper"]["steps"] * 10.0 / ratio / 3600)
    n_train = len(private_data("lfw", "paper").train)
    none = recipe("paper", "lfw_vgg16")["epochs"] * -(-n_train // 64) * gpu[("vgg16", "none")] / 3600
    assert est.loc["targets_lfw_vgg16", "device_hours"] > 5 * none  # five defenses and the backbone, each >= none


def test_slurm_job_script_carries_the_cache_threads_and_a_local_numba_cache(monkeypatch):
    pytest.importorskip("dask_jobqueue", reason="the optional extra ssdlib[grid] is not installed")
    import dask
    from ssdlib.grid.executors import _worker_env, jobqueue_cluster
    monkeypatch.setenv("SSD_CACHE_DIR", "/shared/cache")
    config = {"jobqueue.slurm.cores": 8, "jobqueue.slurm.memory": "64GB", "jobqueue.slurm.walltime": "24:00:00",
              "jobqueue.slurm.job-extra-directives": ["--gres=gpu:1"],
              "jobqueue.slurm.worker-extra-args": ["--resources", "GPU=1"],
              "jobqueue.slurm.scheduler-options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
    with dask.config.set(config):  # as if in ~/.config/dask/jobqueue.yaml
        cluster = jobqueue_cluster("slurm", _worker_env(threads=8))
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    assert "export SSD_CACHE_DIR=/shared/cache" in script and "export SSD_GRID_THREADS=8" in script
    assert 'NUMBA_CACHE_DIR="${TMPDIR:-/tmp}' in script and "--gres=gpu:1" in script and "GPU=1" in script
    assert "#SBATCH -t 24:00:00" in script
