"""Utility metrics of a defense: accuracy of its outputs, their L1 change from the undefended outputs, CMI."""
from __future__ import annotations

import torch

from ..information import cmi


def utility_metrics(base_probs: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Test accuracy (%) of ``probs``, mean/max L1 distance to the undefended ``base_probs`` per input, and CMI.

    ``cmi`` conditions on the true labels (the paper's quantity); ``cmi_pred`` on the undefended model's
    predictions, the labels SSD's sampling approximates, which tells the two apart for an inaccurate model.

    >>> base = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    >>> defended = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
    >>> m = utility_metrics(base, defended, torch.tensor([0, 1]))
    >>> m["test_acc"], round(m["avg_l1"], 2), round(m["max_l1"], 2)
    (100.0, 0.4, 0.6)
    """
    if base_probs.shape != probs.shape or probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"expected base_probs and probs [N, C] and labels [N], got {tuple(base_probs.shape)}, "
                         f"{tuple(probs.shape)}, {tuple(labels.shape)}")
    l1 = (probs.double() - base_probs.double()).abs().sum(-1)
    classes = probs.shape[-1]
    return {"test_acc": 100.0 * (probs.argmax(-1) == labels).double().mean().item(),
            "avg_l1": l1.mean().item(), "max_l1": l1.max().item(),
            "cmi": cmi(probs, labels, classes), "cmi_pred": cmi(probs, base_probs.argmax(-1), classes)}
