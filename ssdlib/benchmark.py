"""Timing helpers for the solver benchmark (the paper's Table 6): random classifier-like rows, timers, the sweep.

Speed targets are reported as ratios measured within one run (never as timed tests), see benchmarks/bench_solver.py.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Iterable, Sequence

import pandas as pd
import torch

from .solver import waterfill, waterfill_loop, waterfill_passes, waterfill_sort
from .utils import resolve_device

__all__ = ["time_call", "random_rows", "memory_floor", "table6_sweep", "METHODS", "DEFAULT_CAPS"]


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable, *args, repeat: int = 5, warmup: int = 1, device=None, stat: str = "median",
              min_time: float = 0.0, max_repeat: int = 100, **kwargs) -> float:
    """Wall time in seconds of ``fn(*args, **kwargs)``: the ``stat`` ("median" or "min") over at least ``repeat``
    runs after ``warmup`` calls, repeating (up to ``max_repeat``) until the runs total ``min_time`` seconds.

    "min" is the robust choice for ratios of deterministic code on a shared machine: noise only ever adds time.
    """
    if repeat < 1 or warmup < 0 or max_repeat < repeat:
        raise ValueError(f"need repeat >= 1, warmup >= 0, max_repeat >= repeat; got {repeat}, {warmup}, {max_repeat}")
    if stat not in ("median", "min"):
        raise ValueError(f"stat must be 'median' or 'min', got {stat!r}")
    dev = torch.device(device) if device is not None else None
    for _ in range(warmup):
        fn(*args, **kwargs)
    _sync(dev)
    times: list[float] = []
    while len(times) < repeat or (sum(times) < min_time and len(times) < max_repeat):
        _sync(dev)
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return min(times) if stat == "min" else statistics.median(times)


def random_rows(
    B: int,
    C: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    concentration: float = 4.0,
    n_classes: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier-like rows: f = softmax(concentration * Gaussian logits + a boost on the true class), and q the
    class-mean row of each row's class, itself a mean of such softmax rows (computed on CPU in float64)."""
    if B < 1 or C < 1:
        raise ValueError(f"B and C must be >= 1, got B={B}, C={C}")
    if concentration < 0:
        raise ValueError(f"concentration must be >= 0, got {concentration}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    k = max(1, min(n_classes, C))
    labels = torch.randint(0, k, (B,), generator=g)
    classes = torch.randint(0, C, (k,), generator=g)
    boost = 2.0 * concentration

    dev = resolve_device(device)

    def rows(n, cls):
        z = torch.randn(n, C, generator=g, dtype=torch.float32) * concentration
        z[torch.arange(n), cls] += boost
        return torch.softmax(z.to(torch.float64), -1)

    # class means from 8 samples per class, in float64, then gathered per row
    qk = torch.stack([rows(8, classes[j].repeat(8)).mean(0) for j in range(k)])
    qk = (qk / qk.sum(-1, keepdim=True)).to(dtype)
    f = torch.empty(B, C, dtype=dtype)
    step = max(1, 2**22 // C)  # chunks of rows keep the float64 temporaries small at C = 1e6
    for s in range(0, B, step):
        f[s : s + step] = rows(min(step, B - s), classes[labels[s : s + step]]).to(dtype)
    q = qk[labels]
    return f.to(dev), q.to(dev)


def memory_floor(f: torch.Tensor, q: torch.Tensor, *, repeat: int = 5, out: torch.Tensor | None = None,
                 **timing) -> float:
    """Memory-traffic floor: time of one elementwise pass reading f and q and writing p (torch.add); ``timing``
    goes to :func:`time_call` (stat, min_time)."""
    p = torch.empty_like(f) if out is None else out
    return time_call(torch.add, f, q, repeat=repeat, device=f.device, out=p, **timing)


#: methods the sweep knows: name -> callable(f, q, eps)
METHODS: dict[str, Callable] = {
    "waterfill": lambda f, q, eps: waterfill(f, q, eps, validate=False),
    "waterfill_validated": lambda f, q, eps: waterfill(f, q, eps),
    "waterfill_sort": lambda f, q, eps: waterfill_sort(f, q, eps, validate=False),
    "waterfill_loop": lambda f, q, eps: waterfill_loop(f, q, eps, validate=False),
}

#: per-method caps on B*C (elements) beyond which the cell is skipped (NaN): memory and time on a 2-core laptop.
DEFAULT_CAPS: dict[str, float] = {
    "waterfill": 3e8,
    "waterfill_validated": 3e8,
    "waterfill_sort": 3e7,  # sort + gathers in float64 need ~15 temporaries of B*C*8 bytes
    "waterfill_loop": 3e6,
}


def table6_sweep(
    Cs: Iterable[int],
    B: int = 256,
    methods: Sequence[str] = ("waterfill", "waterfill_sort"),
    device=None,
    *,
    eps: float = 0.5,
    dtype: torch.dtype = torch.float32,
    repeat: int = 3,
    caps: dict[str, float] | None = None,
    seed: int = 0,
    progress: bool = False,
    stat: str = "min",
    min_time: float = 0.5,
) -> pd.DataFrame:
    """Time each method per class count C (ms, batch B); add sort/waterfill, the memory floor and waterfill/floor.

    Every cell is the ``stat`` (default the minimum) of at least ``repeat`` runs, repeated until they total
    ``min_time`` seconds, so fast cells are timed often.  Cells above ``caps[method]`` elements (B*C) are skipped
    and left NaN.  ``passes_max`` is the largest number of O(C) passes waterfill used on a row.
    """
    dev = resolve_device(device)
    caps = {**DEFAULT_CAPS, **(caps or {})}
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {sorted(METHODS)}")
    Cs = [int(c) for c in Cs]
    if not Cs or min(Cs) < 1:
        raise ValueError(f"Cs must be positive class counts, got {Cs}")
    g = torch.Generator().manual_seed(seed)
    records = []
    it = Cs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(Cs, desc="table6")
    for C in it:
        f, q = random_rows(B, C, generator=g, dtype=dtype, device=dev)
        rec: dict[str, float] = {"C": C, "B": B}
        for m in methods:
            if B * C > caps.get(m, math.inf):
                rec[f"{m}_ms"] = math.nan
                continue
            rec[f"{m}_ms"] = 1e3 * time_call(METHODS[m], f, q, eps, repeat=repeat, device=dev, stat=stat,
                                             min_time=min_time)
        rec["floor_ms"] = 1e3 * memory_floor(f, q, repeat=max(repeat, 3), stat=stat, min_time=min_time)
        if "waterfill" in methods and not math.isnan(rec.get("waterfill_ms", math.nan)):
            rec["passes_max"] = int(waterfill_passes(f, q, eps).max())
        del f, q
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    if "waterfill_ms" in df and "waterfill_sort_ms" in df:
        df["sort_over_waterfill"] = df["waterfill_sort_ms"] / df["waterfill_ms"]
    if "waterfill_ms" in df:
        df["waterfill_over_floor"] = df["waterfill_ms"] / df["floor_ms"]
    return df
