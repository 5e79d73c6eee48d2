"""Transfer learning (Ho et al. 2024, TL-DMI): fine-tune only the later layers of a publicly pretrained model."""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from ..cache import state_fingerprint
from .base import TrainingDefense


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """Conv/linear layers in registration order (= forward order for ssdlib.models), the unit TL counts."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def freeze_first_layers(model: nn.Module, fraction: float = 0.5) -> list[nn.Module]:
    """Freeze the first ``floor(fraction * n)`` of the n conv/linear layers and every normalisation/activation
    module registered before the first layer left trainable; return the frozen modules."""
    if not 0 <= fraction < 1:
        raise ValueError(f"freeze fraction must be in [0, 1), got {fraction}")
    layers = weight_layers(model)
    n_frozen = int(math.floor(fraction * len(layers)))
    frozen: list[nn.Module] = []
    if n_frozen == 0:
        return frozen
    first_trainable = layers[n_frozen]
    for m in model.modules():
        if m is first_trainable:
            break
        if any(True for _ in m.parameters(recurse=False)):
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
            frozen.append(m)
    return frozen


class TransferLearning(TrainingDefense):
    """Ho et al. 2024 (CVPR), TL-DMI: start from a backbone pretrained on public faces, freeze its first
    ``freeze_fraction`` of conv/linear layers (frozen batch-norm layers stay in eval mode) and fine-tune
    the rest with a new classifier on the private data. ``pretrained``: a model, a state dict or a path
    (see ``pretrain_public``)."""

    name = "tl"

    def __init__(self, pretrained: nn.Module | dict | str | os.PathLike | None = None,
                 freeze_fraction: float = 0.5):
        if pretrained is None:
            raise ValueError("TransferLearning needs pretrained weights: pass pretrain_public(...)'s model")
        if isinstance(pretrained, (str, os.PathLike)):
            if not Path(pretrained).is_file():
                raise FileNotFoundError(f"pretrained checkpoint not found: {pretrained}")
            ckpt = torch.load(pretrained, map_location="cpu", weights_only=False)
            pretrained = ckpt.get("state_dict", ckpt)
        if isinstance(pretrained, nn.Module):
            pretrained = pretrained.state_dict()
        if not 0 <= freeze_fraction < 1:
            raise ValueError(f"freeze_fraction must be in [0, 1), got {freeze_fraction}")
        self.state = {k: v for k, v in pretrained.items() if not k.startswith("classifier.")}
        self.freeze_fraction = float(freeze_fraction)
        self.digest = state_fingerprint(self.state)
        self.frozen: list[nn.Module] = []

    def wrap(self, model):
        missing, unexpected = model.load_state_dict(self.state, strict=False)
        if unexpected or any(not k.startswith("classifier.") for k in missing):
            raise ValueError(f"pretrained weights do not fit the model: missing {missing}, unexpected {unexpected}")
        self.frozen = freeze_first_layers(model, self.freeze_fraction)
        return model

    def on_train(self, net):
        for m in self.frozen:
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()

    def params(self):
        return {"name": self.name, "freeze_fraction": self.freeze_fraction, "pretrained": self.digest}
