"""``run_grid``: run a plan's jobs in-process (the default) or on Dask distributed, and report every job.

Executors: ``"local"`` (in-process, in plan order; needs no Dask), ``"processes"`` (a fixed ``LocalCluster`` of
single-threaded worker processes), ``"cuda"`` (``dask_cuda.LocalCUDACluster``: one worker per GPU), ``"slurm"`` /
``"pbs"`` (``dask_jobqueue``, configured from Dask's configuration file, a fixed number of jobs), a scheduler
address (``"tcp://host:8786"``) or a ``distributed.Client``. Clusters are fixed-size: adaptive scaling sizes itself
from task durations it has not seen yet and mis-sizes hour-long jobs. Jobs on a CUDA device ask for one ``GPU``
worker resource when the workers advertise one, so that one job runs per GPU.

A worker that dies mid-job leaves no torn file (``ssdlib.cache.atomic_save``) and Dask reruns its job on another
worker (training and the prior resume from their partial checkpoints). A failing job does not stop the others;
the jobs that need it are skipped, and :class:`GridError` is raised at the end with every failure's configuration
(``raise_errors=False`` returns the report instead).
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
import time
from typing import Iterable

import pandas as pd
from tqdm.auto import tqdm

from .jobs import THREADS_ENV, Job, job_threads, run_job
from .plan import Plan

__all__ = ["run_grid", "GridError", "EXECUTORS", "make_client", "jobqueue_cluster", "priorities", "REPORT_COLUMNS"]

EXECUTORS = ("local", "processes", "cuda", "slurm", "pbs")
REPORT_COLUMNS = ["job", "kind", "label", "status", "cached", "computed", "seconds", "worker", "threads", "torch",
                  "device", "error", "artifacts"]
#: Dask settings for the clusters this module starts, unless the user's Dask configuration sets them: a worker's
#: heartbeat may come late while a long job holds the interpreter, so the scheduler waits longer before it drops a
#: worker (``worker-ttl``), and worker lifetimes stay unbounded (jobs run for hours; the jobqueue walltime bounds
#: the jobs instead, see the book's page "Running at paper scale and on a cluster"). Dask starts its worker
#: processes with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand memory back to the OS); setting it also freezes glibc's
#: adaptive thresholds, so every freed tensor buffer goes back to the kernel and is faulted in again at the next
#: step, and a training job spends much of its time in the kernel (``benchmarks/bench_worker_malloc.py`` measures
#: it). ``None`` leaves the variable unset, glibc's defaults as in a plain Python process (workers of a SLURM or PBS
#: cluster read the Dask configuration of their node: set it to null there).
_TRIM = "MALLOC_TRIM_THRESHOLD_"
CLUSTER_CONFIG = {"distributed.scheduler.worker-ttl": "1 hour", f"distributed.nanny.pre-spawn-environ.{_TRIM}": None}
_DASK_DEFAULTS = {"distributed.scheduler.worker-ttl": "5 minutes",
                  f"distributed.nanny.pre-spawn-environ.{_TRIM}": "65536"}


def _cluster_config() -> dict:
    """:data:`CLUSTER_CONFIG` where the user left Dask's defaults. Leaving the trim threshold unset also takes Dask's
    value out of this process's environment, where an earlier Dask cluster put it (a Nanny writes it into
    ``os.environ`` before it spawns a worker, and the worker would inherit it)."""
    config = _defaults_unset(CLUSTER_CONFIG)
    if f"distributed.nanny.pre-spawn-environ.{_TRIM}" in config and os.environ.get(_TRIM) == "65536":
        del os.environ[_TRIM]
    return config


class GridError(RuntimeError):
    """Some grid jobs failed; the message names each with its configuration, ``report`` holds every job's record."""

    def __init__(self, message: str, report: pd.DataFrame | None = None):
        super().__init__(message)
        self.report = report


def _numba_scratch() -> str:
    """numba's compilation cache on worker-local scratch (not beside the package, which may be a shared read-only
    file system): ``$TMPDIR/ssdlib-numba-<user>``."""
    user = os.environ.get("USER") or (str(os.getuid()) if hasattr(os, "getuid") else "user")
    return os.path.join(tempfile.gettempdir(), f"ssdlib-numba-{user}")


def _worker_env(threads: int) -> dict:
    """Environment of the worker processes this module starts: the shared cache, worker-local numba cache, and the
    same thread count for torch, OpenMP and numba."""
    env = {THREADS_ENV: str(threads), "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads),
           "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR") or _numba_scratch()}
    for key in ("SSD_CACHE_DIR", "SSD_DATA_ROOT", "XDG_CACHE_HOME"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def _require_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError as err:
        raise ImportError("running the grid on Dask needs the optional extra: pip install 'ssdlib[grid]' "
                          "(dask, distributed, dask-jobqueue; dask-cuda for the 'cuda' executor)") from err


def make_client(executor, *, workers: int | None = None, threads: int = 1):
    """``(client, cluster or None)`` for ``executor`` (see the module's docstring); the caller closes both."""
    _require_distributed()
    import dask
    from distributed import Client
    if isinstance(executor, Client):
        return executor, None
    env = _worker_env(threads)
    if executor == "processes":
        from distributed import LocalCluster
        n = workers or max(1, (os.cpu_count() or 1) // threads)
        with dask.config.set(_cluster_config()):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, env=env,
                                   dashboard_address=":0")
        return Client(cluster), cluster
    if executor == "cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as err:
            raise ImportError("executor 'cuda' needs dask-cuda (pip install dask-cuda): one worker per GPU") from err
        with dask.config.set(_cluster_config()):
            cluster = LocalCUDACluster(n_workers=workers, threads_per_worker=1, resources={"GPU": 1}, env=env,
                                       dashboard_address=":0")
        return Client(cluster), cluster
    if executor in ("slurm", "pbs"):
        cluster = jobqueue_cluster(executor, env)
        cluster.scale(jobs=workers or 1)  # fixed size: never cluster.adapt() for hour-long jobs
        return Client(cluster), cluster
    if isinstance(executor, str) and ("://" in executor or ":" in executor):
        return Client(executor), None
    raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}, a scheduler address or a "
                     "distributed.Client")


def jobqueue_cluster(executor: str, env: dict):
    """The dask-jobqueue cluster of ``executor`` ("slurm" or "pbs"), configured from Dask's configuration file, its
    job script also exporting ``env`` and a numba cache on the node's scratch (no job submitted yet)."""
    import dask
    try:
        import dask_jobqueue
    except ImportError as err:
        raise ImportError(f"executor {executor!r} needs dask-jobqueue: pip install 'ssdlib[grid]'") from err
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[executor]
    prologue = list(dask.config.get(f"jobqueue.{executor}.job-script-prologue", None) or [])
    prologue += [f"export {k}={shlex.quote(v)}" for k, v in env.items() if k != "NUMBA_CACHE_DIR"]
    if not any("NUMBA_CACHE_DIR" in line for line in prologue):
        prologue.append('export NUMBA_CACHE_DIR="${TMPDIR:-/tmp}/ssdlib-numba-$USER"')
    with dask.config.set(_defaults_unset(CLUSTER_CONFIG)):
        return cls(job_script_prologue=prologue)


def _defaults_unset(config: dict) -> dict:
    """The entries of ``config`` the user's Dask configuration leaves at Dask's default."""
    import dask
    return {k: v for k, v in config.items() if str(dask.config.get(k, None)) == _DASK_DEFAULTS.get(k, str(None))}


def _frame(records: Iterable[dict]) -> pd.DataFrame:
    return pd.DataFrame(list(records), columns=REPORT_COLUMNS)


def _check(report: pd.DataFrame, raise_errors: bool) -> pd.DataFrame:
    bad = report[report.status != "ok"]
    if raise_errors and len(bad):
        own = bad[bad.status == "error"]
        lines = [str(e) for e in own.error]
        message = (f"{len(own)} of {len(report)} grid jobs failed ({(bad.status == 'skipped').sum()} more skipped "
                   "because they needed one):\n" + "\n".join(lines))
        raise GridError(message, report)
    return report


def _jobs(jobs) -> list[Job]:
    jobs = jobs.jobs if isinstance(jobs, Plan) else list(jobs)
    seen = set()
    for job in jobs:
        missing = [d for d in job.deps if d not in seen]
        if missing:
            raise ValueError(f"job {job.name} needs {missing} before it; pass a Plan or jobs in dependency order")
        seen.add(job.name)
    return jobs


def priorities(jobs: list[Job]) -> dict[str, int]:
    """How many jobs need each job, directly or through others: the grid submits the most needed jobs first and
    gives Dask this as their priority (the prior and the targets before the evaluators), so that no worker idles
    behind a long job submitted late. Dask assigns a task to a worker when it is submitted, so a worker may still
    start a low-priority job it already holds. ``jobs`` are in dependency order.

    >>> a, b = Job("prior", {"n": 1}), Job("evaluator", {"n": 2})
    >>> c = Job("attack-setup", {"n": 3}, deps=(a.name,))
    >>> d = Job("attack-run", {"n": 4}, deps=(c.name,))
    >>> [priorities([a, b, c, d])[j.name] for j in (a, b, c, d)]
    [2, 0, 1, 0]
    """
    needed_by: dict[str, set[int]] = {job.name: set() for job in jobs}
    for index in range(len(jobs) - 1, -1, -1):  # dependents come after their dependencies
        job = jobs[index]
        for dep in job.deps:
            needed_by[dep] |= needed_by[job.name] | {index}
    return {name: len(found) for name, found in needed_by.items()}


class _Journal:
    """Appends each finished job's record, with the wall-clock seconds since the grid started (``finished_s``), as
    one JSON line to ``path`` as it comes in: a grid that is killed keeps the timings of every job that finished
    (its artifacts are in the cache already). No path: nothing is written."""

    def __init__(self, path, start: float):
        self.path, self.start = (None if path is None else os.fspath(path)), start

    def __call__(self, record: dict) -> dict:
        if self.path is not None:
            line = {k: v for k, v in record.items() if k != "artifacts"}
            line["finished_s"] = round(time.perf_counter() - self.start, 1)
            with open(self.path, "a") as f:
                f.write(json.dumps(line, default=str) + "\n")
        return record


def _run_local(jobs: list[Job], threads: int, progress: bool, journal: _Journal) -> list[dict]:
    from .jobs import _attack_parts
    _attack_parts.cache_clear()  # oracles rebuilt from this grid's cache, not from an earlier grid's
    records: dict[str, dict] = {}
    for job in tqdm(jobs, desc="grid (in-process)", unit="job", disable=not progress):
        records[job.name] = journal(run_job(job.to_dict(), *(records[d] for d in job.deps), threads=threads))
    return list(records.values())


def _gpu_resources(client) -> bool:
    """Whether any worker advertises a ``GPU`` resource (every worker, not the first few)."""
    import inspect
    kwargs = {"n_workers": -1} if "n_workers" in inspect.signature(client.scheduler_info).parameters else {}
    workers = client.scheduler_info(**kwargs).get("workers", {})
    return any("GPU" in (w.get("resources") or {}) for w in workers.values())


def _run_dask(jobs: list[Job], client, threads: int, progress: bool, journal: _Journal) -> list[dict]:
    from distributed import as_completed
    if progress:
        print(f"[grid] {len(jobs)} jobs on {client}; dashboard: {client.dashboard_link}", file=sys.stderr,
              flush=True)
    gpus = _gpu_resources(client)
    order = priorities(jobs)
    futures = {}
    # a job outranks every job that needs it, so this order is also a dependency order; submitting the most needed
    # first keeps the first idle workers from taking whatever came first in the plan
    for job in sorted(jobs, key=lambda j: -order[j.name]):
        futures[job.name] = client.submit(
            run_job, job.to_dict(), *(futures[d] for d in job.deps), threads=threads, key=job.name, pure=False,
            resources={"GPU": 1} if gpus and job.gpu else None, priority=order[job.name])
    records = {}
    for future in tqdm(as_completed(list(futures.values())), total=len(futures), desc="grid (dask)", unit="job",
                       disable=not progress):
        if future.status == "error":  # not the job's own failure (run_job never raises): the worker or Dask
            err = future.exception()
            records[future.key] = {"job": future.key, "status": "error", "cached": False, "computed": 0,
                                   "artifacts": [], "seconds": 0.0,
                                   "error": f"grid job {future.key} failed on Dask: {type(err).__name__}: {err}"}
        else:
            records[future.key] = future.result()
        journal(records[future.key])
    return [records[j.name] for j in jobs]


def run_grid(jobs, executor="local", *, workers: int | None = None, threads: int | None = None,
             progress: bool = True, raise_errors: bool = True, journal=None) -> pd.DataFrame:
    """Run ``jobs`` (a :class:`~ssdlib.grid.plan.Plan`, or :class:`~ssdlib.grid.jobs.Job` s in dependency order) and
    return the report, one row per job in plan order (:data:`REPORT_COLUMNS`).

    ``executor``: ``"local"`` (in-process), ``"processes"``, ``"cuda"``, ``"slurm"``, ``"pbs"``, a scheduler
    address or a ``distributed.Client`` (left open). ``workers``: processes (``processes``), GPUs (``cuda``, default
    all) or batch jobs (``slurm``/``pbs``). ``threads``: torch threads per job on every path (default
    ``$SSD_GRID_THREADS``, else 1); the same setting gives bit-identical results in-process and on a worker.
    ``journal``: a file to which each finished job's record is appended as a JSON line as it finishes (a killed
    grid keeps them). Raises :class:`GridError` naming every failed job's configuration (unless
    ``raise_errors=False``)."""
    jobs = _jobs(jobs)
    threads = job_threads(threads)
    start = time.perf_counter()
    log = _Journal(journal, start)
    if executor == "local":
        records = _run_local(jobs, threads, progress, log)
    else:
        client, cluster = make_client(executor, workers=workers, threads=threads)
        try:
            records = _run_dask(jobs, client, threads, progress, log)
        finally:
            if client is not executor:  # a Client passed in stays open
                client.close()
            if cluster is not None:
                cluster.close()
    report = _frame(records)
    report.attrs["wall_seconds"] = time.perf_counter() - start
    report.attrs["executor"] = executor if isinstance(executor, str) else type(executor).__name__
    return _check(report, raise_errors)
