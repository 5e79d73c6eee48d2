"""The paper's settings of every defense per setting and version, as plain data for the defenses' defaults.

Values come from the tables (submitted Table 4 and Table 11; final Table 5 and Table 8), read through
:mod:`ssdlib.paper.tables`; the two protocol choices that differ between versions (how SSD's entropy is measured,
how q^y is estimated) are stated in the text, not in a table, and are sourced in ``PROTOCOL``.
"""
from __future__ import annotations

import pandas as pd

from .labels import check_version, paper_setting
from .tables import hyperparameter_rows

HYPERPARAMETER_KEYS = ("mid_beta", "bido_lambda_x", "bido_lambda_y", "ls_alpha", "tl_frozen_fraction",
                       "ssd_T", "ssd_eps", "ssd_entropy", "ssd_q_estimator")

# ssd_entropy: "normalized" = H / log|Y| (eq. 12), "nats" = -sum f log f unnormalized.
# ssd_q_estimator: "single" = f(x') of one validation sample of class y; "valid_mean" = mean output over the
# validation samples of class y.
PROTOCOL = {
    "submitted": {"ssd_entropy": "normalized", "ssd_q_estimator": "single",
                  "source": "submitted version, Section 4.2: eq. (12) and Algorithm 1"},
    "iclr2025": {"ssd_entropy": "nats", "ssd_q_estimator": "valid_mean",
                 "source": "final version, Section 4.2 and Algorithm 1 as summarised in "
                           "shared/paper/iclr2025-notes.md (entropy not normalised, q^y the validation mean)"},
}


def hyperparameter_table(version: str = "submitted") -> pd.DataFrame:
    """One row per setting (the three main ones, then the high-resolution one) with the keys of
    ``HYPERPARAMETER_KEYS`` as columns, plus version and table (submitted: Table 4, Table 11 for 224x224;
    final: Table 5, Table 8 for 224x224). ``tl_frozen_fraction`` is the printed percentage / 100."""
    check_version(version)
    raw = hyperparameter_rows(version)
    out = raw.drop(columns="tl_frozen_percent").assign(tl_frozen_fraction=raw["tl_frozen_percent"] / 100,
                                                       **{k: PROTOCOL[version][k] for k in
                                                          ("ssd_entropy", "ssd_q_estimator")})
    out = out[["version", "table", "setting", *HYPERPARAMETER_KEYS]]
    units = {k: u for k, u in raw.attrs["units"].items() if k != "tl_frozen_percent"}
    out.attrs.update(units={**units, "tl_frozen_fraction": "fraction of layers (first layers frozen)"},
                     source=raw.attrs["source"] + f"; protocol: {PROTOCOL[version]['source']}")
    return out


def hyperparameters(setting: str, version: str = "submitted") -> dict:
    """The paper's settings for one setting and version, keyed by ``HYPERPARAMETER_KEYS``.

    ``setting`` is the paper's label ("IR-152/CelebA", ...), a project name ("celeba_ir152", "lfw_ir152",
    "lfw_vgg16") or the version's high-resolution setting. The submitted version's numbers come from Table 4
    (Table 11 at 224x224), the final version's from Table 5 (Table 8 at 224x224).

    >>> hp = hyperparameters("IR-152/CelebA")
    >>> hp["ssd_T"], hp["ssd_eps"], hp["ssd_entropy"], hp["ssd_q_estimator"]
    (0.03, 1.0, 'normalized', 'single')
    >>> hyperparameters("lfw_vgg16", "iclr2025")["ssd_eps"]
    0.8
    """
    label = paper_setting(setting)
    table = hyperparameter_table(version)
    row = table[table["setting"] == label]
    if len(row) != 1:
        raise ValueError(f"the {version} version has no hyper-parameters for setting {setting!r}; "
                         f"it has {list(table['setting'])}")
    rec = row.iloc[0]
    return {k: (float(rec[k]) if k not in ("ssd_entropy", "ssd_q_estimator") else str(rec[k]))
            for k in HYPERPARAMETER_KEYS}
