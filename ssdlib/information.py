"""Information measures in nats: entropy, KL, mutual information, CMI of a classifier's outputs."""
from __future__ import annotations

import numpy as np
import torch

_TINY = 1e-300


def entropy(probs: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """Shannon entropy of each row of ``probs`` in nats (``0 log 0 = 0``); divided by ``log C`` if ``normalized``.

    >>> import torch
    >>> rows = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    >>> entropy(rows)
    tensor([0.6931, 1.3863])
    >>> entropy(rows, normalized=True)
    tensor([0.5000, 1.0000])
    """
    p = probs.double()
    h = (-torch.xlogy(p, p).sum(-1)).clamp_min(0.0)
    if normalized:
        num_classes = p.shape[-1]
        h = h / np.log(num_classes) if num_classes > 1 else torch.zeros_like(h)
    return h.to(probs.dtype) if probs.is_floating_point() else h


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Row-wise KL(p || q) in nats; ``+inf`` where p puts mass on a zero of q.

    >>> import torch
    >>> kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75]))
    tensor(0.1438, dtype=torch.float64)
    >>> kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]))
    tensor(inf, dtype=torch.float64)
    """
    p64, q64 = p.double(), q.double()
    terms = torch.xlogy(p64, p64) - torch.xlogy(p64, q64)
    return terms.sum(-1).clamp_min(0.0)


def _as_joint(joint, ndim: int) -> np.ndarray:
    table = np.asarray(joint.detach().cpu() if isinstance(joint, torch.Tensor) else joint, dtype=np.float64)
    if table.ndim != ndim:
        raise ValueError(f"joint table must have {ndim} dimensions, got shape {table.shape}")
    if not np.all(np.isfinite(table)) or (table < 0).any():
        raise ValueError("joint table must be finite and non-negative")
    total = table.sum()
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"joint table must sum to 1, sums to {total:.6g}")
    return table


def _plogp_ratio(p: np.ndarray, num: np.ndarray, den: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * (np.log(p[mask]) + np.log(num[mask]) - np.log(den[mask] + _TINY))))


def mutual_information(joint) -> float:
    """I(A; B) in nats of a discrete joint table ``joint[a, b]`` that sums to one.

    >>> round(mutual_information([[0.5, 0.0], [0.0, 0.5]]), 4)  # B copies A: log 2
    0.6931
    >>> mutual_information([[0.25, 0.25], [0.25, 0.25]])  # independent
    0.0
    """
    table = _as_joint(joint, 2)
    outer = table.sum(1, keepdims=True) * table.sum(0, keepdims=True)
    return max(_plogp_ratio(table, np.ones_like(table), outer), 0.0)


def conditional_mutual_information(joint) -> float:
    """I(A; B | C) in nats of a discrete joint table ``joint[c, a, b]`` (the condition on the first axis).

    >>> import numpy as np
    >>> copy = np.zeros((2, 2, 2)); copy[:, 0, 0] = copy[:, 1, 1] = 0.25  # B copies A, both independent of C
    >>> round(conditional_mutual_information(copy), 4)
    0.6931
    >>> known = np.zeros((2, 2, 2)); known[0, 0, 0] = known[1, 1, 1] = 0.5  # C already tells A and B
    >>> conditional_mutual_information(known)
    0.0
    """
    table = _as_joint(joint, 3)
    p_c = table.sum((1, 2), keepdims=True)
    p_ca = table.sum(2, keepdims=True)
    p_cb = table.sum(1, keepdims=True)
    num = np.broadcast_to(p_c, table.shape)
    den = p_ca * p_cb
    return max(_plogp_ratio(table, num, den), 0.0)


def class_centroids(probs: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Mean output ``Q_y`` of each class y (rows of a ``[K, C]`` table); NaN rows for absent classes.

    >>> import torch
    >>> class_centroids(torch.tensor([[0.9, 0.1], [0.7, 0.3]]), torch.tensor([0, 0]), num_classes=2)
    tensor([[0.8000, 0.2000],
            [   nan,    nan]], dtype=torch.float64)
    """
    if probs.ndim != 2 or labels.ndim != 1 or labels.shape[0] != probs.shape[0]:
        raise ValueError(f"expected probs [N, C] and labels [N], got {tuple(probs.shape)} and {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0):
        raise ValueError("labels must be non-negative class indices")
    k = int(num_classes if num_classes is not None else (labels.max().item() + 1 if labels.numel() else 0))
    if labels.numel() and labels.max() >= k:
        raise ValueError(f"labels go up to {labels.max().item()} but num_classes is {k}")
    labels = labels.to(probs.device).long()
    sums = torch.zeros(k, probs.shape[1], dtype=torch.float64, device=probs.device)
    sums.index_add_(0, labels, probs.double())
    counts = torch.bincount(labels, minlength=k).double()
    return sums / counts[:, None]


def cmi(probs: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """Empirical CMI I(X; Y_hat | Y) in nats: the mean of KL(f(x_i) || Q_{y_i}) over samples (Yang et al. 2024).

    >>> import torch
    >>> outputs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])
    >>> round(cmi(outputs, torch.tensor([0, 0, 1, 1])), 4)
    0.0283
    >>> cmi(torch.tensor([[0.9, 0.1], [0.9, 0.1]]), torch.tensor([0, 0]))  # one output per class: nothing to learn
    0.0
    """
    centroids = class_centroids(probs, labels, num_classes)
    return float(kl_divergence(probs.double(), centroids[labels.to(probs.device).long()]).mean())
