"""Negative label smoothing (Struppek et al. 2024): smoothed targets with a negative factor, ramped in."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import TrainingDefense


def smoothed_targets(y: torch.Tensor, num_classes: int, alpha: float) -> torch.Tensor:
    """Label-smoothed targets (1 - alpha) onehot + alpha / K; negative alpha gives negative off-target mass."""
    return (1.0 - alpha) * F.one_hot(y, num_classes).float() + alpha / num_classes


def ls_schedule(epoch: int, total_epochs: int, start: float = 0.5, full: float = 0.75) -> float:
    """Fraction of the final smoothing factor used in ``epoch`` (0-based): 0 before ``start * total``, then a
    linear ramp reaching 1 at ``full * total``. Struppek et al.'s code does this for 100 epochs (0 until epoch
    50, ramp until 75, in its ``ls_scheduler`` next to ``NegLSCrossEntropyLoss``), because training with a
    negative factor from the start is unstable."""
    if total_epochs < 1 or not 0 <= start <= full <= 1:
        raise ValueError(f"bad LS schedule: total_epochs={total_epochs}, start={start}, full={full}")
    s, f = start * total_epochs, full * total_epochs
    if epoch < s:
        return 0.0
    if f <= s:
        return 1.0
    return min(1.0, (epoch + 1 - s) / (f - s))


class NegativeLS(TrainingDefense):
    """Struppek et al. 2024 (ICLR), negative label smoothing: cross-entropy against smoothed targets with a
    negative final alpha (default -0.05, their CelebA/FaceScrub value), ramped in by ``ls_schedule``."""

    name = "ls"

    def __init__(self, alpha: float = -0.05, start: float = 0.5, full: float = 0.75):
        if alpha >= 1:
            raise ValueError(f"label smoothing alpha must be < 1, got {alpha}")
        ls_schedule(0, 1, start, full)  # validates start/full
        self.alpha, self.start, self.full = float(alpha), float(start), float(full)

    def alpha_at(self, epoch: int, total_epochs: int) -> float:
        """Smoothing factor used in ``epoch``."""
        return self.alpha * ls_schedule(epoch, total_epochs, self.start, self.full)

    def loss(self, net, x, y, epoch, total_epochs):
        logits = net(x)
        a = self.alpha_at(epoch, total_epochs)
        loss = -(smoothed_targets(y, logits.shape[1], a) * F.log_softmax(logits, dim=1)).sum(1).mean()
        return loss, {"alpha": a}, logits

    def params(self):
        return {"name": self.name, "alpha": self.alpha, "start": self.start, "full": self.full}
