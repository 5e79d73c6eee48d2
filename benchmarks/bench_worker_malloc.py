"""The grid's workers without Dask's ``MALLOC_TRIM_THRESHOLD_=65536``: the same training steps, timed in one run.

Runs steps of the ``cpu`` prior's DCGAN (the grid's longest job; random images, one thread) in a one-worker Dask
``LocalCluster`` started with Dask's own worker environment, then in one started by ``ssdlib.grid.make_client``
(which leaves the variable unset), and prints, per cluster, seconds per step, kernel (system) seconds, minor page
faults, and the ratio of the two times. Example: ``python benchmarks/bench_worker_malloc.py --steps 20``.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def train_steps(steps: int, warmup: int = 2) -> dict:
    """Time ``steps`` generator + discriminator steps of the cpu prior's recipe in this process, one thread."""
    import torch
    import torch.nn.functional as F
    from ssdlib.models.generators import LATENT_DIM, build_discriminator, build_generator
    from ssdlib.priors import PRIOR_RECIPES
    from ssdlib.scales import budget
    torch.set_num_threads(1)
    recipe = budget(PRIOR_RECIPES, "cpu")
    bs = recipe["batch_size"]
    torch.manual_seed(0)
    G, D = build_generator("cpu"), build_discriminator("cpu")
    opt_g, opt_d = torch.optim.Adam(G.parameters(), lr=2e-4), torch.optim.Adam(D.parameters(), lr=2e-4)
    images = torch.randint(0, 256, (2048, 3, 64, 64), dtype=torch.uint8)

    def step():
        real = images[torch.randint(0, len(images), (bs,))].float().div_(255)
        with torch.no_grad():
            fake = G(torch.randn(bs, LATENT_DIM))
        loss_d = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = F.softplus(-D(G(torch.randn(bs, LATENT_DIM)))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    for _ in range(warmup):
        step()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    return {"s_per_step": seconds / steps, "user_s": after.ru_utime - before.ru_utime,
            "sys_s": after.ru_stime - before.ru_stime, "minor_faults": after.ru_minflt - before.ru_minflt,
            "MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_")}


def on_cluster(grid_config: bool, steps: int) -> dict:
    import dask
    from distributed import Client, LocalCluster
    from ssdlib.grid.executors import make_client
    if grid_config:
        client, cluster = make_client("processes", workers=1)
    else:
        with dask.config.set({"distributed.scheduler.worker-ttl": "1 hour"}):
            cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)
    try:
        return client.submit(train_steps, steps, pure=False).result()
    finally:
        client.close()
        cluster.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per cluster")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps must be at least 1, got {args.steps}")
    rows = {"Dask's worker environment": on_cluster(False, args.steps),
            "ssdlib.grid.make_client": on_cluster(True, args.steps)}
    for name, r in rows.items():
        print(f"{name:28s} MALLOC_TRIM_THRESHOLD_={r['MALLOC_TRIM_THRESHOLD_']!s:6s} {r['s_per_step']:.3f} s/step, "
              f"user {r['user_s']:.1f} s, kernel {r['sys_s']:.1f} s, {r['minor_faults']:,} minor page faults")
    dask_row, grid_row = rows.values()
    print(f"ratio (Dask's environment / the grid's): {dask_row['s_per_step'] / grid_row['s_per_step']:.2f}x time per "
          f"step, {dask_row['minor_faults'] / max(grid_row['minor_faults'], 1):.0f}x page faults")
    return 0


if __name__ == "__main__":
    sys.exit(main())
