"""Training-time defenses the paper compares SSD with (MID, BiDO, negative label smoothing, transfer learning).

A defense is a loss and/or a model wrapper used by the one training loop (``ssdlib.training.fit``):
``wrap(model)`` returns the network to train, ``loss(net, x, y, epoch, total_epochs)`` returns
``(loss, logs)``. Defaults come from the defenses' own papers/code where the SSD paper's Table 4 is not
transcribed yet (``ssdlib.paper``); ``DEFAULTS[(family, dataset)]`` may override them per setting.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DEFENSE_NAMES = ("none", "mid", "bido", "ls", "tl")

# Per-setting overrides of the defaults below: {(family, dataset): {defense: {param: value}}}.
# Empty until the SSD paper's Table 4 is transcribed into ssdlib.paper (then fill from there).
DEFAULTS: dict[tuple[str, str], dict[str, dict]] = {}


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


# ----------------------------------------------------------------------------------------------- MID
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


# ---------------------------------------------------------------------------------------------- BiDO
def gaussian_kernel(z: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian kernel exp(-||zi - zj||^2 / (2 sigma^2 d)) on flattened rows; the bandwidth grows with the
    dimension d as in BiDO's released code (Defend_MI, kernelmat with a given sigma)."""
    z = z.flatten(1)
    d2 = torch.cdist(z, z).pow(2)
    return torch.exp(-d2 / (2.0 * sigma**2 * z.shape[1]))


def hsic(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Biased empirical HSIC of two kernel matrices: tr(K H L H) / (m - 1)^2, H = I - 11^T / m."""
    m = k.shape[0]
    if m < 2 or k.shape != (m, m) or l.shape != (m, m):
        raise ValueError(f"HSIC needs two square kernel matrices of the same size >= 2, got {k.shape}, {l.shape}")
    h = torch.eye(m, device=k.device, dtype=k.dtype) - 1.0 / m
    return torch.trace(k @ h @ l @ h) / (m - 1) ** 2


def normalized_hsic(k: torch.Tensor, l: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalised HSIC (the estimator of BiDO's code): tr(Kc (Kc + eps m I)^-1 Lc (Lc + eps m I)^-1), Kc = K H."""
    m = k.shape[0]
    h = torch.eye(m, device=k.device, dtype=k.dtype) - 1.0 / m
    eye = torch.eye(m, device=k.device, dtype=k.dtype)
    kc, lc = k @ h, l @ h
    rk = kc @ torch.linalg.inv(kc + eps * m * eye)
    rl = lc @ torch.linalg.inv(lc + eps * m * eye)
    return (rk * rl.t()).sum()


class BiDO(TrainingDefense):
    """Peng et al. 2022 (KDD), BiDO-HSIC: loss = CE + lambda_x sum_l HSIC(X, Z_l) - lambda_y sum_l HSIC(Y, Z_l)
    over the hidden activations Z_l of ``forward_hidden``. Gaussian kernels (bandwidth ``sigma``) on X and Z,
    a linear kernel on one-hot Y (``y_kernel="linear"``, the default of BiDO's train_HSIC.py) or Gaussian.
    Defaults lambda_x = 0.05, lambda_y = 0.5, sigma = 5 (BiDO README, CelebA/VGG-16 setting).
    ``estimator="nhsic"`` (default) is the normalised HSIC of BiDO's released code, for which those lambdas
    were tuned; ``"hsic"`` is tr(KHLH)/(m-1)^2, which with sigma = 5 on 64x64 inputs is ~1e-5 for X (the
    kernel is nearly constant), so its X term would be inert at these lambdas."""

    name = "bido"

    def __init__(self, lambda_x: float = 0.05, lambda_y: float = 0.5, sigma: float = 5.0,
                 y_kernel: str = "linear", estimator: str = "nhsic"):
        if y_kernel not in ("linear", "gaussian"):
            raise ValueError(f"BiDO y_kernel must be 'linear' or 'gaussian', got {y_kernel!r}")
        if estimator not in ("hsic", "nhsic"):
            raise ValueError(f"BiDO estimator must be 'hsic' or 'nhsic', got {estimator!r}")
        if sigma <= 0:
            raise ValueError(f"BiDO sigma must be > 0, got {sigma}")
        self.lambda_x, self.lambda_y, self.sigma = float(lambda_x), float(lambda_y), float(sigma)
        self.y_kernel, self.estimator = y_kernel, estimator

    def dependence_terms(self, x, hiddens, y, num_classes):
        """Lists of HSIC(X, Z_l) and HSIC(Y, Z_l) over the hidden layers."""
        measure = hsic if self.estimator == "hsic" else normalized_hsic
        kx = gaussian_kernel(x, self.sigma)
        onehot = F.one_hot(y, num_classes).float()
        ky = onehot @ onehot.t() if self.y_kernel == "linear" else gaussian_kernel(onehot, self.sigma)
        hx, hy = [], []
        for z in hiddens:
            kz = gaussian_kernel(z, self.sigma)
            hx.append(measure(kx, kz))
            hy.append(measure(ky, kz))
        return hx, hy

    def loss(self, net, x, y, epoch, total_epochs):
        hiddens, logits = net.forward_hidden(x)
        ce = F.cross_entropy(logits, y)
        hx, hy = self.dependence_terms(x, hiddens, y, logits.shape[1])
        sx, sy = torch.stack(hx).sum(), torch.stack(hy).sum()
        loss = ce + self.lambda_x * sx - self.lambda_y * sy
        return loss, {"ce": ce.item(), "hsic_xz": sx.item(), "hsic_yz": sy.item()}, logits

    def params(self):
        return {"name": self.name, "lambda_x": self.lambda_x, "lambda_y": self.lambda_y, "sigma": self.sigma,
                "y_kernel": self.y_kernel, "estimator": self.estimator}


# ------------------------------------------------------------------------------------- negative LS
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


# ------------------------------------------------------------------------------- transfer learning
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


def _state_digest(state: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


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
        self.digest = _state_digest(self.state)
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


def pretrain_public(family: str, scale: str, public_set, *, config=None, epochs: int | None = None, device=None,
                    cache: bool = True, progress: bool = True) -> nn.Module:
    """Train (or load from the cache) a classifier of ``family``/``scale`` over the public identities (pass
    ``public_set(min_images=3)``-like data), the backbone TL starts from; shared by every setting of that
    family (cached by config and data hash). ``epochs`` overrides the scale's recipe."""
    from .training import TrainConfig, default_config, train_or_load  # late import: training imports us

    if config is None:
        config = default_config(family, scale, public_set.num_classes, **({"epochs": epochs} if epochs else {}))
    elif not isinstance(config, TrainConfig) or config.defense != "none":
        raise ValueError("config must be a TrainConfig without a defense")
    model, _ = train_or_load(config, public_set, None, device=device, cache=cache, progress=progress)
    return model


def build_defense(name: str, **params) -> TrainingDefense:
    """Defense by name: ``none``, ``mid``, ``bido``, ``ls`` (negative label smoothing) or ``tl``."""
    classes = {"none": TrainingDefense, "mid": MID, "bido": BiDO, "ls": NegativeLS, "tl": TransferLearning}
    if name not in classes:
        raise ValueError(f"unknown defense {name!r}; valid: {', '.join(DEFENSE_NAMES)}")
    try:
        return classes[name](**params)
    except TypeError as err:  # an unknown keyword: name the defense and the problem
        raise ValueError(f"bad parameters for defense {name!r}: {err}") from None


def defense_defaults(name: str, family: str, dataset: str) -> dict:
    """Per-setting parameters for ``name`` from ``DEFAULTS`` (empty dict: the class defaults apply)."""
    if name not in DEFENSE_NAMES:
        raise ValueError(f"unknown defense {name!r}; valid: {', '.join(DEFENSE_NAMES)}")
    return dict(DEFAULTS.get((family, dataset), {}).get(name, {}))
