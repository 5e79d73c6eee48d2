"""Exact water-filling solver for SSD's projection: argmin KL(p||q) s.t. ||p - f||_1 <= eps, p on the simplex.

The minimiser has the closed form p_i = min(max(f_i, a q_i), b q_i) with levels a <= 1 <= b chosen so that the
raised mass sum_i (a q_i - f_i)_+ and the lowered mass sum_i (f_i - b q_i)_+ both equal eps/2 (KKT conditions).
When ||q - f||_1 <= eps the answer is q itself.  Both levels are roots of convex piecewise-linear functions, so
Newton's method started at 1 moves monotonically and stops exactly once its active set no longer changes
(a Michelot-style active-set iteration, O(C) per pass, a handful of passes in practice).

Zero entries of q.  Entries with q_i = 0 < f_i must be lowered.  Let m0 = sum of f over {q_i = 0}:
* m0 <= eps/2: those entries go to 0 and the remaining decrease mass eps/2 - m0 is spent by the water level b on
  {q_i > 0} (the usual rule, q_i = 0 simply puts the entry always on the decrease side);
* m0 > eps/2: every feasible p has KL(p||q) = inf.  We return the limit delta -> 0 of the solution for the smoothed
  q_delta = (1 - delta) q + delta / C: the entries with q_i > 0 are never lowered, the zero-q entries are capped at a
  common level L with sum_{q_i=0} (f_i - L)_+ = eps/2 (water-filling from the top), and the increase side spends
  eps/2 with the level a as usual.

Numerics: everything is accumulated in float64 whatever the input dtype.  The output is built as
p = f + up - down with sum(up) = sum(down) = t <= eps/2 - margin, computed in float64, never by renormalising p;
``margin`` (see :func:`ssdlib.solver.numerics.margin`) covers the float64 summation error and the final rounding to the output dtype, so
||p - f||_1 <= eps holds for the returned values and p >= 0.  Radii smaller than ``margin`` return f.
Zero-q entries of the feasible case are set to exactly 0, so KL(p||q) stays finite.

Layout: ``inputs`` (checks), ``cpu`` (numba kernel, the CPU default), ``vectorized`` (torch path, the CUDA fallback),
``triton_kernel`` (fused GPU kernel, when Triton runs), ``reference`` (the paper's Algorithms 2 and 3, corrected),
``oracle`` (cvxpy, for tests and teaching); this module dispatches between the kernels.
"""
from __future__ import annotations

import warnings

import torch

from .cpu import HAVE_NUMBA, _waterfill_numba
from .inputs import _check_probs, _prepare
from .numerics import CAPPED, MAX_PASSES, SUM_ATOL, margin
from .reference import waterfill_loop, waterfill_sort
from .vectorized import _waterfill_torch

__all__ = ["waterfill", "waterfill_passes", "check_probabilities", "waterfill_sort", "waterfill_loop",
           "solver_path", "SUM_ATOL", "MAX_PASSES", "PassCapWarning"]

METHODS = ("auto", "numba", "torch", "triton")


class PassCapWarning(RuntimeWarning):
    """Some rows stopped at the pass cap: their p is feasible but may be short of the optimum."""


def check_probabilities(x: torch.Tensor, name: str = "probs") -> None:
    """Raise ValueError naming the problem unless ``x`` holds finite, non-negative rows that sum to 1.

    >>> import torch
    >>> check_probabilities(torch.tensor([[0.5, 0.5]]))  # fine: nothing happens
    >>> check_probabilities(torch.tensor([[2.0, -1.0]]), "logits")
    Traceback (most recent call last):
    ValueError: logits has negative entries; rows must lie on the probability simplex
    """
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be a float32 or float64 tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} must have shape [..., C] with C >= 1, got {tuple(x.shape)}")
    _check_probs(x.reshape(-1, x.shape[-1]), name)


def triton_ready() -> bool:
    """Whether the fused Triton kernel can run on CUDA tensors here (checked once)."""
    global _TRITON_READY
    if _TRITON_READY is None:
        try:
            from .triton_kernel import triton_available
            _TRITON_READY = bool(triton_available()[0]) and torch.cuda.is_available()
        except Exception:  # pragma: no cover - a broken triton installation falls back to the torch path
            _TRITON_READY = False
    return _TRITON_READY


_TRITON_READY: bool | None = None


def solver_path(device) -> str:
    """The kernel :func:`waterfill` uses for tensors on ``device`` ("numba", "torch" or "triton").

    >>> solver_path("cpu") in ("numba", "torch")  # numba when it is installed
    True
    """
    if torch.device(device).type == "cpu":
        return "numba" if HAVE_NUMBA else "torch"
    return "triton" if triton_ready() else "torch"


def _dispatch(f, q, eps, validate, method, on_cap):
    """Validate, pick the backend, return (p, passes) in f's batch shape."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if on_cap not in ("warn", "raise"):
        raise ValueError(f"on_cap must be 'warn' or 'raise', got {on_cap!r}")
    f2, q2, e, shape = _prepare(f, q, eps, validate)
    if method == "auto":
        if f2.device.type == "cpu":
            method = "numba" if HAVE_NUMBA else "torch"
        else:
            method = "triton" if triton_ready() else "torch"
    if method == "triton":
        from .triton_kernel import triton_available, waterfill_triton

        ok, why = triton_available()
        if not ok:
            raise ValueError(f"method='triton' cannot run here: {why}")
        p2, passes = waterfill_triton(f2, q2, e)
        passes = torch.where(passes > MAX_PASSES, CAPPED, passes)  # the kernel counts MAX_PASSES + 1 at the cap
    elif method == "numba":
        if f2.device.type != "cpu":
            raise ValueError("method='numba' needs CPU tensors")
        if not HAVE_NUMBA:
            raise ValueError("method='numba' needs the numba package")
        p2, passes = _waterfill_numba(f2, q2, e.cpu())
    else:
        p2, passes = _waterfill_torch(f2, q2, e)
    if validate:  # the check reads the pass counts: a host sync on CUDA, skipped with validate=False
        capped = int((passes >= CAPPED).sum())
        if capped:
            message = (f"{capped} of {len(passes)} rows stopped at the solver's cap of {MAX_PASSES} passes; their "
                       "output is feasible but may not be optimal")
            if on_cap == "raise":
                raise RuntimeError(message)
            warnings.warn(message, PassCapWarning, stacklevel=3)
    return p2.reshape(shape), passes.reshape(shape[:-1])


def waterfill(f: torch.Tensor, q: torch.Tensor, eps, *, validate: bool = True, method: str = "auto",
              on_cap: str = "warn") -> torch.Tensor:
    """Exact argmin KL(p||q) s.t. ||p - f||_1 <= eps on the simplex, row-wise over ``[..., C]`` tensors.

    ``q`` has f's shape or shape ``[C]`` (shared by all rows); ``eps`` is a float or a tensor broadcastable to
    ``f.shape[:-1]``.  CPU uses a parallel numba kernel, CUDA the fused Triton kernel when Triton runs and a
    vectorised torch loop otherwise (``method`` forces one: 'numba', 'torch' or 'triton'; :func:`solver_path` says
    which ``auto`` picks).  Zero entries of q follow the delta -> 0 limit rule of the module docstring.
    A row that reaches the pass cap triggers a :class:`PassCapWarning` (``on_cap="raise"``: a RuntimeError).
    ``validate=False`` skips the input checks and the cap check in hot loops.  Returns p with f's shape, dtype and
    device.

    >>> import torch
    >>> f = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    >>> q = torch.tensor([0.2, 0.4, 0.4], dtype=torch.float64)
    >>> waterfill(f, q, 0.4)  # 0.2 of mass moves from the top entry to the two others
    tensor([0.5000, 0.2500, 0.2500], dtype=torch.float64)
    >>> waterfill(f, q, 2.0)  # a radius that reaches q returns q
    tensor([0.2000, 0.4000, 0.4000], dtype=torch.float64)
    """
    return _dispatch(f, q, eps, validate, method, on_cap)[0]


def waterfill_passes(f: torch.Tensor, q: torch.Tensor, eps, *, method: str = "auto") -> torch.Tensor:
    """Number of O(C) passes over each row used by :func:`waterfill` (Newton passes plus the final write pass).

    >>> import torch
    >>> f = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.4, 0.4]], dtype=torch.float64)
    >>> passes = waterfill_passes(f, torch.tensor([0.2, 0.4, 0.4], dtype=torch.float64), 0.4)
    >>> passes.shape, bool((passes >= 1).all())
    (torch.Size([2]), True)
    """
    return _dispatch(f, q, eps, True, method, "warn")[1]
