"""The grid's wall time in-process and on a Dask LocalCluster of 1 and 2 workers, and Dask's overhead per job.

Usage: ``python benchmarks/bench_grid.py [--notebook attack_mirror] [--scale smoke]``. Each executor fills a fresh
cache of its own (decoded faces and dlib embeddings linked from the user's cache, as the tests do) with the jobs
behind the notebook, then runs the same grid again, every job a cache hit: that second wall time divided by the jobs
is the cost of scheduling a job, and its difference to in-process is Dask's overhead per job. Prints ratios measured
in one run (the machine may be shared: compare only numbers of one run).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def fresh_cache(root: Path, name: str) -> Path:
    from ssdlib.cache import cache_root
    user = cache_root()
    path = root / name
    for kind in ("faces", "embeddings"):
        (path / kind).mkdir(parents=True, exist_ok=True)
        if (user / kind).is_dir():
            for f in (user / kind).iterdir():
                if f.is_file() and not f.name.startswith("."):
                    (path / kind / f.name).symlink_to(f.resolve())
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--notebook", default="attack_mirror")
    parser.add_argument("--scale", default="smoke")
    parser.add_argument("--executors", nargs="*", default=["local", "processes:1", "processes:2"])
    args = parser.parse_args(argv)

    from ssdlib import grid as G
    plan = G.plan_notebook(args.notebook, args.scale)
    print(f"{args.notebook} at {args.scale}: {len(plan)} jobs {plan.counts()}; {os.cpu_count()} CPUs", flush=True)
    root = Path(tempfile.mkdtemp(prefix="ssdlib-bench-grid-"))
    results = {}
    try:
        for spec in args.executors:
            executor, _, n = spec.partition(":")
            os.environ["SSD_CACHE_DIR"] = str(fresh_cache(root, spec.replace(":", "-")))
            start = time.perf_counter()
            client = cluster = None
            if executor != "local":  # the cluster's start is timed apart from the grid
                client, cluster = G.make_client(executor, workers=int(n) if n else None)
                client.wait_for_workers(int(n) if n else 1)
            started = time.perf_counter() - start
            try:
                start = time.perf_counter()
                cold = G.run_grid(plan, client or executor, progress=False)
                cold_s = time.perf_counter() - start
                start = time.perf_counter()
                warm = G.run_grid(plan, client or executor, progress=False)
                warm_s = time.perf_counter() - start
            finally:
                if cluster is not None:
                    client.close()
                    cluster.close()
            assert warm.cached.all()
            by_kind = cold.groupby("kind", sort=False).seconds.sum().round(1).to_dict()
            workers = int(n) if n else 1
            # what the executor adds to each job: wall time beyond the jobs' own seconds (spread over the workers)
            overhead = (warm_s - warm.seconds.sum() / workers) / len(plan)
            results[spec] = (cold_s, warm_s, overhead)
            print(f"{spec:>12}: start {started:5.1f} s; cold {cold_s:7.1f} s (job seconds by kind {by_kind}); "
                  f"all cached {warm_s:6.1f} s = {1000 * warm_s / len(plan):6.1f} ms per job, of which "
                  f"{1000 * overhead:5.1f} ms outside the jobs", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if "processes:1" in results and "processes:2" in results:
        print(f"cold wall time, 1 worker / 2 workers: {results['processes:1'][0] / results['processes:2'][0]:.2f}")
    if "local" in results and "processes:1" in results:
        (lc, lw, lo), (pc, pw, po) = results["local"], results["processes:1"]
        print(f"cold wall time, 1 Dask worker / in-process: {pc / lc:.2f}")
        print(f"per-job overhead outside the jobs (cached grid): Dask, 1 worker {1000 * po:.1f} ms, in-process "
              f"{1000 * lo:.1f} ms; cached grid per job, 1 worker / in-process: {pw / lw:.2f} (the cluster's start "
              "is not included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
