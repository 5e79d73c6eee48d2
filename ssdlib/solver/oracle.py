"""The convex-optimisation oracle for tests and teaching: cvxpy on one small row (never on a hot path)."""
from __future__ import annotations

import warnings

import numpy as np
import torch

# ---- convex-optimisation oracle --------------------------------------------------------------------------------


def waterfill_cvxpy(f, q, eps: float, *, solver: str = "CLARABEL", **solver_opts) -> np.ndarray:
    """Oracle for ONE row (1-D, C <= 50 advised): cvxpy minimises -sum(entr(p)) - log(q) @ p on q's support.

    Entries with q_i = 0 are constrained to p_i = 0, so the KL-infeasible case (mass of f on {q = 0} above eps/2)
    makes the problem infeasible: smooth q first to test the limit rule.  Raises RuntimeError unless optimal.
    Clarabel runs with tightened tolerances by default (1e-10, then 1e-9 and 1e-8 if it reports
    'optimal_inaccurate' at the tighter one) so that p is accurate to about 1e-7; explicit solver_opts are used as given.
    """
    import cvxpy as cp  # test/book extra, imported lazily

    f = np.asarray(f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else f, dtype=np.float64)
    q = np.asarray(q.detach().cpu().numpy() if isinstance(q, torch.Tensor) else q, dtype=np.float64)
    if f.ndim != 1 or q.shape != f.shape:
        raise ValueError(f"waterfill_cvxpy takes one row: f and q 1-D of equal length, got {f.shape}, {q.shape}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    pos = q > 0
    p = cp.Variable(int(pos.sum()))
    fp, fz = f[pos], f[~pos]
    objective = cp.Minimize(-cp.sum(cp.entr(p)) - np.log(q[pos]) @ p)
    constraints = [p >= 0, cp.sum(p) == 1, cp.norm1(p - fp) + float(fz.sum()) <= eps]
    prob = cp.Problem(objective, constraints)
    if solver == "CLARABEL" and not solver_opts:
        ladder = [{key: tol for key in ("tol_gap_abs", "tol_gap_rel", "tol_feas")} for tol in (1e-10, 1e-9, 1e-8)]
    else:
        ladder = [solver_opts]
    for opts in ladder:
        with warnings.catch_warnings():  # cvxpy warns on 'optimal_inaccurate'; we retry or raise instead
            warnings.simplefilter("ignore", UserWarning)
            prob.solve(solver=solver, **opts)
        if prob.status == cp.OPTIMAL:
            break
    else:
        raise RuntimeError(f"cvxpy status {prob.status!r} (expected 'optimal') with {solver} options {ladder[-1]}")
    out = np.zeros_like(f)
    out[pos] = np.maximum(p.value, 0.0)
    return out
