"""What every black-box attack shares: the oracle check, per-scale budgets, and the per-class result.

An attack reaches the target ONLY through a :class:`ssdlib.blackbox.BlackBox` (which counts queries and hides the
model); handing it a bare ``nn.Module`` is an error, and an attack refuses an oracle of the other mode (a
soft-label attack a hard-label oracle, a label-only attack a soft one). Work an
attack does once for all classes (Mirror's scored random pool, C2F's inversion network) is its *setup*; its
queries and seconds are reported apart from the per-class ones.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..blackbox import BlackBox, QueryBudgetExceeded
from ..scales import budget, check_scale

__all__ = ["Attack", "AttackResult", "check_oracle", "class_generator", "QueryBudgetExceeded"]


def check_oracle(oracle, mode: str = "soft", attack: str = "attack") -> BlackBox:
    """``oracle`` if it is a :class:`BlackBox` answering in ``mode``, else a clear TypeError / ValueError."""
    if isinstance(oracle, nn.Module):
        raise TypeError(f"{attack} got a torch.nn.Module as its target; black-box attacks may query a model only "
                        "through ssdlib.blackbox.BlackBox (wrap it: BlackBox(model, defense))")
    if not isinstance(oracle, BlackBox):
        raise TypeError(f"{attack} needs a ssdlib.blackbox.BlackBox as its target, got {type(oracle).__name__}")
    if oracle.mode != mode:
        if mode == "soft":
            raise ValueError(f"{attack} is a soft-label attack: it needs probability vectors, but the oracle answers "
                             f"in {oracle.mode!r} mode (top-1 labels only); use BlackBox(..., mode='soft') or a "
                             "hard-label attack")
        raise ValueError(f"{attack} is a label-only attack: it must see top-1 labels only, but the oracle answers in "
                         f"{oracle.mode!r} mode (probability vectors); use BlackBox(..., mode='hard') so that the "
                         "attack cannot read more than a label-only attacker would")
    return oracle


def class_generator(seed: int, target: int, salt: int = 0) -> torch.Generator:
    """The torch Generator of one (seed, class) run, so classes are independent and runs reproducible."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(target) * 7_919 + salt * 104_729) % 2**63)


@dataclass
class AttackResult:
    """One attacked class: the ``top_k`` reconstructions and what they cost.

    ``scores`` are the oracle's probabilities of ``target`` for the returned images (from the attack's own last
    query of them); ``initial_score``/``final_score`` the best such probability in the first population the attack
    scored (Mirror: the best of the scored pool; C2F: the best stage-I latent) / in the final population;
    ``queries`` and ``seconds`` are this class's (setup excluded; ``setup_queries``/``setup_seconds`` are the shared
    setup's, paid once for all classes); ``history`` holds per-generation best and mean target probability;
    ``diagnostics`` holds attack-specific evidence (C2F: the mean target probability before and after stage I);
    ``stopped`` says why the search ended ("generations": it ran them all; "threshold": Mirror's optional early
    stop; "budget": the oracle's query budget ran out); ``generations`` how many generations (iterations) it ran.
    """

    attack: str
    target: int
    images: torch.Tensor
    latents: torch.Tensor
    scores: torch.Tensor
    queries: int
    seconds: float
    initial_score: float
    final_score: float
    stopped: str = "generations"
    generations: int = 0
    setup_queries: int = 0
    setup_seconds: float = 0.0
    history: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain form for the cache (tensors stay tensors)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AttackResult:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class Attack:
    """Base of black-box attacks: ``params`` = per-scale budget (``EFFORT[scale]``) + defaults + overrides.

    Subclasses define ``name``, ``mode``, ``EFFORT``, ``DEFAULTS``, ``SETUP_KEYS`` (the params the shared setup
    depends on), :meth:`setup` and :meth:`attack_class`.
    """

    name = "attack"
    mode = "soft"
    EFFORT: dict[str, dict] = {}
    DEFAULTS: dict = {}
    SETUP_KEYS: tuple[str, ...] = ()

    def __init__(self, prior, *, scale: str = "cpu", progress: bool = False, **overrides):
        from ..priors import Prior
        if not isinstance(prior, Prior):
            raise TypeError(f"{self.name} needs a ssdlib.priors.Prior (a generator + latent sampler), got "
                            f"{type(prior).__name__}")
        self.prior = prior
        self.scale = check_scale(scale)
        valid = {**budget(self.EFFORT, scale), **self.DEFAULTS}
        unknown = set(overrides) - set(valid)
        if unknown:
            raise ValueError(f"unknown {self.name} parameters {sorted(unknown)}; valid: {', '.join(sorted(valid))}")
        self.params = {**valid, **overrides}
        self.progress = progress
        self._check_params()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale!r}, {self.params})"

    def _check_params(self) -> None:
        for k, v in self.params.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                raise ValueError(f"{self.name} parameter {k} must be non-negative, got {v!r}")

    @property
    def setup_params(self) -> dict:
        """The parameters the shared setup depends on (its cache key, with the oracle and prior identities)."""
        return {k: self.params[k] for k in self.SETUP_KEYS}

    # --- to be defined by attacks --------------------------------------------------------------------------
    def planned_queries(self, num_classes: int) -> dict:
        """Most queries the setup and one class can take: ``{"setup": int, "per_class": int}``."""
        raise NotImplementedError

    def setup(self, oracle: BlackBox, *, seed: int = 0) -> dict:
        """The shared, class-independent work (a dict of tensors with ``queries`` and ``seconds``)."""
        raise NotImplementedError

    def attack_class(self, oracle: BlackBox, target: int, setup: dict, *, seed: int = 0) -> AttackResult:
        raise NotImplementedError

    # --- shared helpers ------------------------------------------------------------------------------------
    def check(self, oracle) -> BlackBox:
        return check_oracle(oracle, self.mode, self.name)

    def score(self, oracle: BlackBox, latents: torch.Tensor, target: int) -> torch.Tensor:
        """The oracle's probability of ``target`` for the images of ``latents`` (``len(latents)`` queries)."""
        probs = oracle(self.prior.decode(latents))
        if not 0 <= target < probs.shape[-1]:
            raise ValueError(f"target class {target} out of range for an oracle with {probs.shape[-1]} classes")
        return probs[:, target].float().cpu()

    def run(self, oracle: BlackBox, targets, *, seed: int = 0) -> list[AttackResult]:
        """Setup once, then attack each class of ``targets``."""
        from tqdm.auto import tqdm
        oracle = self.check(oracle)
        setup = self.setup(oracle, seed=seed)
        return [self.attack_class(oracle, int(t), setup, seed=seed)
                for t in tqdm(list(targets), desc=self.name, disable=not self.progress)]

    def _result(self, target, latents, scores, *, queries, start, initial, stopped, history, setup,
                generations: int, diagnostics: dict | None = None) -> AttackResult:
        """The ``top_k`` distinct best latents, decoded, as an :class:`AttackResult`."""
        order = torch.argsort(scores, descending=True)
        keep, seen = [], set()
        for i in order.tolist():
            row = latents[i].numpy().tobytes()
            if row not in seen:
                seen.add(row)
                keep.append(i)
            if len(keep) == self.params["top_k"]:
                break
        keep = torch.tensor(keep, dtype=torch.long)
        z = latents[keep].clone()
        return AttackResult(self.name, int(target), self.prior.decode(z), z, scores[keep].clone(), int(queries),
                            time.perf_counter() - start, float(initial), float(scores.max()), stopped,
                            int(generations), int(setup.get("queries", 0)), float(setup.get("seconds", 0.0)),
                            history, dict(self.params), dict(diagnostics or {}))
