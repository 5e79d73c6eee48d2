"""Interactive figures that work in the static HTML book (no kernel, no CDN): the project's own JavaScript + SVG.

:func:`simplex_explorer` shows one SSD step for three classes: drag f(x) on the simplex (or use the sliders), set
eps and T, and see the L1 ball cut by the simplex, each class's water-filled projection p^y with its sampling
probability, the water levels a and b over the ratios f_i/q^y_i, the KL values, and the CMI of a small labelled
cloud before and after the defense.  The script (:mod:`ssdlib.reporting.simplex_js`) reproduces
``ssdlib.waterfill`` and ``ssdlib.SSD``; the tests check its numbers against them.
"""
from __future__ import annotations

import hashlib
import html
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from .simplex_js import SCRIPT

__all__ = ["explorer_config", "explorer_html", "simplex_explorer", "write_explorer_page"]

_COUNTER = itertools.count()


def _as_array(x, name: str, shape: tuple) -> np.ndarray:
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (three classes), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or (arr < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    sums = arr.sum(-1)
    if np.any(np.abs(sums - 1.0) > 1e-6):
        raise ValueError(f"{name} rows must sum to 1 (got sums {np.round(sums, 6).tolist()})")
    return arr


def explorer_config(q_table, f0, *, eps: float = 0.3, T: float = 0.1, entropy_normalized: bool = True,
                    n_per_class: int = 40, concentration: float = 20.0, seed: int = 0, cloud=None) -> dict:
    """The data the explorer starts from: q table, f, eps, T, entropy unit, and a labelled three-class cloud.

    ``cloud=(points [N, 3], labels [N])`` shows a given cloud (e.g. the static figure's, so both report the same
    CMI); otherwise it draws ``n_per_class`` outputs per class y from Dirichlet(concentration * q^y) (NumPy,
    ``seed``). Its
    ``uniforms`` are the draws ``SSD(q_table, seed=seed)`` makes on its first call
    (``torch.rand(N, dtype=float64)`` from a generator seeded with ``seed``), so the figure's "after" CMI is the
    one of ``ssdlib.SSD`` applied once to the cloud.
    """
    q = _as_array(q_table, "q_table", (3, 3))
    f = _as_array(f0, "f0", (3,))
    if (q <= 0).any():
        raise ValueError("q_table entries must be positive: the explorer draws the ratios f_i / q_i")
    if not (0 < T <= 10):
        raise ValueError(f"T must lie in (0, 10] (the slider's range), got {T}")
    if not (0 <= eps <= 2):
        raise ValueError(f"eps must lie in [0, 2] (the slider's range), got {eps}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    if cloud is not None:
        points = np.asarray(torch.as_tensor(cloud[0], dtype=torch.float64))
        labels = np.asarray(torch.as_tensor(cloud[1])).astype(int)
        if points.ndim != 2 or points.shape[1] != 3 or labels.shape != (len(points),) or len(points) == 0:
            raise ValueError(f"cloud must be (points [N, 3], labels [N]) with N >= 1, got shapes {points.shape} "
                             f"and {labels.shape}")
        if not np.isin(labels, [0, 1, 2]).all():
            raise ValueError("cloud labels must be 0, 1 or 2")
    else:
        rng = np.random.default_rng(seed)
        points = np.concatenate([rng.dirichlet(concentration * q[y], size=n_per_class) for y in range(3)])
        labels = np.repeat(np.arange(3), n_per_class)
    gen = torch.Generator().manual_seed(seed)
    uniforms = torch.rand(len(points), generator=gen, dtype=torch.float64).numpy()
    return {"q": q.tolist(), "f": f.tolist(), "eps": float(eps), "T": float(T), "normalized": bool(entropy_normalized),
            "cloud": {"points": points.tolist(), "labels": labels.tolist(), "uniforms": uniforms.tolist(),
                      "seed": int(seed)}}


def explorer_html(config: dict, element_id: str | None = None) -> str:
    """An HTML fragment (a div and an inline script) that draws the explorer for ``config``."""
    blob = json.dumps(config)  # floats as repr: the script starts from the exact float64 values
    if element_id is None:
        digest = hashlib.sha1(blob.encode()).hexdigest()[:8]
        element_id = f"ssd-explorer-{digest}-{next(_COUNTER)}"
    return (f'<div id="{html.escape(element_id)}" class="ssd-explorer"></div>\n'
            f"<script>\n{SCRIPT}\nSSDExplorer.mount({json.dumps(element_id)}, {blob});\n</script>\n")


def simplex_explorer(q_table, f0, **kwargs):
    """The explorer as ``IPython.display.HTML``: works in Jupyter and, inlined, in the static book page.

    ``q_table`` [3, 3] (rows q^y, positive), ``f0`` [3] the starting f(x); keyword arguments as
    :func:`explorer_config` (``eps``, ``T``, ``entropy_normalized`` for the radius's entropy unit, cloud size).
    """
    from IPython.display import HTML

    return HTML(explorer_html(explorer_config(q_table, f0, **kwargs)))


def write_explorer_page(path, q_table, f0, *, title: str = "SSD simplex explorer", **kwargs) -> Path:
    """Write a standalone HTML page with the explorer (for a browser without the book); returns its path."""
    path = Path(path)
    config = explorer_config(q_table, f0, **kwargs)
    path.write_text("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(title) +
                    "</title></head>\n<body>\n" + explorer_html(config, "ssd-explorer") + "</body></html>\n",
                    encoding="utf-8")
    return path
