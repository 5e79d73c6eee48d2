"""The SSD paper's published facts as data with provenance, so chapters can set our numbers beside the paper's.

Paper: Zhuang, Yu, Qiu, Fang, Chen, Xia, "Stealthy Shield Defense: A Conditional Mutual Information-Based
Approach against Black-Box Model Inversion Attacks", ICLR 2025 (OpenReview p0DjhjPXl3).

Provenance rule: a value enters ``PUBLISHED`` only when it was read in a source named beside it. The paper's
PDF (tables 1-6, Section 5.3) could not be read from this project's sources when this module was written, so
the table functions return the full grid of rows and columns the paper reports, with NaN where a value has
not been transcribed yet; ``df.attrs["missing"]`` counts them and ``df.attrs["source"]`` names the table.
To add a number, append a ``Record`` to ``PUBLISHED`` with its page; nothing else needs to change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

PAPER = {
    "title": "Stealthy Shield Defense: A Conditional Mutual Information-Based Approach against "
    "Black-Box Model Inversion Attacks",
    "authors": ["Tianqu Zhuang", "Hongyao Yu", "Yixiang Qiu", "Hao Fang", "Bin Chen", "Shu-Tao Xia"],
    "venue": "ICLR 2025",
    "openreview_id": "p0DjhjPXl3",
    "code": "https://github.com/ZhuangQu/Stealthy-Shield-Defense",
}

# Settings (private data set / target model). The data sets (CelebA, FaceScrub), the models (VGG-16, IR-152)
# and the 64x64 resolution are confirmed by the OpenReview reviews; the pairing into three settings follows the
# project's issue (IR-152 on CelebA, IR-152 and VGG-16 on FaceScrub) and is to be checked against the PDF.
SETTINGS = ("CelebA / IR-152", "FaceScrub / IR-152", "FaceScrub / VGG-16")
DEFENSES = ("NoDef", "MID", "BiDO", "LS", "TL", "SSD")
SOFT_LABEL_ATTACKS = ("Mirror", "C2F", "RLB")  # attacker sees the probability vector
HARD_LABEL_ATTACKS = ("BREP", "LOKT")  # attacker sees only the top-1 label
ATTACKS = SOFT_LABEL_ATTACKS + HARD_LABEL_ATTACKS
ATTACK_METRICS = ("acc1", "acc5", "feat_dist", "knn_dist")
UTILITY_METRICS = ("test_acc", "avg_l1", "max_l1")
IMAGE_SIZE = 64  # reviews of the submission: "experiments were conducted on low-resolution 64x64 images"

# The released code (ZhuangQu/Stealthy-Shield-Defense, Stealthy_Shield_Defense.py and code.py): one set of
# defaults, not one per setting.  P = softmax(f / T) with f the probability vector (not the logits);
# H = -sum f log f in nats (not normalised by log|Y|); the L1 budget is eps * H; when ||f - q^y||_1 <= budget
# the code returns q^y itself.
AUTHORS_CODE = {
    "entropy_unit": "nats",
    "entropy_normalized": False,
    "temperature_applies_to": "probabilities",
    "T": 0.1,
    "eps": 0.5,
    "per_setting": None,  # the released code has no per-setting values
    "returns_q_inside_budget": True,
    "source": "github.com/ZhuangQu/Stealthy-Shield-Defense, Stealthy_Shield_Defense.py (defaults T=0.1, ε=0.5)",
}

# Quantitative claims read in a source, verbatim in meaning.
CLAIMS = (
    {
        "claim": "On CelebA, SSD lowers the attack accuracy of LOKT to 0% while other defenses remain 50-75%.",
        "value": {"lokt_acc_ssd": 0.0, "lokt_acc_other_defenses_range": (50.0, 75.0)},
        "source": "abstract of the submitted version on OpenReview p0DjhjPXl3 (dropped from the final abstract)",
    },
)

# Section 5.3 / Figure 1: CMI of the outputs before and after SSD.  The two values are those this project's
# issue 3 quotes from Section 5.3; the PDF itself was not read here, so the setting they belong to and their unit
# are unconfirmed (ssdlib.cmi reports nats).
SECTION53_CMI = {
    "no_defense": 0.21,
    "ssd": 0.14,
    "unit": "unconfirmed (ssdlib.cmi: nats)",
    "setting": "unconfirmed",
    "source": "Section 5.3, as quoted in the project's issue 3 ('0.21 -> 0.14 with SSD'); PDF not read here",
}


@dataclass(frozen=True)
class Record:
    """One published number: which table, which row key, which column, its value, and where it was read."""

    table: str
    key: tuple
    column: str
    value: float
    source: str


PUBLISHED: tuple[Record, ...] = ()


def _grid(table: str, index: list[tuple], names: list[str], columns: tuple[str, ...], source: str) -> pd.DataFrame:
    """Build the table's full grid and fill in the transcribed values of ``PUBLISHED``."""
    idx = pd.MultiIndex.from_tuples(index, names=names)
    df = pd.DataFrame(math.nan, index=idx, columns=list(columns), dtype=float)
    for rec in PUBLISHED:
        if rec.table != table:
            continue
        if rec.key not in df.index or rec.column not in df.columns:
            raise ValueError(f"PUBLISHED record {rec} does not fit {table}: unknown row {rec.key} or column")
        df.loc[rec.key, rec.column] = rec.value
    df = df.reset_index()
    df.attrs["source"] = source
    df.attrs["missing"] = int(df[list(columns)].isna().sum().sum())
    return df


def _attack_table(table: str, attacks: tuple[str, ...], source: str) -> pd.DataFrame:
    index = [(s, a, d) for s in SETTINGS for a in attacks for d in DEFENSES]
    return _grid(table, index, ["setting", "attack", "defense"], ATTACK_METRICS, source)


def table1_attacks() -> pd.DataFrame:
    """Soft-label attacks (Mirror, C2F, RLB): Acc@1/Acc@5 (%) and feature distances per setting and defense."""
    return _attack_table("table1", SOFT_LABEL_ATTACKS, "Table 1 (soft-label attacks)")


def table2_attacks() -> pd.DataFrame:
    """Hard-label attacks (BREP, LOKT): Acc@1/Acc@5 (%) and feature distances per setting and defense."""
    return _attack_table("table2", HARD_LABEL_ATTACKS, "Table 2 (hard-label attacks)")


def table3_utility() -> pd.DataFrame:
    """Utility per setting and defense: test accuracy (%), mean and max L1 change of the output vectors."""
    index = [(s, d) for s in SETTINGS for d in DEFENSES]
    return _grid("table3", index, ["setting", "defense"], UTILITY_METRICS, "Table 3 (utility)")


HYPERPARAMETERS = ("ssd_T", "ssd_eps", "mid_beta", "bido_lambda_x", "bido_lambda_y", "ls_alpha")


def table4_hyperparameters() -> pd.DataFrame:
    """Hyperparameters per setting: SSD (T, eps), MID beta, BiDO lambda_x/lambda_y, LS alpha."""
    return _grid("table4", [(s,) for s in SETTINGS], ["setting"], HYPERPARAMETERS, "Table 4 (hyperparameters)")


def table5_cost() -> pd.DataFrame:
    """Time overhead per defense and setting (as printed in Table 5)."""
    index = [(s, d) for s in SETTINGS for d in DEFENSES]
    return _grid("table5", index, ["setting", "defense"], ("time_overhead",), "Table 5 (cost)")


def table6_waterfill_time(num_classes: tuple[int, ...] = ()) -> pd.DataFrame:
    """Water-filling time per number of classes C at batch 256, per method/device; rows only for given C."""
    if any(int(c) < 2 for c in num_classes):
        raise ValueError(f"num_classes must all be >= 2, got {num_classes}")
    index = [(int(c), 256, m) for c in num_classes for m in ("cpu", "gpu")]
    return _grid("table6", index, ["num_classes", "batch_size", "device"], ("seconds",), "Table 6 (water-filling time)")


def coverage() -> pd.DataFrame:
    """How many values of each table are transcribed, so a chapter can say what it can compare."""
    rows = []
    for name, fn in [("table1", table1_attacks), ("table2", table2_attacks), ("table3", table3_utility),
                     ("table4", table4_hyperparameters), ("table5", table5_cost)]:
        df = fn()
        total = int(df.select_dtypes("number").size)
        rows.append({"table": name, "cells": total, "missing": df.attrs["missing"]})
    return pd.DataFrame(rows)
