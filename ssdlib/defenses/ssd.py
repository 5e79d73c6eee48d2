"""The Stealthy Shield Defense (Algorithm 1): sample a label, then project the output towards its class mean.

For a prediction f(x): draw y ~ softmax(f(x) / T) (T divides the probability vector, as in the paper), take q^y
(the class-y mean prediction, estimated beforehand by :func:`estimate_q_table`), and release
p = argmin KL(p || q^y) subject to ||p - f(x)||_1 <= eps * H(f(x)), solved exactly by :func:`ssdlib.waterfill`.
"""
from __future__ import annotations

import hashlib
import secrets
from typing import Literal

import torch
from torch import nn

from ..information import class_centroids, entropy
from ..solver import check_probabilities, solver_path, waterfill
from .robust_hash import RobustHash, keyed_uniforms

EntropyUnit = Literal["normalized", "nats"]
ESTIMATORS = ("mean", "single", "valid_mean", "train_mean")

__all__ = ["SSD", "DefendedModel", "estimate_q_table", "ESTIMATORS"]


def estimate_q_table(probs: torch.Tensor, labels: torch.Tensor, num_classes: int, *, estimator: str = "mean",
                     missing: Literal["raise", "uniform"] = "raise", seed: int = 0) -> torch.Tensor:
    """The table ``q[y]`` of class-y predictions from held-out outputs ``probs`` and their true ``labels``.

    ``estimator="mean"``: the mean prediction of class y (eq. 10; the final version on D_valid, Appendix E's eq. 25
    on D_train, depending on which data you pass). ``"single"``: the prediction of ONE sample of class y, drawn
    with ``seed`` (Algorithm 1 of the submitted version). ``"valid_mean"`` and ``"train_mean"`` are the names
    ``ssdlib.paper.hyperparameters`` gives the mean estimator (the split is whichever ``probs`` you pass), so its
    ``ssd_q_estimator`` can be passed as is. Rows are renormalised onto the simplex in float64.

    >>> import torch
    >>> probs = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    >>> estimate_q_table(probs, torch.tensor([0, 0, 1]), num_classes=2)
    tensor([[0.7000, 0.3000],
            [0.3000, 0.7000]])
    """
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probs must be [N, {num_classes}], got {tuple(probs.shape)}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    check_probabilities(probs, "probs")
    labels = torch.as_tensor(labels).to(probs.device).long()
    if estimator in ("mean", "valid_mean", "train_mean"):
        table = class_centroids(probs, labels, num_classes)
    else:
        table = torch.full((num_classes, num_classes), float("nan"), dtype=torch.float64, device=probs.device)
        gen = torch.Generator().manual_seed(seed)
        for y in range(num_classes):
            rows = (labels == y).nonzero().flatten()
            if len(rows):
                table[y] = probs[rows[int(torch.randint(len(rows), (1,), generator=gen))]].double()
    absent = torch.isnan(table).any(1)
    if absent.any():
        if missing == "raise":
            ids = absent.nonzero().flatten().tolist()
            raise ValueError(f"no samples for classes {ids[:10]}{'...' if len(ids) > 10 else ''}; "
                             "pass missing='uniform' to fill them with the uniform distribution")
        table[absent] = 1.0 / num_classes
    table = table / table.sum(1, keepdim=True)
    return table.to(probs.dtype)


class SSD(nn.Module):
    """Stealthy Shield Defense as a module: ``ssd(probs, inputs=None)`` returns the defended probability vectors.

    ``T`` is required (no silent default): the paper's per-setting values live in ``ssdlib.paper`` and the
    experiment settings. ``eps`` defaults to 1, the submitted paper's value in every setting. ``entropy``:
    ``"normalized"`` divides H by log C (the paper's eq. 12), ``"nats"`` is the released code and final version.
    ``randomness="generator"`` samples y with a torch Generator seeded by ``seed`` (None: a fresh random seed);
    ``randomness="hash"`` seeds each row from a keyed hash of its input (Appendix H), so a repeated query returns the
    same output; ``randomness="robust"`` seeds it from the robust hash of eq. (26) over the target's penultimate
    features (``robust_hash``, a :class:`RobustHash`), so that a slightly perturbed query does too. The hash key is
    a secret drawn at random per instance unless ``hash_key`` is given; it is kept as a buffer of the defense (not
    of the model) so that a saved and reloaded defense answers as before. ``q_table`` is a buffer: it moves with
    ``.to()``.
    ``validate=False`` skips the input checks (each a host synchronisation on CUDA); on CUDA with Triton it also
    selects the fused kernel, so that ``SSD.wrap(model)`` adds as little as possible to a forward pass. Move the
    defense to the model's device (``ssd.to(device)``) so that ``q_table`` is not copied on every call.

    >>> import torch
    >>> valid = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    >>> ssd = SSD.from_predictions(valid, torch.tensor([0, 1, 2]), T=1.0, eps=0.5, seed=0)
    >>> ssd
    SSD(classes=3, T=1.0, eps=0.5, entropy='normalized', randomness='generator')
    >>> probs = torch.tensor([[0.70, 0.20, 0.10], [0.05, 0.05, 0.90]])
    >>> defended = ssd(probs)  # rows on the simplex, each within its L1 radius of the original
    >>> defended.sum(-1)
    tensor([1., 1.])
    >>> bool(((defended - probs).abs().sum(-1) <= ssd.radius(probs) + 1e-6).all())
    True
    """

    def __init__(self, q_table: torch.Tensor, *, T: float, eps: float = 1.0, entropy: EntropyUnit = "normalized",
                 randomness: Literal["generator", "hash", "robust"] = "generator", seed: int | None = None,
                 generator: torch.Generator | None = None, hash_key: bytes | None = None, validate: bool = True,
                 robust_hash: RobustHash | None = None):
        super().__init__()
        if not isinstance(q_table, torch.Tensor) or q_table.ndim != 2 or q_table.shape[0] != q_table.shape[1]:
            raise ValueError(f"q_table must be a square [C, C] tensor, got {tuple(getattr(q_table, 'shape', ()))}")
        check_probabilities(q_table, "q_table")
        if not (T >= 0):
            raise ValueError(f"temperature T must be >= 0, got {T}")
        if not (eps >= 0):
            raise ValueError(f"eps must be >= 0, got {eps}")
        if entropy not in ("normalized", "nats"):
            raise ValueError(f"entropy must be 'normalized' or 'nats', got {entropy!r}")
        if randomness not in ("generator", "hash", "robust"):
            raise ValueError(f"randomness must be 'generator', 'hash' or 'robust', got {randomness!r}")
        if (randomness == "robust") != (robust_hash is not None):
            raise ValueError("randomness='robust' needs robust_hash (a RobustHash), and robust_hash needs it")
        if robust_hash is not None and not isinstance(robust_hash, RobustHash):
            raise ValueError(f"robust_hash must be a RobustHash, got {type(robust_hash).__name__}")
        if hash_key is not None and (not isinstance(hash_key, bytes) or not 1 <= len(hash_key) <= 64):
            raise ValueError("hash_key must be 1 to 64 bytes")
        self.register_buffer("q_table", q_table.detach().clone())
        key = secrets.token_bytes(32) if hash_key is None else hash_key
        self.register_buffer("hash_key", torch.tensor(list(key), dtype=torch.uint8))
        self.T, self.eps, self.entropy, self.randomness = float(T), float(eps), entropy, randomness
        self.validate = bool(validate)
        self.robust_hash = robust_hash  # a plain attribute: the model behind it is not part of this state
        self.generator = generator if generator is not None else torch.Generator()
        if generator is None:
            self.generator.manual_seed(secrets.randbits(63) if seed is None else int(seed))

    @classmethod
    def from_predictions(cls, probs: torch.Tensor, labels: torch.Tensor, *, estimator: str = "mean",
                         missing: Literal["raise", "uniform"] = "raise", estimator_seed: int = 0, **kwargs) -> "SSD":
        """The defense with q^y estimated from held-out predictions ``probs`` and their true ``labels``
        (:func:`estimate_q_table`); every other keyword goes to :class:`SSD`.

        >>> import torch
        >>> valid = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
        >>> SSD.from_predictions(valid, torch.tensor([0, 1]), T=0.5, eps=0.3).q_table
        tensor([[0.9000, 0.1000],
                [0.2000, 0.8000]])
        """
        table = estimate_q_table(probs, labels, probs.shape[-1], estimator=estimator, missing=missing,
                                 seed=estimator_seed)
        return cls(table, **kwargs)

    @property
    def num_classes(self) -> int:
        return self.q_table.shape[0]

    def extra_repr(self) -> str:
        return (f"classes={self.num_classes}, T={self.T}, eps={self.eps}, entropy={self.entropy!r}, "
                f"randomness={self.randomness!r}" + (f", k={self.robust_hash.k:g}" if self.robust_hash else ""))

    def radius(self, probs: torch.Tensor) -> torch.Tensor:
        """Per-row L1 radius ``eps * H(f(x))`` of the projection, in float64 (H normalised or in nats).

        >>> import torch
        >>> SSD(torch.eye(3), T=1.0, eps=0.5).radius(torch.full((1, 3), 1 / 3))  # uniform: H = 1, normalised
        tensor([0.5000], dtype=torch.float64)
        """
        return self.eps * entropy(probs.double(), normalized=self.entropy == "normalized")

    def _uniforms(self, n: int, inputs: torch.Tensor | None, probs: torch.Tensor) -> torch.Tensor:
        if self.randomness == "generator":
            return torch.rand(n, generator=self.generator, dtype=torch.float64)
        if self.randomness == "robust":
            if inputs is None:
                raise ValueError("randomness='robust' hashes the queried images: pass inputs=")
            key = bytes(self.hash_key.cpu().tolist())
            return keyed_uniforms(self.robust_hash(inputs.reshape(n, *inputs.shape[-3:]), key), key)
        source = inputs if inputs is not None else probs
        rows = source.detach().reshape(n, -1).float().cpu().contiguous().numpy()
        key = bytes(self.hash_key.cpu().tolist())
        digests = [hashlib.blake2b(row.tobytes(), key=key, digest_size=8).digest() for row in rows]
        return torch.tensor([int.from_bytes(d, "little") >> 11 for d in digests], dtype=torch.float64) / 2.0**53

    def sample_labels(self, probs: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Draw y ~ softmax(f(x) / T) per row (the argmax when T = 0) by inverse-CDF sampling.

        >>> import torch
        >>> SSD(torch.eye(3), T=0.0).sample_labels(torch.tensor([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]]))
        tensor([0, 2])
        """
        flat = probs.reshape(-1, probs.shape[-1])
        if self.T == 0:
            return flat.argmax(-1).reshape(probs.shape[:-1])
        weights = torch.softmax(flat.double() / self.T, dim=-1)
        cdf = weights.cumsum(-1)
        u = self._uniforms(flat.shape[0], inputs, probs).to(cdf.device) * cdf[:, -1]
        labels = torch.searchsorted(cdf, u[:, None]).squeeze(-1).clamp_max(flat.shape[-1] - 1)
        return labels.reshape(probs.shape[:-1])

    def forward(self, probs: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Defend probability vectors ``[..., C]`` (not logits); ``inputs`` (the queries) seed the hash mode.

        >>> import torch
        >>> ssd = SSD(torch.full((2, 2), 0.5), T=1.0, randomness="hash", hash_key=b"secret")
        >>> probs, queries = torch.tensor([[0.9, 0.1]]), torch.rand(1, 3, 8, 8)
        >>> torch.equal(ssd(probs, inputs=queries), ssd(probs, inputs=queries))  # same query, same answer
        True
        """
        if probs.shape[-1] != self.num_classes:
            raise ValueError(f"probs have {probs.shape[-1]} classes, q_table has {self.num_classes}")
        if self.validate:  # before the radius: the entropy of logits would be meaningless
            check_probabilities(probs, "probs (SSD defends probability vectors; apply softmax to logits first)")
        if not self.validate and probs.dim() == 2 and probs.is_cuda and solver_path(probs.device) == "triton":
            return self._forward_fused(probs, inputs)
        labels = self.sample_labels(probs, inputs)
        q = self.q_table.to(device=probs.device, dtype=probs.dtype)[labels]
        return waterfill(probs, q, self.radius(probs), validate=self.validate)

    def _forward_fused(self, probs: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        """The CUDA path without host synchronisation: the fused Triton kernel samples, gathers q^y, computes the
        radius and solves in one go (the generator's uniforms are drawn on the CPU and copied asynchronously)."""
        from ..solver.triton_kernel import ssd_defend_triton

        u = self._uniforms(probs.shape[0], inputs, probs)
        u = u.pin_memory().to(probs.device, non_blocking=True)
        return ssd_defend_triton(probs, self.q_table.to(device=probs.device, dtype=probs.dtype), u, T=self.T,
                                 eps=self.eps, normalized=self.entropy == "normalized")

    def wrap(self, model: nn.Module) -> "DefendedModel":
        """A module returning ``log`` of the defended probabilities of ``model`` (argmax-compatible with logits).

        >>> import torch
        >>> ssd = SSD(torch.full((3, 3), 1 / 3), T=1.0, seed=0)
        >>> log_probs = ssd.wrap(torch.nn.Linear(4, 3))(torch.randn(2, 4))
        >>> torch.allclose(log_probs.exp().sum(-1), torch.ones(2))
        True
        """
        return DefendedModel(model, self)


class DefendedModel(nn.Module):
    """``model`` behind SSD: log defended probabilities, computed without gradients, the model kept in eval mode.

    >>> import torch
    >>> released = DefendedModel(torch.nn.Linear(4, 3), SSD(torch.full((3, 3), 1 / 3), T=1.0, seed=0))
    >>> log_probs = released(torch.randn(2, 4))
    >>> log_probs.shape, log_probs.requires_grad
    (torch.Size([2, 3]), False)
    """

    def __init__(self, model: nn.Module, defense: SSD):
        super().__init__()
        if not isinstance(defense, SSD):
            raise ValueError(f"defense must be an SSD, got {type(defense).__name__}")
        self.model, self.defense = model.eval(), defense

    def train(self, mode: bool = True) -> "DefendedModel":
        """Set the flag but keep the wrapped classifier in eval mode: a released model never trains."""
        self.training = mode
        self.model.eval()
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.model(x), dim=-1)
        defended = self.defense(probs, inputs=x)
        return torch.log(defended.clamp_min(torch.finfo(defended.dtype).tiny))
