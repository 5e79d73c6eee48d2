"""Numbers the paper states in its prose: Section 5.3's CMI values and every numeric claim with its check.

Only the submitted version has them (the final version dropped the in-text numbers of Sections 5.2-5.3, per
shared/paper/iclr2025-notes.md). ``data/text_claims.csv`` is a verbatim copy of ssd-paper-text-claims.csv: each
claim, the table value it should match and whether it does.
"""
from __future__ import annotations

from functools import lru_cache

import pandas as pd

from .tables import DATA_DIR

# Section 5.3 / Figure 1 of the submitted version: CMI of VGG-16/FaceScrub's outputs, computed "by (Yang et al.,
# 2024)"; the paper states no unit.
_SECTION53_CMI = (
    ("private test samples, correctly classified", "Figure 1(a)-(b)", "none", 0.21),
    ("private test samples, correctly classified", "Figure 1(a)-(b)", "ssd", 0.14),
    ("attacker's samples from Mirror's initial phase", "Figure 1(c)-(d)", "none", 4.02),
    ("attacker's samples from Mirror's initial phase", "Figure 1(c)-(d)", "ssd", 1.96),
)


def section53_cmi() -> pd.DataFrame:
    """Section 5.3's CMI values (submitted version): VGG-16/FaceScrub, without defense and with SSD.

    Columns: version, section, figure, setting, samples, defense, cmi, unit (None: not stated), method.
    """
    df = pd.DataFrame(_SECTION53_CMI, columns=["samples", "figure", "defense", "cmi"])
    df.insert(0, "setting", "VGG-16/FaceScrub")
    df.insert(0, "section", "5.3")
    df.insert(0, "version", "submitted")
    df["unit"] = None
    df["method"] = "as in Yang et al. (2024), cited by the paper; unit not stated"
    return df[["version", "section", "figure", "setting", "samples", "defense", "cmi", "unit", "method"]]


@lru_cache(maxsize=None)
def _claims() -> pd.DataFrame:
    return pd.read_csv(DATA_DIR / "text_claims.csv", dtype=str, keep_default_na=False)


def text_claims() -> pd.DataFrame:
    """Every numeric claim of the submitted version's prose (Sections 5.2, 5.3, Appendices D, E).

    Columns: section, claim (a paraphrase), value_in_text, table_value (what the table says, with its number),
    consistent ("yes", "no", "partly", "n/a" where no table holds the value), note. All text, as transcribed.
    """
    return _claims().copy()


def text_disagreements() -> pd.DataFrame:
    """The claims of :func:`text_claims` whose text disagrees with the paper's own tables (consistent "no" or
    "partly"): 52.3 vs 52.4, the C2F ratios, 82.9 vs 83.0, 1.7 vs 1.8, the Avg L1 ratio range, 2.9 vs 3.0."""
    df = _claims()
    return df[df["consistent"].isin(["no", "partly"])].reset_index(drop=True)
