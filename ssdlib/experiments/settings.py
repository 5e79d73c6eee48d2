"""The paper's three experimental settings, mirrored with the data this project has, and what each scale uses.

Settings: the IR-152 family on CelebA, the IR-152 family on LFW (in place of FaceScrub), the VGG-16 family on LFW.
Each setting names its data set, its model family and the paper's setting it stands in for; the per-scale limits
on the data and the training recipes live here too, so every chapter trains and loads the same cached models.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..scales import check_scale


@dataclass(frozen=True)
class Setting:
    """A private data set and a target model family, and the paper's setting it stands in for."""

    name: str
    dataset: str
    family: str
    title: str
    paper_setting: str


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("celeba_ir152", "celeba", "ir152", "CelebA / IR-152", "IR-152/CelebA"),
    Setting("lfw_ir152", "lfw", "ir152", "LFW / IR-152", "IR-152/FaceScrub"),
    Setting("lfw_vgg16", "lfw", "vgg16", "LFW / VGG-16", "VGG-16/FaceScrub"),
)}

#: How much private data each scale uses (smoke keeps the identities with most images).
PRIVATE_LIMITS = {"smoke": {"max_identities": 10, "max_per_identity": 20}, "cpu": {}, "paper": {}}
#: Public identities used to pretrain the backbones (a classification task needs repeats).
PRETRAIN_LIMITS = {"smoke": {"min_images": 10, "max_images": 300}, "cpu": {"min_images": 5}, "paper": {"min_images": 3}}
#: Training recipes per scale (keyword arguments of ssdlib.training.TrainConfig).
RECIPES = {
    "smoke": dict(epochs=2, lr=0.05),
    "cpu": dict(epochs=20, lr=0.05),
    "paper": dict(epochs=100, lr=0.01, schedule="multistep", milestones=(75, 90)),
}


def setting(name: str) -> Setting:
    """The setting called ``name``; a clear error lists the valid names."""
    if name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}; valid: {', '.join(SETTINGS)}")
    return SETTINGS[name]


def recipe(scale: str) -> dict:
    """The training recipe of ``scale`` (a copy)."""
    return dict(RECIPES[check_scale(scale)])
