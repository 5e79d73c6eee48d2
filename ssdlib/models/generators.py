"""DCGAN-style image prior of the GMI / KED-MI lineage: latent z in R^100 -> 64x64 RGB faces in [0, 1].

The generator is GMI's (Zhang et al., CVPR 2020; also the ``SimpleGenerator64`` of the Model-Inversion-Attack-
ToolBox): a linear layer to a 4x4 map of ``8 * dim`` channels, then four 5x5 stride-2 transposed convolutions
(batch norm + ReLU between them). The discriminator is GMI's WGAN-GP critic: 5x5 stride-2 convolutions with
instance norm and LeakyReLU(0.2), ending in one 4x4 convolution to a scalar. For the non-saturating DCGAN loss of
the small scales the critic uses batch norm instead (``norm="batch"``), as Radford et al.'s DCGAN does; WGAN-GP's
per-sample gradient penalty rules batch norm out, hence instance norm at paper scale. Both take and give images in
[0, 1] (the generator maps its tanh output to [0, 1]; the critic maps its input to [-1, 1]), the project's convention.

Sizes per scale (``dim`` = base channels): ``paper`` 64 as in GMI; ``cpu`` 24, the widest whose training fits the
prior notebook's CPU budget (a 32-channel step costs about four times a 24-channel one; the prior chapter reports
the measured training time); ``smoke`` 4, for tests only.
"""
from __future__ import annotations

import torch
from torch import nn

from ..scales import check_scale

__all__ = ["LATENT_DIM", "IMAGE_SIZE", "ARCHITECTURES", "Generator", "Discriminator", "build_generator",
           "build_discriminator"]

LATENT_DIM = 100
IMAGE_SIZE = 64

#: scale -> ``dim`` (base channel count of both networks) and the critic's ``norm``.
ARCHITECTURES: dict[str, dict] = {
    "paper": dict(dim=64, norm="instance"),
    "cpu": dict(dim=24, norm="batch"),
    "smoke": dict(dim=4, norm="batch"),
}


def _up(c_in: int, c_out: int) -> nn.Sequential:
    """5x5 stride-2 transposed convolution doubling the side, batch norm, ReLU (GMI's ``dconv_bn_relu``)."""
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 5, 2, padding=2, output_padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


NORMS = ("instance", "batch")


def _down(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    """5x5 stride-2 convolution halving the side, instance norm (no batch statistics: WGAN-GP safe) or batch norm,
    LeakyReLU(0.2)."""
    layer = nn.InstanceNorm2d(c_out, affine=True) if norm == "instance" else nn.BatchNorm2d(c_out)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 5, 2, 2), layer, nn.LeakyReLU(0.2))


class Generator(nn.Module):
    """``G(z)``: latents ``[N, latent_dim]`` -> images ``[N, 3, 64, 64]`` in [0, 1]."""

    def __init__(self, latent_dim: int = LATENT_DIM, dim: int = 64):
        super().__init__()
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.latent_dim, self.dim = latent_dim, dim
        self.project = nn.Sequential(nn.Linear(latent_dim, dim * 8 * 16, bias=False), nn.BatchNorm1d(dim * 8 * 16),
                                     nn.ReLU())
        self.body = nn.Sequential(_up(dim * 8, dim * 4), _up(dim * 4, dim * 2), _up(dim * 2, dim),
                                  nn.ConvTranspose2d(dim, 3, 5, 2, padding=2, output_padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latents must have shape [N, {self.latent_dim}], got {tuple(z.shape)}")
        x = self.project(z).view(len(z), self.dim * 8, 4, 4)
        return self.body(x).add(1).mul(0.5)


class Discriminator(nn.Module):
    """Critic ``D(x)``: images ``[N, 3, 64, 64]`` in [0, 1] -> one real-vs-fake score each, ``[N]``."""

    def __init__(self, dim: int = 64, norm: str = "instance"):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.dim, self.norm = dim, norm
        self.body = nn.Sequential(nn.Conv2d(3, dim, 5, 2, 2), nn.LeakyReLU(0.2), _down(dim, dim * 2, norm),
                                  _down(dim * 2, dim * 4, norm), _down(dim * 4, dim * 8, norm),
                                  nn.Conv2d(dim * 8, 1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"images must have shape [N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}], got {tuple(x.shape)}")
        return self.body(x * 2 - 1).flatten()


def build_generator(scale: str, latent_dim: int = LATENT_DIM) -> Generator:
    """The generator of ``scale`` (:data:`ARCHITECTURES`)."""
    return Generator(latent_dim, dim=ARCHITECTURES[check_scale(scale)]["dim"])


def build_discriminator(scale: str) -> Discriminator:
    """The discriminator of ``scale`` (:data:`ARCHITECTURES`)."""
    return Discriminator(**ARCHITECTURES[check_scale(scale)])
