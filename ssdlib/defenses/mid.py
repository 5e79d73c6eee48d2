"""MID (Wang et al. 2021): a variational information bottleneck on the penultimate features."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import TrainingDefense


def gaussian_kl(mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(std^2)) || N(0, I)) per row, summed over dimensions: 0.5 sum(mu^2 + std^2 - 2 log std - 1)."""
    return 0.5 * (mu.pow(2) + std.pow(2) - 2 * torch.log(std) - 1).sum(dim=1)


class VIBNet(nn.Module):
    """MID's variational information bottleneck head on a backbone's penultimate features: a linear map to the
    mean and (softplus-parametrised, as in MID's code: std = softplus(s - 5)) std of a k-dim Gaussian, a
    reparameterised sample while training (the mean in eval), and a new linear classifier on it."""

    def __init__(self, backbone: nn.Module, k: int):
        super().__init__()
        if k < 1:
            raise ValueError(f"MID bottleneck size k must be >= 1, got {k}")
        self.backbone, self.k = backbone, k
        self.num_classes, self.feat_dim = backbone.num_classes, k
        self.encoder = nn.Linear(backbone.feat_dim, 2 * k)
        self.classifier = nn.Linear(k, backbone.num_classes)
        backbone.classifier = nn.Identity()  # replaced by the bottleneck head; no dead parameters

    def encode(self, x):
        """Mean and std of the bottleneck distribution for inputs ``x``."""
        stats = self.encoder(self.backbone.forward_features(x))
        mu, s = stats[:, : self.k], stats[:, self.k:]
        return mu, F.softplus(s - 5.0)

    def vib_forward(self, x):
        """``(logits, mu, std)``: logits of a sample (training) or of the mean (eval)."""
        mu, std = self.encode(x)
        z = mu + std * torch.randn_like(std) if self.training else mu
        return self.classifier(z), mu, std

    def forward(self, x):
        return self.vib_forward(x)[0]

    def forward_features(self, x):
        return self.encode(x)[0]

    def forward_hidden(self, x):
        hiddens, _ = self.backbone.forward_hidden(x)
        return hiddens, self.forward(x)


class MID(TrainingDefense):
    """Wang et al. 2021 (AAAI), MID: loss = CE + beta * KL(q(z|x) || N(0, I)), averaged over the batch.
    Defaults: beta = 0.01 and k = feat_dim // 2 (the VIB training code released with BiDO, Defend_MI
    BiDO/engine.py train_vib and model.py VGG16_vib); override per setting."""

    name = "mid"

    def __init__(self, beta: float = 0.01, k: int | None = None):
        if beta < 0:
            raise ValueError(f"MID beta must be >= 0, got {beta}")
        self.beta, self.k = float(beta), k

    def wrap(self, model):
        if isinstance(model, VIBNet):
            return model
        return VIBNet(model, self.k or max(1, model.feat_dim // 2))

    def loss(self, net, x, y, epoch, total_epochs):
        if not isinstance(net, VIBNet):
            raise ValueError("MID.loss needs the VIBNet returned by MID.wrap(model)")
        logits, mu, std = net.vib_forward(x)
        ce = F.cross_entropy(logits, y)
        kl = gaussian_kl(mu, std).mean()
        return ce + self.beta * kl, {"ce": ce.item(), "kl": kl.item()}, logits

    def params(self):
        return {"name": self.name, "beta": self.beta, "k": self.k}
