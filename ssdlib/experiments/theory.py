"""The theory chapter's numerical checks: Proposition 1 on random joint laws, and SSD's geometry on the 2-simplex."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..information import conditional_mutual_information, entropy, kl_divergence, mutual_information
from ..solver import waterfill


def random_joint(rng: np.random.Generator, max_alphabet: int, *, markov: bool = True,
                 concentration: float = 0.5) -> np.ndarray:
    """A random joint table p[y, x, yhat]; Markov (Y - X - Yhat) when ``markov``, else Yhat depends on (y, x)."""
    ny, nx, nh = rng.integers(2, max_alphabet + 1, size=3)
    p_y = rng.dirichlet(np.full(ny, concentration))
    p_x_y = rng.dirichlet(np.full(nx, concentration), size=ny)  # [y, x]
    if markov:
        p_h = np.broadcast_to(rng.dirichlet(np.full(nh, concentration), size=nx), (ny, nx, nh))
    else:
        p_h = rng.dirichlet(np.full(nh, concentration), size=(ny, nx))
    return p_y[:, None, None] * p_x_y[:, :, None] * p_h


def proposition1_trials(n_trials: int, max_alphabet: int = 12, *, seed: int = 0) -> pd.DataFrame:
    """For Markov and non-Markov random joints: I(X;Yhat|Y) from its definition, I(X;Yhat), I(Y;Yhat) and the gap
    |I(X;Yhat|Y) - (I(X;Yhat) - I(Y;Yhat))|, which Proposition 1 says is 0 exactly for the Markov ones."""
    if n_trials < 1 or max_alphabet < 2:
        raise ValueError(f"need n_trials >= 1 and max_alphabet >= 2, got {n_trials}, {max_alphabet}")
    rng = np.random.default_rng(seed)
    rows = []
    for trial in range(n_trials):
        for markov in (True, False):
            joint = random_joint(rng, max_alphabet, markov=markov)
            i_xh = mutual_information(joint.sum(axis=0))  # table [x, yhat]
            i_yh = mutual_information(joint.sum(axis=1))  # table [y, yhat]
            c = conditional_mutual_information(joint)     # table [y, x, yhat], the condition first
            rows.append({"trial": trial, "markov": markov, "alphabets": joint.shape, "I(X;Yh|Y)": c,
                         "I(X;Yh)": i_xh, "I(Y;Yh)": i_yh, "I(X;Yh) - I(Y;Yh)": i_xh - i_yh,
                         "gap": abs(c - (i_xh - i_yh))})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- the simplex
VERTICES = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])


def to_xy(p) -> np.ndarray:
    """Barycentric points of the 2-simplex ``[..., 3]`` to the plane of an equilateral triangle."""
    return np.asarray(p, dtype=float) @ VERTICES


def ball_in_simplex(f, r: float) -> np.ndarray:
    """Corners (barycentric, in order) of {p in the simplex : ||p - f||_1 <= r} for three classes: the hexagon
    f + r/2 (e_i - e_j) clipped to p >= 0 (Sutherland-Hodgman against each face)."""
    f = np.asarray(f, dtype=float)
    e = np.eye(3)
    hexagon = [f + r / 2 * (e[i] - e[j]) for i, j in [(0, 1), (0, 2), (1, 2), (1, 0), (2, 0), (2, 1)]]
    centre = to_xy(f)
    hexagon.sort(key=lambda p: math.atan2(*(to_xy(p) - centre)[::-1]))
    poly = hexagon
    for k in range(3):
        out = []
        for a, b in zip(poly, poly[1:] + poly[:1]):
            if a[k] >= 0:
                out.append(a)
            if (a[k] >= 0) != (b[k] >= 0):
                out.append(a + (b - a) * (a[k] / (a[k] - b[k])))
        poly = out
    return np.array(poly)


def ssd_step(f: torch.Tensor, q_table: torch.Tensor, T: float, eps: float, *, normalized: bool = True) -> dict:
    """Everything one SSD step does to one prediction ``f`` [C]: the budget r = eps H(f), the sampling law
    softmax(f / T), and for each class y the projection p^y, its KL to q^y and its L1 change."""
    f = f.double()
    q_table = q_table.double()
    C = f.shape[-1]
    r = float(eps * entropy(f[None], normalized=normalized)[0])
    law = torch.softmax(f / T, -1) if T > 0 else torch.nn.functional.one_hot(f.argmax(), C).double()
    p = waterfill(f.expand(C, C).contiguous(), q_table, torch.full((C,), r, dtype=torch.float64))
    return {"r": r, "law": law.numpy(), "p": p.numpy(),
            "kl": kl_divergence(p, q_table).numpy(), "kl_f": kl_divergence(f.expand(C, C), q_table).numpy(),
            "l1": (p - f).abs().sum(-1).numpy()}


def simplex_grid(f: torch.Tensor, q_table: torch.Tensor, temperatures, epsilons, *,
                 normalized: bool = True) -> pd.DataFrame:
    """One row per (T, eps, y): sampling probability, p^y, KL(p^y || q^y) and ||p^y - f||_1 (checked <= r)."""
    rows = []
    for T in temperatures:
        for eps in epsilons:
            step = ssd_step(f, q_table, T, eps, normalized=normalized)
            if (step["l1"] > step["r"] + 1e-9).any():
                raise AssertionError("water-filling left the L1 ball")
            for y in range(len(step["law"])):
                rows.append({"T": T, "eps": eps, "r": step["r"], "y": y, "P(y)": step["law"][y],
                             "p": np.round(step["p"][y], 4), "KL(p||q)": step["kl"][y],
                             "KL(f||q)": step["kl_f"][y], "L1(p,f)": step["l1"][y]})
    return pd.DataFrame(rows)


def class_cloud(q_table: torch.Tensor, n_per_class: int = 40, *, spread: float = 12.0, seed: int = 0):
    """A small cloud of three-class predictions: for each class y, Dirichlet draws around q^y (concentration
    ``spread``); returns (probs [N, C] float64, labels [N])."""
    gen = torch.Generator().manual_seed(seed)
    C = q_table.shape[0]
    probs, labels = [], []
    for y in range(C):
        alpha = (spread * q_table[y].double()).clamp_min(1e-3)
        gam = torch._standard_gamma(alpha.expand(n_per_class, C).contiguous(), generator=gen)
        probs.append(gam / gam.sum(-1, keepdim=True))
        labels.append(torch.full((n_per_class,), y))
    return torch.cat(probs), torch.cat(labels)
