"""Table 5 (Appendix D): the cost of SSD on a forward pass, by the paper's protocol.

A batch of test samples (512 in the paper; the test split cycled when it is smaller) sits on the device before the
clock starts (no I/O), and the model infers on it ``inferences`` times (100 in the paper) under ``torch.profiler``:
without SSD, with SSD, and SSD alone on the same probabilities. On CPU the time is the profiled wall time of the
inferences' ranges; on CUDA it is the device time of every kernel they launch (the forward pass on the GPU, as the
paper counts). The overhead is the solver chapter's one definition
(:func:`ssdlib.experiments.solver.overhead_percent`, via :func:`~ssdlib.experiments.solver.ssd_overhead`).
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable

import pandas as pd
import torch

from .. import paper
from ..scales import budget
from ..utils import resolve_device
from .settings import setting
from .solver import overhead_percent, ssd_overhead
from .targets import private_data, ssd_of_setting, train_target

__all__ = ["PROTOCOL", "RANGE", "profiled_seconds", "batch_of", "cost_row", "table5", "with_paper"]

#: Batch size and number of inferences per scale (the paper: 512 and 100; fewer inferences at ``cpu`` to fit the
#: page's budget on one core, a small batch at ``smoke``).
PROTOCOL = {"smoke": dict(batch=32, inferences=2), "cpu": dict(batch=512, inferences=20),
            "paper": dict(batch=512, inferences=100)}
#: The name of the profiler range around each inference.
RANGE = "ssdlib.inference"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence the profiler's native log lines (kineto writes them to file descriptor 2, which a notebook shows)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profiled_seconds(fn: Callable, *, inferences: int, device=None, warmup: int = 1) -> float:
    """Seconds that ``inferences`` calls of ``fn`` take under ``torch.profiler`` (after ``warmup`` calls): the
    summed CPU time of their ranges on CPU, the summed device time of their kernels on CUDA."""
    from torch.profiler import ProfilerActivity, profile, record_function

    if inferences < 1:
        raise ValueError(f"inferences must be >= 1, got {inferences}")
    device = torch.device(resolve_device(device))
    for _ in range(warmup):
        fn()
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with _quiet_native_stderr(), profile(activities=activities) as prof:
        for _ in range(inferences):
            with record_function(RANGE):
                fn()
        _sync(device)
    events = prof.key_averages()
    if device.type == "cuda":
        total = sum(getattr(e, "self_device_time_total", 0.0) for e in events if e.key != RANGE)
    else:
        total = sum(e.cpu_time_total for e in events if e.key == RANGE)
    return total / 1e6


def batch_of(images: torch.Tensor, size: int) -> torch.Tensor:
    """The first ``size`` images of ``images``, cycled when there are fewer (the paper's batch is 512)."""
    if len(images) == 0 or size < 1:
        raise ValueError(f"need images and a positive batch size, got {len(images)} images, size {size}")
    reps = -(-size // len(images))
    return images.repeat(reps, *([1] * (images.dim() - 1)))[:size]


def cost_row(name: str, scale: str, *, variant: str = "ssd", batch: int | None = None, inferences: int | None = None,
             seed: int = 0, root=None, device=None) -> dict:
    """Table 5's row of setting ``name``: seconds of ``inferences`` forward passes over a batch of test samples
    without SSD, with SSD (``variant``, seeded by ``seed``) and of SSD alone, and the overhead in %."""
    protocol = budget(PROTOCOL, scale)
    batch, inferences = int(batch or protocol["batch"]), int(inferences or protocol["inferences"])
    device = resolve_device(device)
    data = private_data(setting(name).dataset, scale, seed=seed, root=root)
    model, _ = train_target(name, "none", scale, device=device, seed=seed, root=root, progress=False)
    build, _ = ssd_of_setting(name, variant, model, data.valid, seed=seed, device=device)
    images = batch_of(data.test.float_images(), batch).to(device)
    cost = ssd_overhead(model, build(seed), images,
                        timer=lambda fn: profiled_seconds(fn, inferences=inferences, device=device))
    return {"setting": name, "variant": variant, "device": str(device), "batch": batch, "inferences": inferences,
            "test samples": len(data.test), "classes": cost["classes"],
            "seconds_without": cost["forward_ms"] / 1e3, "seconds_with": cost["forward+SSD_ms"] / 1e3,
            "seconds_ssd": cost["SSD_alone_ms"] / 1e3, "overhead_%": cost["overhead_%"]}


def table5(settings, scale: str, *, variant: str = "ssd", seed: int = 0, root=None, device=None,
           **protocol) -> pd.DataFrame:
    """:func:`cost_row` for each setting."""
    return pd.DataFrame([cost_row(n, scale, variant=variant, seed=seed, root=root, device=device, **protocol)
                         for n in settings])


def with_paper(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the paper's Table 5 beside each setting (submitted version: seconds without and with SSD,
    the printed percentage) and the paper's overhead by our definition (its with-minus-without over without)."""
    t5 = paper.timing("submitted")
    t5 = t5.assign(setting=t5.setting.map(paper.SETTING_FROM_PAPER)).set_index("setting")
    out = table.copy()
    for col in ("seconds_without", "seconds_with", "increase_percent"):
        out[f"paper {col}"] = [t5[col].get(s, float("nan")) for s in out.setting]
    out["paper overhead_%"] = [overhead_percent(w - wo, wo) for w, wo in
                               zip(out["paper seconds_with"], out["paper seconds_without"])]
    return out
