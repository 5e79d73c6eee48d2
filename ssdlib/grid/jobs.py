"""Job specs of the experiment grid and the one module-level function that runs any of them, in-process or on a worker.

A :class:`Job` is a small JSON-able spec: a kind (``backbone``, ``target``, ``dp-target``, ``prior``,
``evaluator``, ``calibration``, ``ceiling``, ``attack-setup``, ``attack-run``, ``adaptive-mirror``), the parameters of the library call that kind
makes, and the names of the jobs it needs first. :func:`run_job` rebuilds everything on the machine that runs it:
models, priors and oracles come from the shared cache (never a closure or a model over the wire), and it calls
exactly the functions the notebooks call, with the same arguments, so the artifacts it stores are the ones the
notebooks then look up (every artifact it loads or computes is listed in its record, with its cache key).

Every job sets the torch thread count from one setting (:func:`job_threads`) on every path, runs under
``ssdlib.cache.environment(device=...)`` so that each payload it computes records threads, torch version and
device, and returns a record: cached or computed, seconds, worker, error. A failing job's record carries its
configuration; :func:`execute` raises :class:`JobError` with it.
"""
from __future__ import annotations

import functools
import json
import multiprocessing
import os
import socket
import time
import traceback
from dataclasses import dataclass, field

import torch

from .. import cache as C
from ..cache import config_hash
from ..scales import budget
from ..utils import resolve_device

__all__ = ["Job", "JobError", "KINDS", "GRID_KINDS", "THREADS_ENV", "job_threads", "run_job", "execute"]

#: Job kinds, in the order a grid runs them when nothing else orders them.
KINDS = ("backbone", "target", "dp-target", "prior", "evaluator", "calibration", "ceiling", "attack-setup",
         "attack-run", "adaptive-mirror")
#: The cache kinds (``ssdlib.cache`` subfolders) the grid fills: a book rendered after the grid may forbid
#: computing these (``$SSD_CACHE_FORBID``).
GRID_KINDS = ("models", "dp-targets", "priors", "evaluators", "calibration", "ceilings", "attack-setups", "attacks",
              "adaptive-mirror")
#: Environment variable: torch threads per job (default 1: one job per core, and the same on every path).
THREADS_ENV = "SSD_GRID_THREADS"


class JobError(RuntimeError):
    """A grid job failed; the message names the job and its configuration."""


@dataclass(frozen=True)
class Job:
    """One unit of the grid: ``kind``, the parameters of its library call, and the names of the jobs it needs.

    ``name`` (kind, a readable label and a hash of the parameters) is the job's key in a grid and on Dask."""

    kind: str
    params: dict
    deps: tuple[str, ...] = ()
    label: str = field(default="", compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown job kind {self.kind!r}; valid: {', '.join(KINDS)}")
        try:
            json.dumps(self.params, sort_keys=True)
        except TypeError as err:
            raise ValueError(f"job parameters must be JSON-serialisable: {self.params!r}") from err

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.label + ':' if self.label else ''}{config_hash(self.params, 10)}"

    @property
    def gpu(self) -> bool:
        """Whether the job runs on a CUDA device (it then asks a Dask worker for one GPU resource)."""
        return str(self.params.get("device") or "").startswith("cuda")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "params": self.params, "deps": list(self.deps), "label": self.label,
                "name": self.name}

    @classmethod
    def from_dict(cls, d: dict) -> Job:
        return cls(d["kind"], dict(d["params"]), tuple(d.get("deps", ())), d.get("label", ""))


def job_threads(threads: int | None = None) -> int:
    """The torch thread count of every job: ``threads``, else ``$SSD_GRID_THREADS``, else 1."""
    value = threads if threads is not None else os.environ.get(THREADS_ENV, "1")
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"thread count must be a positive integer, got {value!r} (${THREADS_ENV})") from None
    if value < 1:
        raise ValueError(f"thread count must be a positive integer, got {value!r}")
    return value


# --- what each kind does: the notebooks' own calls --------------------------------------------------------------
def _common(p: dict) -> dict:
    return dict(seed=int(p.get("seed", 0)), root=p.get("root"), device=resolve_device(p.get("device")))


def _backbone(p):
    from ..experiments import targets as T
    c = _common(p)
    T.public_backbone(p["family"], p["scale"], seed=c["seed"], root=c["root"], device=c["device"], progress=False)


def _target(p):
    from ..experiments import targets as T
    T.train_target(p["setting"], p["defense"], p["scale"], progress=False, train_seed=p.get("train_seed"),
                   **_common(p))


def _dp_target(p):
    from ..experiments import dpsgd as D
    D.train_dp_target(p["setting"], p["scale"], float(p["epsilon"]), progress=False, **_common(p))


def _prior(p):
    from ..experiments import attacks as A
    c = _common(p)
    A.attack_prior(p["scale"], seed=c["seed"], root=c["root"], device=c["device"], progress=False)


def _in_daemon() -> bool:
    return multiprocessing.current_process().daemon


def _evaluator(p):
    from ..experiments import targets as T
    from ..experiments.evaluators import train_or_load_evaluator
    from ..models.embedding import DlibEmbedder
    c = _common(p)
    data = T.private_data(p["dataset"], p["scale"], seed=c["seed"], root=c["root"])
    # a Dask worker is a daemonic process, which may not start the embedder's process pool: embed in-process there
    # (the embeddings, keyed by the image bytes, are the same)
    embedder = DlibEmbedder(num_workers=1) if _in_daemon() else None
    train_or_load_evaluator(data, embedder=embedder, seed=c["seed"])


def _calibration(p):
    from ..experiments import calibration as K
    K.calibrated_temperature(p["setting"], p["scale"], variant=p["variant"], **_common(p))


def _ceiling(p):
    from ..experiments import attacks as A
    c = _common(p)
    A.white_box_ceiling(p["setting"], p["scale"], list(range(int(p["classes"]))), int(p["per_class"]),
                        seed=c["seed"], root=c["root"], device=c["device"], progress=False)


@functools.lru_cache(maxsize=4)
def _attack_parts(spec: str):
    """(method, oracle factory, target key, defense params, prior) of one (setting, row, attack, overrides),
    rebuilt from the cache and kept for the next job of the same row on this process (as attack_table keeps them
    for all classes of a row)."""
    from ..attacks import build_attack
    from ..experiments import attacks as A
    p = json.loads(spec)
    rows = (*A.ROWS, *A.BASELINE_ROWS, *A.DP_SGD_ROWS)
    if p["row"] not in rows:  # before any model is loaded or trained
        raise ValueError(f"unknown row {p['row']!r}; valid: {', '.join(rows)}")
    c = _common(p)
    protocol = budget(A.PROTOCOL, p["scale"])
    prior, _ = A.attack_prior(p["scale"], seed=c["seed"], root=c["root"], device=c["device"], progress=False)
    inputs = A.attack_inputs(p["attack"], p["scale"], seed=c["seed"], root=c["root"], device=c["device"])
    method = build_attack(p["attack"], prior, scale=p["scale"], top_k=protocol["per_class"], **inputs,
                          **(p.get("overrides") or {}))
    if p.get("point") is not None:  # an ablation point: SSD at (T, eps, budget) behind the undefended target
        from ..experiments.ablations import point_factory
        factory, key, params, _, _ = point_factory(p["setting"], p["scale"], p["point"], mode=method.mode, **c)
    else:
        factory, key, params = A.oracle_factory(p["setting"], p["row"], p["scale"], mode=method.mode, **c)
    return method, factory, key, params, prior


def _parts(p):
    shared = {k: p.get(k) for k in ("setting", "row", "attack", "scale", "seed", "root", "device", "overrides",
                                     "point")}
    return _attack_parts(json.dumps(shared, sort_keys=True))


def _attack_setup(p):
    from ..experiments.attack_runs import attack_setup
    method, factory, key, params, prior = _parts(p)
    attack_setup(method, factory, seed=int(p["attack_seed"]), target_key=key, prior_key=prior.key,
                 setting=p["setting"], defense=p["row"], defense_params=params)


def _attack_run(p):
    from ..experiments.attack_runs import attack_run
    method, factory, key, params, prior = _parts(p)
    attack_run(method, factory, int(p["class"]), seed=int(p["attack_seed"]), target_key=key, prior_key=prior.key,
               setting=p["setting"], defense=p["row"], defense_params=params)


def _adaptive_mirror(p):
    """Mirror behind the averaging attacker against one SSD variant (``spec``; None: the undefended row alone), as
    the adaptive page calls it."""
    from ..experiments import adaptive as AD
    c = _common(p)
    ctx = AD.adaptive_context(p["setting"], p["scale"], variant=p["variant"], images=int(p["images"]), **c)
    specs = [] if p.get("spec") is None else [AD.Variant(**p["spec"])]
    AD.mirror_with_front(ctx, specs, p["scale"], classes=int(p["classes"]), repeats=int(p["repeats"]),
                         grey_levels=int(p["grey_levels"]), root=c["root"], device=c["device"], progress=False)


_RUNNERS = {"backbone": _backbone, "target": _target, "dp-target": _dp_target, "prior": _prior, "evaluator": _evaluator,
            "calibration": _calibration, "ceiling": _ceiling, "attack-setup": _attack_setup,
            "attack-run": _attack_run, "adaptive-mirror": _adaptive_mirror}


# --- running one job ----------------------------------------------------------------------------------------
def _worker_name() -> str:
    try:
        from distributed import get_worker
        return f"{get_worker().address} ({socket.gethostname()}, pid {os.getpid()})"
    except (ImportError, ValueError):
        return f"in-process ({socket.gethostname()}, pid {os.getpid()})"


def _describe(spec: dict) -> str:
    return json.dumps({"kind": spec["kind"], "params": spec["params"]}, sort_keys=True)


def run_job(spec: dict, *deps: dict, threads: int | None = None) -> dict:
    """Run the job ``spec`` (:meth:`Job.to_dict`) and return its record; never raises for the job's own failure.

    ``deps`` are the records of the jobs it needs (on Dask, their futures' results): if one did not succeed this
    job is skipped. The record: ``job``, ``kind``, ``label``, ``status`` ("ok", "error", "skipped"), ``cached``
    (nothing computed), ``computed``/``artifacts`` (every cache artifact loaded or computed, with its key),
    ``seconds``, ``worker``, ``threads``, ``torch``, ``device``, ``error`` (with the configuration)."""
    job = Job.from_dict(spec)
    threads = job_threads(threads)
    record = {"job": job.name, "kind": job.kind, "label": job.label, "status": "ok", "cached": True,
              "computed": 0, "artifacts": [], "seconds": 0.0, "worker": _worker_name(), "threads": threads,
              "torch": str(torch.__version__), "device": str(resolve_device(job.params.get("device"))), "error": None}
    failed = [d["job"] for d in deps if isinstance(d, dict) and d.get("status") != "ok"]
    if failed:
        record.update(status="skipped", cached=False,
                      error=f"not run: needed job(s) {', '.join(failed)} did not succeed")
        return record
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        with C.recording() as found, C.environment(device=record["device"], threads=threads):
            _RUNNERS[job.kind](job.params)
    except Exception as err:  # the record carries it; run_grid raises with every failure's configuration
        record.update(status="error", cached=False,
                      error=f"grid job {job.name} failed: {type(err).__name__}: {err}\nconfiguration: "
                            f"{_describe(spec)}\n{traceback.format_exc(limit=8)}")
        found = []
    finally:
        record["seconds"] = time.perf_counter() - start
        torch.set_num_threads(before)
    record["artifacts"] = [{"kind": i.kind, "key": i.key, "path": str(i.path) if i.path else None,
                            "cached": i.cached, "seconds": i.seconds} for i in found]
    record["computed"] = sum(not i.cached for i in found)
    record["cached"] = record["status"] == "ok" and record["computed"] == 0
    return record


def execute(job: Job | dict, *, threads: int | None = None) -> dict:
    """Run one job in this process; raise :class:`JobError` (naming the job and its configuration) if it fails."""
    record = run_job(job.to_dict() if isinstance(job, Job) else job, threads=threads)
    if record["status"] != "ok":
        raise JobError(record["error"])
    return record
