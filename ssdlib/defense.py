"""The Stealthy Shield Defense (Algorithm 1): sample a label, then project the output towards its class mean."""
from __future__ import annotations

import hashlib
from typing import Literal

import torch
from torch import nn

from .information import class_centroids, entropy
from .solver import waterfill

EntropyUnit = Literal["normalized", "nats"]


def estimate_q_table(probs: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                     missing: Literal["raise", "uniform"] = "raise") -> torch.Tensor:
    """Class-mean prediction table ``q[y] = mean f(x) over x of class y`` (Appendix E), rows on the simplex."""
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probs must be [N, {num_classes}], got {tuple(probs.shape)}")
    table = class_centroids(probs, labels, num_classes)
    absent = torch.isnan(table).any(1)
    if absent.any():
        if missing == "raise":
            ids = absent.nonzero().flatten().tolist()
            raise ValueError(f"no samples for classes {ids[:10]}{'...' if len(ids) > 10 else ''}; "
                             "pass missing='uniform' to fill them with the uniform distribution")
        table[absent] = 1.0 / num_classes
    table = table / table.sum(1, keepdim=True)
    return table.to(probs.dtype)


class SSD:
    """Stealthy Shield Defense: ``p = argmin KL(p || q^y)`` s.t. ``||p - f(x)||_1 <= eps * H(f(x))``, y ~ softmax(f(x)/T).

    ``randomness="generator"`` samples y with a torch Generator (seeded by ``seed``); ``randomness="hash"`` seeds
    each row from a keyed hash of its input (Appendix H), so repeating a query returns the same output.
    ``entropy="normalized"`` divides the entropy by log C (the paper's text); ``"nats"`` is the authors' code.
    """

    def __init__(self, q_table: torch.Tensor, T: float = 1.0, eps: float = 0.5, *,
                 entropy: EntropyUnit = "normalized", randomness: Literal["generator", "hash"] = "generator",
                 seed: int | None = 0, generator: torch.Generator | None = None, hash_key: bytes = b"ssd"):
        if q_table.ndim != 2 or q_table.shape[0] != q_table.shape[1]:
            raise ValueError(f"q_table must be square [C, C], got {tuple(q_table.shape)}")
        if not torch.isfinite(q_table).all() or (q_table < 0).any():
            raise ValueError("q_table must be finite and non-negative")
        if not (T >= 0):
            raise ValueError(f"temperature T must be >= 0, got {T}")
        if not (eps >= 0):
            raise ValueError(f"eps must be >= 0, got {eps}")
        if entropy not in ("normalized", "nats"):
            raise ValueError(f"entropy must be 'normalized' or 'nats', got {entropy!r}")
        if randomness not in ("generator", "hash"):
            raise ValueError(f"randomness must be 'generator' or 'hash', got {randomness!r}")
        self.q_table = q_table
        self.T, self.eps, self.entropy, self.randomness = float(T), float(eps), entropy, randomness
        self.hash_key = hash_key
        self.generator = generator if generator is not None else torch.Generator()
        if generator is None and seed is not None:
            self.generator.manual_seed(seed)

    @classmethod
    def from_predictions(cls, probs: torch.Tensor, labels: torch.Tensor, **kwargs) -> "SSD":
        """Build the defense with q^y estimated from held-out predictions ``probs`` and their true ``labels``."""
        return cls(estimate_q_table(probs, labels, probs.shape[-1]), **kwargs)

    @property
    def num_classes(self) -> int:
        return self.q_table.shape[0]

    def budget(self, probs: torch.Tensor) -> torch.Tensor:
        """Per-row L1 budget ``eps * H(f(x))`` (H normalised or in nats)."""
        return self.eps * entropy(probs.double(), normalized=self.entropy == "normalized")

    def _uniforms(self, n: int, inputs: torch.Tensor | None, probs: torch.Tensor) -> torch.Tensor:
        if self.randomness == "generator":
            return torch.rand(n, generator=self.generator, dtype=torch.float64)
        source = inputs if inputs is not None else probs
        rows = source.detach().reshape(n, -1).float().cpu().contiguous().numpy()
        digests = [hashlib.blake2b(row.tobytes(), key=self.hash_key, digest_size=8).digest() for row in rows]
        return torch.tensor([int.from_bytes(d, "little") >> 11 for d in digests], dtype=torch.float64) / 2.0**53

    def sample_labels(self, probs: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Draw y ~ softmax(f(x) / T) per row (argmax when T = 0) by inverse-CDF sampling."""
        flat = probs.reshape(-1, probs.shape[-1])
        if self.T == 0:
            return flat.argmax(-1).reshape(probs.shape[:-1])
        weights = torch.softmax(flat.double() / self.T, dim=-1)
        cdf = weights.cumsum(-1)
        u = self._uniforms(flat.shape[0], inputs, probs).to(cdf.device) * cdf[:, -1]
        labels = torch.searchsorted(cdf, u[:, None]).squeeze(-1).clamp_max(flat.shape[-1] - 1)
        return labels.reshape(probs.shape[:-1])

    def __call__(self, probs: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Defend a batch of probability vectors ``[..., C]``; ``inputs`` (the queries) seed the hash mode."""
        if probs.shape[-1] != self.num_classes:
            raise ValueError(f"probs have {probs.shape[-1]} classes, q_table has {self.num_classes}")
        labels = self.sample_labels(probs, inputs)
        q = self.q_table.to(device=probs.device, dtype=probs.dtype)[labels]
        return waterfill(probs, q, self.budget(probs).to(probs.device))

    def wrap(self, model: nn.Module) -> "DefendedModel":
        """A module returning ``log`` of the defended probabilities of ``model`` (argmax-compatible with logits)."""
        return DefendedModel(model, self)


class DefendedModel(nn.Module):
    """``model`` behind SSD: outputs log defended probabilities, computed without gradients (a black box)."""

    def __init__(self, model: nn.Module, defense: SSD):
        super().__init__()
        self.model, self.defense = model, defense

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.model(x), dim=-1)
        defended = self.defense(probs, inputs=x)
        return torch.log(defended.clamp_min(torch.finfo(defended.dtype).tiny))
