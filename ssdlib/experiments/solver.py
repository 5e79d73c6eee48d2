"""The solver chapter's experiments: exactness against the oracle and the references, the Table 6 sweep, and the
overhead of SSD on a classifier's forward pass (a Table 5 analogue, one definition for the book and the GPU check)."""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..solver import waterfill, waterfill_loop, waterfill_passes, waterfill_sort
from ..timing import memory_floor, time_call
from ..utils import resolve_device


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


def _kl(x: np.ndarray, q: np.ndarray) -> float:
    mask = x > 0
    return float(np.sum(x[mask] * np.log(x[mask] / q[mask])))


def oracle_comparison(n_instances: int, max_classes: int = 30, *, seed: int = 0,
                      progress: bool = True) -> tuple[pd.DataFrame, int]:
    """Random rows (flat or peaked f and q, exact zeros in f every fifth row, radii from 0 to beyond
    ||q - f||_1) solved by :func:`ssdlib.waterfill` and by the cvxpy oracle; returns (per-instance table, skipped).

    A row is skipped only when cvxpy does not certify its answer as optimal. Columns: C, eps/||q - f||_1, the
    largest entrywise difference, both KL values, their difference (ours - oracle) and ours' L1 change.
    """
    from tqdm.auto import tqdm

    from ..solver.oracle import waterfill_cvxpy

    if n_instances < 1 or max_classes < 3:
        raise ValueError(f"need n_instances >= 1 and max_classes >= 3, got {n_instances}, {max_classes}")
    rng = np.random.default_rng(seed)
    records, skipped = [], 0
    for i in tqdm(range(n_instances), desc="oracle", disable=not progress):
        C = int(rng.integers(3, max_classes + 1))
        f = rng.dirichlet(np.full(C, rng.choice([0.1, 0.5, 2.0])))
        q = rng.dirichlet(np.full(C, rng.choice([0.3, 1.0, 5.0])))
        if i % 5 == 0:  # exact zeros in f
            f[rng.integers(0, C)] = 0.0
            f /= f.sum()
        gap = np.abs(q - f).sum()
        eps = float(rng.uniform(0.0, 1.2) * gap)
        p = waterfill(torch.tensor(f), torch.tensor(q), eps).numpy()
        try:
            p_star = waterfill_cvxpy(f, q, eps)
        except RuntimeError:  # the oracle did not certify optimality: no reference for this row
            skipped += 1
            continue
        records.append({"C": C, "eps_over_gap": eps / gap, "max_abs_err": float(np.abs(p - p_star).max()),
                        "kl_ours": _kl(p, q), "kl_oracle": _kl(p_star, q), "l1": float(np.abs(p - f).sum()),
                        "eps": eps})
    table = pd.DataFrame(records)
    table["kl_excess"] = table.kl_ours - table.kl_oracle
    return table, skipped


def reference_agreement(classes: Sequence[int], batch: int = 256, *, eps: float = 0.5,
                        seed: int = 0) -> pd.DataFrame:
    """Largest difference of :func:`ssdlib.waterfill` from Algorithm 3 (batched sort) and Algorithm 2 (per row)
    in float64 at each class count, with the largest number of passes over a row."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for C in classes:
        f, q = random_rows(batch if C <= 10000 else 16, int(C), generator=gen, dtype=torch.float64)
        p = waterfill(f, q, eps)
        n_loop = min(8, f.shape[0])
        rows.append({"C": int(C), "B": f.shape[0],
                     "max |waterfill - Alg. 3|": (p - waterfill_sort(f, q, eps)).abs().max().item(),
                     "max |waterfill - Alg. 2|": (p[:n_loop] - waterfill_loop(f[:n_loop], q[:n_loop], eps))
                     .abs().max().item(),
                     "passes (max)": int(waterfill_passes(f, q, eps).max())})
    return pd.DataFrame(rows)


def overhead_percent(defense_seconds: float, forward_seconds: float) -> float:
    """The book's one definition of SSD's overhead: the defense's time over the undefended forward pass's, in %
    (for the paper's Table 5, whose defense time is "with" minus "without", this is its percentage)."""
    return 100 * defense_seconds / forward_seconds


def ssd_overhead(model: torch.nn.Module, defense: Callable, images: torch.Tensor, *, repeat: int = 10,
                 warmup: int = 2, timer: Callable[[Callable], float] | None = None) -> dict:
    """Milliseconds of a forward pass with and without the post-processing ``defense(probs, inputs=images)``, and
    the defense alone on the same probabilities; ``overhead_pct`` = defense alone / forward (the direct measurement;
    a difference of two noisy forward timings is less reliable; :func:`overhead_percent`). Times are minima over
    ``repeat`` runs, or what ``timer(fn)`` returns in seconds (Table 5's profiler protocol passes its own)."""
    device = images.device
    model.eval()

    @torch.no_grad()
    def plain():
        return torch.softmax(model(images), -1)

    @torch.no_grad()
    def defended():
        return defense(torch.softmax(model(images), -1), inputs=images)

    probs = plain()
    if timer is None:
        def timer(fn):
            return time_call(fn, repeat=repeat, warmup=warmup, device=device, stat="min")
    t_plain = timer(plain)
    t_defended = timer(defended)
    t_alone = timer(lambda: defense(probs, inputs=images))
    return {"forward_ms": 1e3 * t_plain, "forward+SSD_ms": 1e3 * t_defended, "SSD_alone_ms": 1e3 * t_alone,
            "overhead_%": overhead_percent(t_alone, t_plain), "batch": int(images.shape[0]),
            "classes": int(probs.shape[-1])}
