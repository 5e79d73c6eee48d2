"""The attacker's image prior as attacks see it: a pluggable :class:`Prior` (a generator + latent sampler).

An attack never sees the generator's architecture: it takes a :class:`Prior`, i.e. any module mapping latents
``[N, d]`` to images ``[N, 3, 64, 64]`` in [0, 1], plus a latent sampler; the search range is the sampler's
mean +- ``width`` standard deviations per coordinate (as Mirror bounds its search space). A paper-scale user may
wrap a StyleGAN2 (sampler = its W-space samples, a module that crops and resizes to 64x64).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..cache import fingerprint
from ..models.generators import LATENT_DIM

__all__ = ["Prior", "Sampler", "save_grid"]

Sampler = Callable[[int, torch.Generator], torch.Tensor]


class Prior:
    """An image prior as attacks see it: ``prior(z)`` decodes latents ``[N, d]`` to images ``[N, 3, H, W]`` in [0, 1].

    ``sampler(n, generator)`` draws ``n`` latents (default: standard normal); :meth:`bounds` is the search range,
    mean +- ``width`` std per coordinate, estimated from ``stats_samples`` latents (seed 0). ``key`` names the
    prior in cached attack runs (a fingerprint of its weights when not given).

    >>> import torch
    >>> gen = torch.nn.Sequential(torch.nn.Linear(8, 3 * 4 * 4), torch.nn.Sigmoid(), torch.nn.Unflatten(1, (3, 4, 4)))
    >>> prior = Prior(gen, latent_dim=8, name="toy", key="toy")
    >>> prior
    Prior(name='toy', latent_dim=8, key='toy')
    >>> prior(prior.sample(2, torch.Generator().manual_seed(0))).shape
    torch.Size([2, 3, 4, 4])
    """

    def __init__(self, generator: nn.Module, latent_dim: int = LATENT_DIM, *, sampler: Sampler | None = None,
                 name: str = "", key: str = "", batch_size: int = 256, stats_samples: int = 10_000):
        if not isinstance(generator, nn.Module):
            raise TypeError(f"the prior's generator must be a torch.nn.Module, got {type(generator).__name__}")
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.generator = generator.eval()
        self.latent_dim = latent_dim
        self.sampler = sampler if sampler is not None else _standard_normal_of(latent_dim)
        self.name = name or type(generator).__name__
        self.batch_size = int(batch_size)
        self._key = key
        self._stats_samples = int(stats_samples)
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None
        param = next(iter(generator.parameters()), None)
        self.device = param.device if param is not None else torch.device("cpu")

    def __repr__(self) -> str:
        return f"Prior(name={self.name!r}, latent_dim={self.latent_dim}, key={self.key!r})"

    @property
    def key(self) -> str:
        """Identity of the prior in cache configurations: the given key, else a fingerprint of its state."""
        if not self._key:
            state = self.generator.state_dict()
            self._key = fingerprint(self.name, self.latent_dim, *[state[k] for k in sorted(state)])
        return self._key

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` latents ``[n, d]`` (CPU float32) from the sampler."""
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        z = self.sampler(int(n), generator)
        if z.shape != (n, self.latent_dim):
            raise ValueError(f"the prior's sampler returned shape {tuple(z.shape)}, expected ({n}, {self.latent_dim})")
        return z.float().cpu()

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-coordinate mean and standard deviation of the sampler (``stats_samples`` draws, seed 0)."""
        if self._stats is None:
            z = self.sample(self._stats_samples, torch.Generator().manual_seed(0))
            self._stats = (z.mean(0), z.std(0, unbiased=False))
        return self._stats

    def bounds(self, width: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The search range ``mean -+ width * std`` per coordinate (Mirror's ``p_std_ce`` bound)."""
        if not width > 0:
            raise ValueError(f"the latent range width must be positive, got {width!r}")
        mean, std = self.stats()
        return mean - width * std, mean + width * std

    def clip(self, z: torch.Tensor, width: float | None) -> torch.Tensor:
        """``z`` clipped into :meth:`bounds` (unchanged when ``width`` is None)."""
        if width is None:
            return z
        lo, hi = self.bounds(width)
        return torch.maximum(torch.minimum(z, hi.to(z)), lo.to(z))

    def decode(self, z: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` in [0, 1] of latents ``z`` (batched; with ``grad`` one differentiable pass)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latents must have shape [N, {self.latent_dim}], got {tuple(z.shape)}")
        self.generator.eval()
        if grad:
            return self._check(self.generator(z.to(self.device)))
        with torch.no_grad():
            out = [self._check(self.generator(z[i:i + self.batch_size].to(self.device))).cpu()
                   for i in range(0, len(z), self.batch_size)]
        return torch.cat(out) if out else torch.empty(0, 3, 64, 64)

    __call__ = decode

    @staticmethod
    def _check(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"the prior's generator must return images [N, 3, H, W], got {tuple(x.shape)}")
        return x.clamp(0, 1)


def _standard_normal_of(dim: int) -> Sampler:
    def sampler(n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, dim, generator=generator)
    return sampler


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int = 8, pad: int = 2) -> Path:
    """Write float images ``[N, 3, H, W]`` in [0, 1] as one PNG grid (``nrow`` per row)."""
    from PIL import Image
    images = images.detach().cpu().clamp(0, 1)
    n, _, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    canvas = torch.ones(3, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i, im in enumerate(images):
        r, c = divmod(i, nrow)
        canvas[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = im
    arr = canvas.mul(255).round().byte().permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path
