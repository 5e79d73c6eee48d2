"""The cheap output perturbations, baselines beyond the paper: rounding, Gaussian noise, reverse sigmoid, top-k, top-1.

Each acts like SSD on the undefended model's probability vectors, ``perturbation(probs, inputs=None)``, so a
:class:`ssdlib.BlackBox` takes it as its ``defense``. They mirror ART's postprocessors (``Rounded``,
``GaussianNoise``, ``ReverseSigmoid``, ``HighConfidence``, ``ClassLabels``) with three differences, each tested:
Gaussian noise draws from its own seeded ``torch.Generator`` (never NumPy's global state), top-k keeps the k largest
entries and renormalises (``HighConfidence`` zeroes entries under a cutoff and does not renormalise), and the top-1
label is computed per row (``ClassLabels`` marks every row's label in every row of a batch, an open upstream bug).
A row that the perturbation empties (all entries clipped to 0) becomes uniform, where ART would divide by zero.
"""
from __future__ import annotations

import secrets

import torch

__all__ = ["OutputPerturbation", "Rounding", "GaussianNoise", "ReverseSigmoid", "TopK", "TopLabel",
           "PERTURBATIONS", "build_perturbation"]


def _renormalise(x: torch.Tensor) -> torch.Tensor:
    """Rows divided by their sums; a row summing to 0 becomes uniform."""
    sums = x.sum(-1, keepdim=True)
    uniform = torch.full_like(x, 1.0 / x.shape[-1])
    return torch.where(sums > 0, x / sums.clamp_min(torch.finfo(x.dtype).tiny), uniform)


class OutputPerturbation:
    """Base of the output perturbations: checks the rows and keeps their dtype and device; subclasses define
    :meth:`perturb` (float64 rows in, rows out) and :meth:`params`."""

    name = ""
    randomised = False

    def params(self) -> dict:
        """The parameters that define the perturbation (they go into cache keys)."""
        return {}

    def perturb(self, probs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, probs: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Perturb probability vectors ``[N, C]`` (``inputs``, the queries, are accepted and unused)."""
        if not isinstance(probs, torch.Tensor) or not probs.is_floating_point() or probs.dim() != 2:
            raise ValueError(f"{self.name} perturbs float probability rows [N, C], got "
                             f"{getattr(probs, 'dtype', type(probs))} {tuple(getattr(probs, 'shape', ()))}")
        if probs.numel() and (not torch.isfinite(probs).all() or (probs < 0).any()):
            raise ValueError(f"{self.name} needs probability vectors (finite, >= 0), not logits")
        return self.perturb(probs.double()).to(probs.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"


def _positive_int(name: str, value) -> int:
    """``value`` if it is a positive int (not a bool), else a ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class Rounding(OutputPerturbation):
    """Every entry rounded to ``decimals`` decimals (half to even, as ``np.around`` and ART's ``Rounded``); rows are
    not renormalised, as an API that rounds would not."""

    name = "rounding"

    def __init__(self, decimals: int = 3):
        self.decimals = _positive_int("decimals", decimals)

    def params(self) -> dict:
        return {"decimals": self.decimals}

    def perturb(self, probs: torch.Tensor) -> torch.Tensor:
        return torch.round(probs, decimals=self.decimals)


class GaussianNoise(OutputPerturbation):
    """Gaussian noise of standard deviation ``scale`` added to each entry, negatives clipped to 0, rows renormalised;
    the noise comes from a ``torch.Generator`` seeded by ``seed`` (None: a fresh random seed), so a run is
    reproducible and independent of every global random state."""

    name = "gaussian"
    randomised = True

    def __init__(self, scale: float = 0.2, *, seed: int | None = None):
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"scale must be a positive standard deviation, got {scale!r}")
        self.scale = float(scale)
        self.generator = torch.Generator().manual_seed(secrets.randbits(63) if seed is None else int(seed))

    def params(self) -> dict:
        return {"scale": self.scale}

    def noise(self, shape) -> torch.Tensor:
        """The next float64 noise draws of ``shape`` from the perturbation's generator."""
        return torch.randn(shape, generator=self.generator, dtype=torch.float64) * self.scale

    def perturb(self, probs: torch.Tensor) -> torch.Tensor:
        return self.add(probs, self.noise(probs.shape).to(probs.device))

    @staticmethod
    def add(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``probs + noise``, negatives clipped to 0, rows renormalised (the deterministic half, for tests)."""
        return _renormalise((probs + noise).clamp_min(0.0))


class ReverseSigmoid(OutputPerturbation):
    """Lee et al.'s reverse sigmoid (arXiv:1806.00054): p - beta * (sigmoid(-gamma * log((1 - p) / p)) - 1/2),
    clipped to [0, 1] and renormalised, p clipped to [1e-9, 1 - 1e-9] inside the logarithm (as ART's
    ``ReverseSigmoid``)."""

    name = "reverse_sigmoid"

    def __init__(self, beta: float = 1.0, gamma: float = 0.1):
        if not (isinstance(beta, (int, float)) and beta > 0) or not (isinstance(gamma, (int, float)) and gamma > 0):
            raise ValueError(f"beta and gamma must be positive, got beta={beta!r}, gamma={gamma!r}")
        self.beta, self.gamma = float(beta), float(gamma)

    def params(self) -> dict:
        return {"beta": self.beta, "gamma": self.gamma}

    def perturb(self, probs: torch.Tensor) -> torch.Tensor:
        clipped = probs.clamp(1e-9, 1 - 1e-9)
        r = self.beta * (torch.sigmoid(-self.gamma * torch.log((1 - clipped) / clipped)) - 0.5)
        return _renormalise((probs - r).clamp(0.0, 1.0))


class TopK(OutputPerturbation):
    """The ``k`` largest entries kept, the others zeroed, rows renormalised (ties broken by ``torch.topk``)."""

    name = "top_k"

    def __init__(self, k: int = 1):
        self.k = _positive_int("k", k)

    def params(self) -> dict:
        return {"k": self.k}

    def perturb(self, probs: torch.Tensor) -> torch.Tensor:
        k = min(self.k, probs.shape[-1])
        top = probs.topk(k, dim=-1)
        return _renormalise(torch.zeros_like(probs).scatter(-1, top.indices, top.values))


class TopLabel(OutputPerturbation):
    """The one-hot vector of each row's top-1 label (an API that releases the label only)."""

    name = "top_1"

    def perturb(self, probs: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(probs).scatter(-1, probs.argmax(-1, keepdim=True), 1.0)


#: The output perturbations by name.
PERTURBATIONS: dict[str, type[OutputPerturbation]] = {c.name: c for c in (Rounding, GaussianNoise, ReverseSigmoid,
                                                                          TopK, TopLabel)}


def build_perturbation(name: str, *, seed: int | None = None, **params) -> OutputPerturbation:
    """The output perturbation ``name`` (a key of :data:`PERTURBATIONS`) with ``params``; a randomised one's
    generator seeded by ``seed``. Each answers like SSD: ``perturbation(probs)``, or as a :class:`ssdlib.BlackBox`'s
    defense.

    >>> probs = torch.tensor([[0.6, 0.3, 0.1]])
    >>> build_perturbation("top_k", k=2)(probs)
    tensor([[0.6667, 0.3333, 0.0000]])
    >>> build_perturbation("top_1")(probs)
    tensor([[1., 0., 0.]])
    >>> build_perturbation("rounding", decimals=1)(torch.tensor([[0.64, 0.36]]))
    tensor([[0.6000, 0.4000]])
    >>> noisy = build_perturbation("gaussian", scale=0.05, seed=0)
    >>> bool(torch.equal(noisy(probs), build_perturbation("gaussian", scale=0.05, seed=0)(probs)))
    True
    >>> build_perturbation("blur")
    Traceback (most recent call last):
    ValueError: unknown output perturbation 'blur'; valid: rounding, gaussian, reverse_sigmoid, top_k, top_1
    """
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown output perturbation {name!r}; valid: {', '.join(PERTURBATIONS)}")
    cls = PERTURBATIONS[name]
    try:
        return cls(**params, seed=seed) if cls.randomised else cls(**params)
    except TypeError as err:
        raise ValueError(f"bad parameters for output perturbation {name!r}: {err}") from None
