"""The paper's three experimental settings at our three scales: which data, which model family, how trained.

Notebooks call these so every chapter trains and loads the same cached models. Settings mirror the paper's:
IR-152 family on CelebA, IR-152 family on LFW (in place of FaceScrub), VGG-16 family on LFW.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from torch import nn

from . import data as D
from .baselines import DEFENSE_NAMES, TransferLearning, build_defense, defense_defaults, pretrain_public
from .training import default_config, train_or_load
from .utils import data_root


@dataclass(frozen=True)
class Setting:
    """A private data set and a target model family, and the paper's setting it stands in for."""

    name: str
    dataset: str
    family: str
    title: str
    paper_setting: str


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("celeba_ir152", "celeba", "ir152", "CelebA / IR-152", "CelebA / IR-152"),
    Setting("lfw_ir152", "lfw", "ir152", "LFW / IR-152", "FaceScrub / IR-152"),
    Setting("lfw_vgg16", "lfw", "vgg16", "LFW / VGG-16", "FaceScrub / VGG-16"),
)}

#: How much private data each scale uses (smoke keeps the identities with most images).
PRIVATE_LIMITS = {"smoke": {"max_identities": 10, "max_per_identity": 20}, "cpu": {}, "paper": {}}
#: Public identities used to pretrain the transfer-learning backbone (a classification task needs repeats).
PRETRAIN_LIMITS = {"smoke": {"min_images": 10, "max_images": 300}, "cpu": {"min_images": 5}, "paper": {"min_images": 3}}


def setting(name: str) -> Setting:
    """The setting called ``name``; a clear error lists the valid names."""
    if name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}; valid: {', '.join(SETTINGS)}")
    return SETTINGS[name]


def _check_scale(scale: str) -> None:
    if scale not in PRIVATE_LIMITS:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(PRIVATE_LIMITS)}")


@functools.lru_cache(maxsize=8)
def _private(dataset: str, scale: str, seed: int, root: str) -> D.PrivateData:
    return D.private_split(dataset, root, seed=seed, **PRIVATE_LIMITS[scale])


def private_data(dataset: str, scale: str, *, seed: int = 0, root=None) -> D.PrivateData:
    """The private train/valid/test split of ``dataset`` at ``scale`` (memoised; decoded images are cached)."""
    _check_scale(scale)
    return _private(dataset, scale, seed, str(data_root(root)))


@functools.lru_cache(maxsize=4)
def _pretrain(scale: str, seed: int, root: str) -> D.FaceSet:
    return D.public_set(root, seed=seed, **PRETRAIN_LIMITS[scale])


def pretraining_data(scale: str, *, seed: int = 0, root=None) -> D.FaceSet:
    """Public identities with enough images to pretrain the transfer-learning backbone by classification."""
    _check_scale(scale)
    return _pretrain(scale, seed, str(data_root(root)))


def train_target(name: str, defense: str = "none", scale: str = "cpu", *, device=None, seed: int = 0, root=None,
                 progress: bool = True, train_seed: int | None = None, **overrides) -> tuple[nn.Module, dict]:
    """Train (or load from the cache) the target model of setting ``name`` under a training-time ``defense``.

    ``seed`` fixes the private split (and, by default, training); ``train_seed`` reseeds only the initialisation
    and batch order, to measure how much accuracy moves between training runs on the same split."""
    s = setting(name)
    if defense not in DEFENSE_NAMES:
        raise ValueError(f"unknown defense {defense!r}; valid: {', '.join(DEFENSE_NAMES)}")
    data = private_data(s.dataset, scale, seed=seed, root=root)
    params = defense_defaults(defense, s.family, s.dataset)
    if defense == "tl":
        backbone = pretrain_public(s.family, scale, pretraining_data(scale, seed=seed, root=root), device=device,
                                   progress=progress)
        strategy = TransferLearning(backbone, **params)
    else:
        strategy = build_defense(defense, **params)
    config = default_config(s.family, scale, data.num_classes, defense=defense,
                            defense_params=params if defense != "tl" else {},
                            seed=seed if train_seed is None else int(train_seed), **overrides)
    return train_or_load(config, data.train, data.valid, defense=strategy, device=device, progress=progress)
