"""The robust hash of Appendix H (eq. 26): h(x) = sum_i floor(k z_i(x)) over the target's penultimate features z.

SSD seeded by h(x) answers a repeated query, and a slightly perturbed one, with the same draw, which defeats an
attacker who averages repeated answers. ``k`` is the sensitivity: a perturbation keeps h unless it moves some
feature across a multiple of 1/k. ``offsets=True`` (beyond the paper) shifts each feature's grid by a secret
offset in [0, 1) drawn from the defense's key, h(x) = sum_i floor(k z_i(x) + b_i): batch-normalised features
cluster at 0, which is a grid boundary of the literal eq. (26) at every k, so the literal hash cannot be robust
there. The key stays with the defense (:class:`ssdlib.SSD`'s ``hash_key``), never with the model's weights.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import torch
from torch import nn

__all__ = ["RobustHash", "keyed_uniforms"]


def keyed_uniforms(values: torch.Tensor, key: bytes) -> torch.Tensor:
    """Uniforms in [0, 1) (float64, 53 bits) from a keyed BLAKE2b hash of each int64 in ``values`` [N]."""
    ints = values.detach().long().cpu().tolist()
    digests = [hashlib.blake2b(int(v).to_bytes(8, "little", signed=True), key=key, digest_size=8).digest()
               for v in ints]
    return torch.tensor([int.from_bytes(d, "little") >> 11 for d in digests], dtype=torch.float64) / 2.0**53


class RobustHash:
    """``h(x) = sum_i floor(k z_i(x) [+ b_i])`` over the penultimate features of ``features`` (a classifier with
    ``forward_features``, run in eval mode without gradients, or a callable images -> [N, m] features).

    Not an ``nn.Module`` on purpose: a defense holding it does not save the model's weights with its own state.
    """

    def __init__(self, features: nn.Module | Callable[[torch.Tensor], torch.Tensor], k: float, *,
                 offsets: bool = True):
        if not (k > 0) or k == float("inf"):
            raise ValueError(f"the sensitivity k must be a positive finite number, got {k!r}")
        if isinstance(features, nn.Module) and not hasattr(features, "forward_features"):
            raise ValueError(f"{type(features).__name__} has no forward_features (the penultimate features)")
        if not callable(features):
            raise TypeError(f"features must be a classifier or a callable, got {type(features).__name__}")
        self.features, self.k, self.offsets = features, float(k), bool(offsets)
        self._shift: dict[tuple[bytes, int], torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"RobustHash(k={self.k:g}, offsets={self.offsets})"

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """The penultimate features z(x) ``[N, m]`` in float64."""
        with torch.no_grad():
            if isinstance(self.features, nn.Module):
                was_training = self.features.training
                self.features.eval()
                try:
                    z = self.features.forward_features(inputs)
                finally:
                    self.features.train(was_training)
            else:
                z = self.features(inputs)
        if z.dim() != 2 or z.shape[0] != inputs.shape[0]:
            raise ValueError(f"features must be [N, m] for N = {inputs.shape[0]} inputs, got {tuple(z.shape)}")
        return z.detach().double()

    def shift(self, key: bytes, m: int) -> torch.Tensor:
        """The secret per-feature offsets b in [0, 1) drawn from ``key`` (zeros without ``offsets``)."""
        if not self.offsets:
            return torch.zeros(m, dtype=torch.float64)
        if (key, m) not in self._shift:
            seed = int.from_bytes(hashlib.blake2b(b"robust-hash-offsets", key=key, digest_size=8).digest(), "little")
            self._shift[(key, m)] = torch.rand(m, generator=torch.Generator().manual_seed(seed % 2**63),
                                               dtype=torch.float64)
        return self._shift[(key, m)]

    def values(self, z: torch.Tensor, key: bytes) -> torch.Tensor:
        """h for features ``z`` [N, m]: int64 [N]."""
        return torch.floor(self.k * z.cpu() + self.shift(key, z.shape[1])).sum(1).long()

    def __call__(self, inputs: torch.Tensor, key: bytes) -> torch.Tensor:
        """h(x) for each image of ``inputs``: int64 [N]."""
        return self.values(self.embed(inputs), key)
