"""The common base of the training-time defenses: a loss and/or a model wrapper used by the one training loop."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TrainingDefense:
    """No defense: plain cross-entropy on the unwrapped model. Subclasses change ``wrap`` and/or ``loss``."""

    name = "none"

    def wrap(self, model: nn.Module) -> nn.Module:
        """Return the network that is trained and released (default: ``model`` itself)."""
        return model

    def on_train(self, net: nn.Module) -> None:
        """Called after ``net.train()`` each epoch (e.g. to keep frozen batch-norm layers in eval mode)."""

    def loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int, total_epochs: int):
        """Training loss on a batch and a dict of float logs (``logits`` is returned for accuracy)."""
        logits = net(x)
        ce = F.cross_entropy(logits, y)
        return ce, {"ce": ce.item()}, logits

    def params(self) -> dict:
        """JSON-serialisable description, part of the cache key of trained models."""
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params()})"


NoDefense = TrainingDefense
