"""The SSD paper's own numbers and settings, as data with their source, so chapters can set ours beside them.

What it holds: every value of the tables of two versions of the paper (930 values), the paper's hyper-parameters
per setting, Section 5.3's CMI values, the numeric claims of the prose with whether they match the tables, the
facts of the authors' released code, and one mapping from the paper's labels to this project's names.

The two versions (``version=`` argument, default ``"submitted"``):

- ``"submitted"``: the anonymous version submitted for review, this project's specification (shared/paper/
  ssd-paper.txt, Tables 1-11, 473 values).
- ``"iclr2025"``: the final ICLR 2025 version (Zhuang et al.; 457 values), with other numbers, other
  hyper-parameters and other table numbers.

Table numbers per subject (submitted -> final): soft-label attacks 1 -> 1, hard-label attacks 2 -> 2,
utility 3 -> 3 (no Max L1 in the final one), hyper-parameters 4 -> 5, timing 5 -> 4, solver time per |Y| 6 -> -,
q^y from D_valid vs D_train 7, 8 -> -, RLB 9 -> 6, high resolution 10, 11 -> 8, purifier - -> 7.
:func:`tables` lists them, :func:`table_numbers` answers per subject.

Rule: every value carries its source. Table values carry version, table number and subject (columns of every
DataFrame here, and ``df.attrs["source"]``); every other fact names its source beside it (``PAPER["sources"]``,
``AUTHORS_CODE_SOURCES``, ``PROTOCOL[version]["source"]``, :func:`section53_cmi`'s columns). The values were
transcribed into ``data/*.csv`` by ``data/build.py`` from shared/paper/*.csv; the package never reads
shared/paper, and ``tests/test_paper.py`` compares every value with it when it is present.
"""
from __future__ import annotations

from .hyperparameters import HYPERPARAMETER_KEYS, PROTOCOL, hyperparameter_table, hyperparameters
from .labels import (ATTACK_METRICS, DEFENSE_FROM_PAPER, DEFENSE_TITLES, DEFENSES, HARD_LABEL_ATTACKS,
                     HIGH_RESOLUTION_SETTINGS, METRIC_COLUMNS, PAPER_DEFENSE, PAPER_SETTING, SETTING_FROM_PAPER,
                     SETTING_TITLES, SETTINGS, SOFT_LABEL_ATTACKS, UTILITY_METRICS, VERSIONS, paper_defense,
                     paper_setting, project_defense, project_setting)
from .released_code import AUTHORS_CODE, AUTHORS_CODE_SOURCES
from .tables import (SUBJECTS, hard_label_attacks, high_resolution_attacks, high_resolution_utility,
                     purifier_attacks, purifier_utility, q_estimator_attacks, q_estimator_utility, rlb_attack,
                     soft_label_attacks, solver_time, table_numbers, tables, timing, utility, values)
from .text import section53_cmi, text_claims, text_disagreements

PAPER = {
    "title": "Stealthy Shield Defense: A Conditional Mutual Information-Based Approach against "
             "Black-Box Model Inversion Attacks",
    "authors": ("Tianqu Zhuang", "Hongyao Yu", "Yixiang Qiu", "Hao Fang", "Bin Chen", "Shu-Tao Xia"),
    "venue": "ICLR 2025",
    "openreview_id": "p0DjhjPXl3",
    "code": "https://github.com/ZhuangQu/Stealthy-Shield-Defense",
    "image_size": 64,
    "private_classes": {"CelebA": 1000, "FaceScrub": 530},
    "sources": {
        "title, authors, venue, openreview_id": "the bibtex entry and links of readme.md in the released code "
                                                "repository (github.com/ZhuangQu/Stealthy-Shield-Defense)",
        "code": "the same repository",
        "private_classes": "submitted version, Section 5.1 (Datasets: FaceScrub consists of 530 identities; of "
                           "CelebA the 1000 identities with the most images)",
        "image_size": "submitted version, Section 5.1 (all images cropped and resized to 64x64); the final "
                      "version too (shared/paper/iclr2025-notes.md)",
    },
}

__all__ = [
    "PAPER", "VERSIONS", "SUBJECTS", "SETTINGS", "DEFENSES", "SOFT_LABEL_ATTACKS", "HARD_LABEL_ATTACKS",
    "HIGH_RESOLUTION_SETTINGS", "ATTACK_METRICS", "UTILITY_METRICS", "METRIC_COLUMNS",
    "DEFENSE_FROM_PAPER", "PAPER_DEFENSE", "DEFENSE_TITLES", "SETTING_FROM_PAPER", "PAPER_SETTING",
    "SETTING_TITLES", "project_defense", "paper_defense", "project_setting", "paper_setting",
    "values", "tables", "table_numbers", "soft_label_attacks", "hard_label_attacks", "rlb_attack", "utility",
    "timing", "solver_time", "q_estimator_attacks", "q_estimator_utility", "high_resolution_attacks",
    "high_resolution_utility", "purifier_attacks", "purifier_utility",
    "HYPERPARAMETER_KEYS", "PROTOCOL", "hyperparameter_table", "hyperparameters",
    "AUTHORS_CODE", "AUTHORS_CODE_SOURCES", "section53_cmi", "text_claims", "text_disagreements",
]
