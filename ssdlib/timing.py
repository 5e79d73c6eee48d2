"""Timing for benchmarks and the book: the fastest (or median) of repeated runs, CUDA-synchronised, and the
memory-traffic floor of a solver. Speed targets are ratios measured within one run, never timed tests."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

__all__ = ["time_call", "memory_floor"]


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


def memory_floor(f: torch.Tensor, q: torch.Tensor, *, repeat: int = 5, out: torch.Tensor | None = None,
                 **timing) -> float:
    """Memory-traffic floor: time of one elementwise pass reading f and q and writing p (torch.add); ``timing``
    goes to :func:`time_call` (stat, min_time)."""
    p = torch.empty_like(f) if out is None else out
    return time_call(torch.add, f, q, repeat=repeat, device=f.device, out=p, **timing)
