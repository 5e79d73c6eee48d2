"""The target models of each setting: the private data, the public backbone, and the models under each defense.

Every artifact is cached (``ssdlib.cache``), so chapters that need a target load it instead of training it.
"""
from __future__ import annotations

import functools
from typing import Callable

import pandas as pd
from torch import nn

from .. import data as D
from ..defenses import SSD, TransferLearning, build_defense, estimate_q_table
from ..scales import budget, check_scale
from ..cache import state_fingerprint
from ..training import TrainConfig, body_state, evaluate, predict_proba, train_or_load
from ..utils import data_root
from .settings import PRETRAIN_LIMITS, PRIVATE_LIMITS, defense_params, pretrain_recipe, recipe, setting, ssd_params


def default_config(family: str, scale: str, num_classes: int, defense: str = "none", *, setting_name: str | None = None,
                   **overrides) -> TrainConfig:
    """The fine-tuning recipe of ``scale`` (for setting ``setting_name``) for ``family``, ``overrides`` applied."""
    return TrainConfig(family=family, scale=scale, num_classes=num_classes, defense=defense,
                       **{**recipe(scale, setting_name), **overrides})


@functools.lru_cache(maxsize=8)
def _private(dataset: str, scale: str, seed: int, root: str) -> D.PrivateData:
    return D.private_split(dataset, root, seed=seed, **budget(PRIVATE_LIMITS, scale))


def private_data(dataset: str, scale: str, *, seed: int = 0, root=None) -> D.PrivateData:
    """The private train/valid/test split of ``dataset`` at ``scale`` (memoised; decoded images are cached)."""
    check_scale(scale)
    return _private(dataset, scale, seed, str(data_root(root)))


@functools.lru_cache(maxsize=4)
def _pretrain(scale: str, seed: int, root: str) -> D.FaceSet:
    return D.public_set(root, seed=seed, **budget(PRETRAIN_LIMITS, scale))


def pretraining_data(scale: str, *, seed: int = 0, root=None) -> D.FaceSet:
    """Public identities with enough images to pretrain a backbone by identity classification."""
    check_scale(scale)
    return _pretrain(scale, seed, str(data_root(root)))


def pretrain_public(family: str, scale: str, public_set, *, config: TrainConfig | None = None,
                    epochs: int | None = None, device=None, cache: bool = True, progress: bool = True) -> nn.Module:
    """Train (or load from the cache) a ``family`` classifier over the public identities: the backbone every target
    of that family starts from. ``epochs`` overrides the scale's pretraining recipe."""
    if config is None:
        config = TrainConfig(family=family, scale=scale, num_classes=public_set.num_classes,
                             **{**pretrain_recipe(scale, family), **({"epochs": epochs} if epochs else {})})
    elif not isinstance(config, TrainConfig) or config.defense != "none":
        raise ValueError("config must be a TrainConfig without a defense")
    model, _ = train_or_load(config, public_set, None, device=device, cache=cache, progress=progress)
    return model


def train_target(name: str, defense: str = "none", scale: str = "cpu", *, device=None, seed: int = 0, root=None,
                 progress: bool = True, train_seed: int | None = None, cache: bool = True,
                 **overrides) -> tuple[nn.Module, dict]:
    """Train (or load from the cache) the target model of setting ``name`` under a training-time ``defense``.

    Every target starts from its family's public backbone (:func:`public_backbone`; TL also freezes its first
    layers). ``seed`` fixes the private split (and, by default, training); ``train_seed`` reseeds only the new
    head's initialisation and the batch order, to measure how much accuracy moves between training runs."""
    s = setting(name)
    params = defense_params(name, defense)
    data = private_data(s.dataset, scale, seed=seed, root=root)
    backbone = public_backbone(s.family, scale, seed=seed, root=root, device=device, progress=progress, cache=cache)
    init = body_state(backbone)
    strategy = TransferLearning(backbone, **params) if defense == "tl" else build_defense(defense, **params)
    config = default_config(s.family, scale, data.num_classes, defense=defense, setting_name=name,
                            defense_params=params if defense != "tl" else {}, init=state_fingerprint(init),
                            seed=seed if train_seed is None else int(train_seed), **overrides)
    return train_or_load(config, data.train, data.valid, defense=strategy, init_state=init, device=device,
                         progress=progress, cache=cache)


def public_backbone(family: str, scale: str, *, seed: int = 0, root=None, device=None, progress: bool = True,
                    cache: bool = True) -> nn.Module:
    """The ``family`` backbone pretrained on the public faces at ``scale`` (cached): where every target starts."""
    return pretrain_public(family, scale, pretraining_data(scale, seed=seed, root=root), device=device,
                           progress=progress, cache=cache)


def seed_spread(name: str, scale: str, train_seeds, *, device=None, seed: int = 0, root=None,
                progress: bool = False) -> pd.DataFrame:
    """Test accuracy of the undefended target retrained with each training seed on the same split (the run-to-run
    spread against which differences between defenses are read)."""
    s = setting(name)
    data = private_data(s.dataset, scale, seed=seed, root=root)
    rows = []
    for train_seed in train_seeds:
        model, info = train_target(name, "none", scale, device=device, seed=seed, root=root,
                                   train_seed=int(train_seed), progress=progress)
        rows.append({"training seed": int(train_seed),
                     "test_acc": 100 * evaluate(model, data.test, device=device)["accuracy"],
                     "train_minutes": info["train_seconds"] / 60, "cached": info["cached"]})
    return pd.DataFrame(rows)


def ssd_of_setting(name: str, variant: str, model: nn.Module, reference: D.FaceSet, *, seed: int = 0,
                   device=None, **overrides) -> tuple[Callable[[int | None], SSD], dict]:
    """SSD of setting ``name`` (``variant`` of :data:`SSD_VARIANTS`) behind ``model``, q^y estimated on the
    ``reference`` split: ``(build, params)``, where ``build(defense_seed)`` returns the defense with its sampler
    seeded by ``defense_seed``; ``overrides`` replace parameters (``T``, ``eps``, ``entropy``, ``estimator``). The
    one place where the experiments make the SSD of a setting."""
    params = ssd_params(name, variant)
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"unknown SSD parameters {sorted(unknown)}; valid: {', '.join(params)}")
    params.update(overrides)
    q_table = estimate_q_table(predict_proba(model, reference, device=device), reference.labels, model.num_classes,
                               estimator=params["estimator"], seed=seed)

    def build(defense_seed: int | None) -> SSD:
        return SSD(q_table, T=params["T"], eps=params["eps"], entropy=params["entropy"],
                   seed=defense_seed).to(device or "cpu")

    return build, params
