"""The paper's labels of defenses, settings and metrics, mapped once to this project's names and back.

This project has no FaceScrub: LFW stands in for it, so the paper's two FaceScrub settings map to ``lfw_*``
names (``ssdlib.experiments`` trains them on LFW). The high-resolution settings of the paper's appendices have
no counterpart here and map to nothing.
"""
from __future__ import annotations

VERSIONS = ("submitted", "iclr2025")

# The paper's labels -> canonical defense names. The main tables write "No Def."/"Ours", the appendix tables
# "No Defense"/"SSD (ours)"; "Purifier" (final version, Table 7) is a defense this project does not implement.
DEFENSE_FROM_PAPER = {
    "No Def.": "none", "No Defense": "none",
    "MID": "mid", "BiDO": "bido", "LS": "ls", "TL": "tl",
    "Ours": "ssd", "SSD (ours)": "ssd",
    "Purifier": "purifier",
}
DEFENSES = ("none", "mid", "bido", "ls", "tl", "ssd")  # the defenses of every main table, in the paper's order
PAPER_DEFENSE = {"none": "No Def.", "mid": "MID", "bido": "BiDO", "ls": "LS", "tl": "TL", "ssd": "Ours",
                 "purifier": "Purifier"}  # canonical -> the label of the main tables
DEFENSE_TITLES = {"none": "No defense", "mid": "MID", "bido": "BiDO", "ls": "LS", "tl": "TL", "ssd": "SSD",
                  "purifier": "Purifier"}

# The paper's three main settings (target model/private data) -> this project's setting names.
SETTINGS = ("IR-152/CelebA", "IR-152/FaceScrub", "VGG-16/FaceScrub")
SETTING_FROM_PAPER = {"IR-152/CelebA": "celeba_ir152", "IR-152/FaceScrub": "lfw_ir152",
                      "VGG-16/FaceScrub": "lfw_vgg16"}
PAPER_SETTING = {v: k for k, v in SETTING_FROM_PAPER.items()}
SETTING_TITLES = {"celeba_ir152": "CelebA / IR-152", "lfw_ir152": "LFW / IR-152 (paper: FaceScrub)",
                  "lfw_vgg16": "LFW / VGG-16 (paper: FaceScrub)"}
# High-resolution settings (224x224) of the appendices, one per version, with no project counterpart.
HIGH_RESOLUTION_SETTINGS = {"submitted": "ResNet-152/FaceScrub 224px (high-res)",
                            "iclr2025": "IR-152/CelebA 224px (high-res)"}

# Attack families as the paper groups them (submitted Sections 3.2 and 5.2; RLB in Appendix F, soft-label).
SOFT_LABEL_ATTACKS = ("Mirror", "C2F", "RLB")
HARD_LABEL_ATTACKS = ("BREP", "LOKT")

# The tables' metric labels -> column names of this package's DataFrames.
METRIC_COLUMNS = {
    "Acc@1": "acc1", "Acc@5": "acc5", "delta_eval": "delta_eval", "delta_face": "delta_face",
    "Acc": "acc", "Avg L1": "avg_l1", "Max L1": "max_l1",
    "beta": "mid_beta", "lambda_x": "bido_lambda_x", "lambda_y": "bido_lambda_y", "alpha": "ls_alpha",
    "frozen_first_layers": "tl_frozen_percent", "T": "ssd_T", "eps": "ssd_eps",
}
ATTACK_METRICS = ("acc1", "acc5", "delta_eval", "delta_face")
UTILITY_METRICS = ("acc", "avg_l1", "max_l1")


def check_version(version: str) -> str:
    """Return ``version`` if it names a version of the paper, else raise naming the valid ones."""
    if version not in VERSIONS:
        raise ValueError(f"unknown paper version {version!r}; expected one of {VERSIONS}")
    return version


def project_defense(label: str) -> str:
    """Canonical defense name of a paper label (``"Ours"`` -> ``"ssd"``); canonical names pass through."""
    if label in DEFENSE_FROM_PAPER:
        return DEFENSE_FROM_PAPER[label]
    if label in PAPER_DEFENSE:
        return label
    raise ValueError(f"unknown defense label {label!r}; expected one of {sorted(DEFENSE_FROM_PAPER)}")


def paper_defense(name: str) -> str:
    """The main tables' label of a canonical defense name (``"ssd"`` -> ``"Ours"``)."""
    if name not in PAPER_DEFENSE:
        raise ValueError(f"unknown defense {name!r}; expected one of {sorted(PAPER_DEFENSE)}")
    return PAPER_DEFENSE[name]


def project_setting(label: str) -> str:
    """This project's setting name of a paper setting (``"IR-152/FaceScrub"`` -> ``"lfw_ir152"``)."""
    if label in SETTING_FROM_PAPER:
        return SETTING_FROM_PAPER[label]
    if label in PAPER_SETTING:
        return label
    raise ValueError(f"setting {label!r} has no project counterpart; expected one of {SETTINGS}")


def paper_setting(name: str) -> str:
    """The paper's label of a setting named by project name or paper label (``"lfw_vgg16"`` -> "VGG-16/FaceScrub")."""
    if name in PAPER_SETTING:
        return PAPER_SETTING[name]
    if name in SETTING_FROM_PAPER or name in HIGH_RESOLUTION_SETTINGS.values():
        return name
    raise ValueError(f"unknown setting {name!r}; expected one of {sorted(PAPER_SETTING)} or {SETTINGS}")
