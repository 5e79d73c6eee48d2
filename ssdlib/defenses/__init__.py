"""The defenses the paper compares: SSD (post-processing) and four training-time baselines, and their registry.

The registry below is the one place where defense names live: ``"none"`` (undefended), ``"mid"``, ``"bido"``,
``"ls"`` (negative label smoothing), ``"tl"`` (transfer learning) change how the target is trained;
``"ssd"`` post-processes the undefended model's outputs, and so do the cheap output perturbations (baselines beyond
the paper, :mod:`.output`: ``"rounding"``, ``"gaussian"``, ``"reverse_sigmoid"``, ``"top_k"``, ``"top_1"``).
Per-setting hyper-parameters (the paper's Table 4) are chosen by :mod:`ssdlib.experiments.settings`; the classes'
own defaults serve standalone use.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import NoDefense, TrainingDefense
from .bido import BiDO, gaussian_kernel, hsic, normalized_hsic
from .ls import NegativeLS, ls_schedule, smoothed_targets
from .mid import MID, VIBNet, gaussian_kl
from .output import (PERTURBATIONS, GaussianNoise, OutputPerturbation, ReverseSigmoid, Rounding, TopK, TopLabel,
                     build_perturbation)
from .robust_hash import RobustHash
from .ssd import SSD, DefendedModel, estimate_q_table
from .tl import TransferLearning, freeze_first_layers, weight_layers


@dataclass(frozen=True)
class DefenseInfo:
    """A defense's name, its title in tables and figures, its kind, and the class that implements it."""

    name: str
    title: str
    kind: str  # "training" or "post-processing"
    cls: type


REGISTRY: dict[str, DefenseInfo] = {d.name: d for d in (
    DefenseInfo("none", "no defense", "training", TrainingDefense),
    DefenseInfo("mid", "MID", "training", MID),
    DefenseInfo("bido", "BiDO", "training", BiDO),
    DefenseInfo("ls", "LS (negative)", "training", NegativeLS),
    DefenseInfo("tl", "TL", "training", TransferLearning),
    DefenseInfo("ssd", "SSD", "post-processing", SSD),
    # the cheap output perturbations (baselines beyond the paper, ssdlib.defenses.output)
    DefenseInfo("rounding", "rounding", "post-processing", Rounding),
    DefenseInfo("gaussian", "Gaussian noise", "post-processing", GaussianNoise),
    DefenseInfo("reverse_sigmoid", "reverse sigmoid", "post-processing", ReverseSigmoid),
    DefenseInfo("top_k", "top-k", "post-processing", TopK),
    DefenseInfo("top_1", "top-1 label", "post-processing", TopLabel),
)}
DEFENSE_NAMES = tuple(REGISTRY)
TRAINING_DEFENSES = tuple(n for n, d in REGISTRY.items() if d.kind == "training")
OUTPUT_PERTURBATIONS = tuple(PERTURBATIONS)


def defense_info(name: str) -> DefenseInfo:
    """The registry entry of ``name``; a clear error lists the valid names.

    >>> info = defense_info("mid")
    >>> info.title, info.kind, info.cls.__name__
    ('MID', 'training', 'MID')
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown defense {name!r}; valid: {', '.join(DEFENSE_NAMES)}")
    return REGISTRY[name]


def build_defense(name: str, **params) -> TrainingDefense:
    """A training-time defense by name (``none``, ``mid``, ``bido``, ``ls``, ``tl``) with ``params``.

    >>> build_defense("ls", alpha=-0.05).alpha
    -0.05
    """
    info = defense_info(name)
    if info.kind != "training":
        raise ValueError(f"{name!r} is a post-processing defense; build it with ssdlib.SSD or build_perturbation, "
                         "not build_defense")
    try:
        return info.cls(**params)
    except TypeError as err:  # an unknown keyword: name the defense and the problem
        raise ValueError(f"bad parameters for defense {name!r}: {err}") from None


__all__ = ["REGISTRY", "DEFENSE_NAMES", "TRAINING_DEFENSES", "OUTPUT_PERTURBATIONS", "build_perturbation",
           "OutputPerturbation", "Rounding", "GaussianNoise", "ReverseSigmoid", "TopK", "TopLabel", "DefenseInfo",
           "defense_info", "build_defense",
           "TrainingDefense", "NoDefense", "MID", "VIBNet", "BiDO", "NegativeLS", "TransferLearning", "SSD",
           "DefendedModel", "estimate_q_table", "RobustHash", "gaussian_kl", "gaussian_kernel", "hsic",
           "normalized_hsic",
           "ls_schedule", "smoothed_targets", "freeze_first_layers", "weight_layers"]
