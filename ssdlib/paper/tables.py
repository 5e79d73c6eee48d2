"""Every value of the paper's tables (both versions) and one accessor per subject, as tidy DataFrames.

The values live in ``data/tables.csv`` (generated once by ``data/build.py``), one row per printed number with
its version, table number, subject, setting, attack, row label, metric label, value and unit. Each accessor
returns one row per (setting, attack, defense) or similar key, one column per metric, and the columns
``version`` and ``table`` that name where every row was read; ``df.attrs["units"]`` maps each metric column to
its unit and ``df.attrs["source"]`` names the table(s). A metric that a version does not report is NaN (e.g.
``max_l1`` in the final version).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from .labels import ATTACK_METRICS, DEFENSE_FROM_PAPER, METRIC_COLUMNS, UTILITY_METRICS, check_version

SUBJECTS = ("soft_label_attacks", "hard_label_attacks", "rlb_attack", "utility", "hyperparameters", "timing",
            "solver_time", "q_estimator", "high_resolution", "purifier")
DATA_DIR = Path(__file__).resolve().parent / "data"
ATTACK_LABELS = ("Acc@1", "Acc@5", "delta_eval", "delta_face")
UTILITY_LABELS = ("Acc", "Avg L1", "Max L1")
HYPERPARAMETER_LABELS = ("beta", "lambda_x", "lambda_y", "alpha", "frozen_first_layers", "T", "eps")
TIMING_ROWS = {"Time without defense": "seconds_without", "Time with our defense": "seconds_with",
               "Percent of increased time": "increase_percent"}
Q_FROM = {"D_valid": "valid", "D_train": "train"}  # where q^y was estimated (submitted Appendix E)


@lru_cache(maxsize=None)
def _load() -> pd.DataFrame:
    df = pd.read_csv(DATA_DIR / "tables.csv", dtype=str, keep_default_na=False)
    df["table"] = df["table"].astype(int)
    df["value"] = df["value"].astype(float)
    df["defense"] = df["row"].map(DEFENSE_FROM_PAPER)  # NaN where a row is not a defense (timing, q^y, |Y|)
    return df[["version", "table", "subject", "setting", "attack", "row", "defense", "metric", "value", "unit"]]


@lru_cache(maxsize=None)
def _catalogue() -> pd.DataFrame:
    df = pd.read_csv(DATA_DIR / "catalogue.csv", dtype={"table": int, "n_values": int})
    return df


def values(version: str | None = None, subject: str | None = None, table: int | None = None) -> pd.DataFrame:
    """All transcribed values in long form (one row per printed number), optionally of one version/subject/table.

    Columns: version, table, subject, setting, attack ("" where the table has none), row (the paper's row
    label), defense (canonical name, NaN for rows that are not defenses), metric (the paper's label), value
    (float; percentages in percent), unit ("" where the paper prints none).
    """
    df = _load()
    if version is not None:
        df = df[df["version"] == check_version(version)]
    if table is not None:
        if version is None:
            raise ValueError("table numbers differ between versions: give version= with table=")
        if int(table) not in set(df["table"]):
            raise ValueError(f"the {version} version has no Table {table}; it has {sorted(set(df['table']))}")
        df = df[df["table"] == int(table)]
    if subject is not None:
        if subject not in SUBJECTS:
            raise ValueError(f"unknown subject {subject!r}; expected one of {SUBJECTS}")
        df = df[df["subject"] == subject]
    return df.reset_index(drop=True).copy()


def tables() -> pd.DataFrame:
    """The catalogue of both versions' tables: version, table, subject, title (our words), n_values."""
    return _catalogue().copy()


def table_numbers(subject: str) -> dict[str, tuple[int, ...]]:
    """The table numbers holding ``subject`` in each version, e.g. ``{"submitted": (10, 11), "iclr2025": (8,)}``."""
    cat = _catalogue()
    if subject not in SUBJECTS:
        raise ValueError(f"unknown subject {subject!r}; expected one of {SUBJECTS}")
    return {v: tuple(int(t) for t in cat[(cat["subject"] == subject) & (cat["version"] == v)]["table"])
            for v in ("submitted", "iclr2025")}


def _rows(subject: str, version: str, metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
    df = values(version)
    df = df[df["subject"] == subject]
    if df.empty:
        where = {v: n for v, n in table_numbers(subject).items() if n}
        raise ValueError(f"the {version} version of the paper has no {subject} table; tables: {where}")
    if metrics is not None:
        df = df[df["metric"].isin(metrics)]
    return df


def _wide(rows: pd.DataFrame, keys: list[str], columns: list[str], column_of: pd.Series) -> pd.DataFrame:
    """One row per (version, table, *keys) in the paper's order, one column per name in ``columns``."""
    rows = rows.assign(_col=column_of.loc[rows.index])
    index = ["version", "table", *keys]
    wide = rows.pivot(index=index, columns="_col", values="value")  # raises on a duplicated cell
    order = rows[index].drop_duplicates()
    # paper order: by the first appearance of each key value, first key first (setting, then attack, ...)
    ranks = [order[k].map({v: i for i, v in enumerate(dict.fromkeys(order[k]))}) for k in index]
    order = order.assign(**{f"_r{i}": r for i, r in enumerate(ranks)}).sort_values(
        [f"_r{i}" for i in range(len(index))], kind="stable")[index]
    out = order.merge(wide.reset_index(), on=index, how="left").reindex(columns=[*index, *columns])
    units = {}
    for col, unit in rows[["_col", "unit"]].drop_duplicates().itertuples(index=False):
        if col in units and units[col] != unit:
            raise ValueError(f"column {col} mixes units {units[col]!r} and {unit!r}")
        units[col] = unit
    out.attrs["units"] = units
    out.attrs["source"] = "; ".join(
        f"{v} version, Table {t} ({s})" for v, t, s in rows[["version", "table", "subject"]].drop_duplicates()
        .itertuples(index=False))
    return out.reset_index(drop=True)


def _metric_table(subject: str, version: str, labels: tuple[str, ...], keys: list[str],
                  columns: tuple[str, ...]) -> pd.DataFrame:
    rows = _rows(subject, check_version(version), labels)
    return _wide(rows, keys, list(columns), rows["metric"].map(METRIC_COLUMNS))


def soft_label_attacks(version: str = "submitted") -> pd.DataFrame:
    """Mirror and C2F against each defense in the three settings (Table 1 in both versions).

    Columns: version, table, setting, attack, defense, acc1, acc5 (%), delta_eval, delta_face (L2 feature
    distances of the evaluation model and of FaceNet).
    """
    return _metric_table("soft_label_attacks", version, ATTACK_LABELS, ["setting", "attack", "defense"],
                         ATTACK_METRICS)


def hard_label_attacks(version: str = "submitted") -> pd.DataFrame:
    """BREP and LOKT against each defense in the three settings (Table 2 in both versions); columns as
    :func:`soft_label_attacks`."""
    return _metric_table("hard_label_attacks", version, ATTACK_LABELS, ["setting", "attack", "defense"],
                         ATTACK_METRICS)


def rlb_attack(version: str = "submitted") -> pd.DataFrame:
    """RLB against each defense on IR-152/CelebA only (submitted Table 9, final Table 6); columns as
    :func:`soft_label_attacks`. Budgets differ: the submitted text attacks the first 10 classes x 5 images, the
    final version the first 100 labels x 1 image (shared/paper/iclr2025-notes.md)."""
    return _metric_table("rlb_attack", version, ATTACK_LABELS, ["setting", "attack", "defense"], ATTACK_METRICS)


def utility(version: str = "submitted") -> pd.DataFrame:
    """Utility of each defense in the three settings (Table 3 in both versions).

    Columns: version, table, setting, defense, acc (test accuracy, %), avg_l1, max_l1 (mean and largest L1
    change of the output vectors on the test set). The final version reports no Max L1 (NaN there) and calls
    its mean L1 change "Dist".
    """
    return _metric_table("utility", version, UTILITY_LABELS, ["setting", "defense"], UTILITY_METRICS)


def timing(version: str = "submitted") -> pd.DataFrame:
    """Inference time of 100 passes over a batch of 512 without and with SSD (submitted Table 5, final Table 4).

    Columns: version, table, setting, seconds_without, seconds_with (s), increase_percent (% as printed; the
    printed values are the recomputed ratios truncated, not rounded, to one decimal).
    """
    rows = _rows("timing", check_version(version))
    return _wide(rows, ["setting"], list(TIMING_ROWS.values()), rows["row"].map(TIMING_ROWS))


def solver_time(version: str = "submitted") -> pd.DataFrame:
    """GPU water-filling time for 256 problems per number of classes |Y| (submitted Table 6 only).

    Columns: version, table, num_classes, milliseconds, batch_size, device, setup (the table's setup as
    transcribed: synthetic rows softmax(10 s), s ~ N(0, I)).
    """
    rows = _rows("solver_time", check_version(version))
    num = rows["row"].str.extract(r"^\|Y\|=(\d+)$", expand=False)
    if num.isna().any():
        raise ValueError(f"unexpected solver-time rows {sorted(rows['row'][num.isna()])}")
    rows = rows.assign(num_classes=num.astype(int))
    out = _wide(rows, ["num_classes", "setting"], ["milliseconds"], rows["metric"].map({"time": "milliseconds"}))
    setup = out.pop("setting")
    batch = setup.str.extract(r"batch (\d+)", expand=False).astype(int)
    device = setup.str.extract(r"\b(GPU|CPU)\b", expand=False)
    out = out.assign(batch_size=batch, device=device, setup=setup)
    out.attrs.update(units={"milliseconds": "ms"}, source=f"{version} version, Table 6 (solver_time)")
    return out


def _q_rows(version: str, labels: tuple[str, ...]) -> pd.DataFrame:
    rows = _rows("q_estimator", check_version(version), labels)
    return rows.assign(q_from=rows["row"].map(Q_FROM))


def q_estimator_attacks(version: str = "submitted") -> pd.DataFrame:
    """Mirror and BREP on IR-152/CelebA with q^y estimated from D_valid or D_train (submitted Table 7 only).

    Columns: version, table, setting, attack, q_from ("valid" or "train"), acc1, acc5, delta_eval, delta_face.
    """
    rows = _q_rows(version, ATTACK_LABELS)
    return _wide(rows, ["setting", "attack", "q_from"], list(ATTACK_METRICS), rows["metric"].map(METRIC_COLUMNS))


def q_estimator_utility(version: str = "submitted") -> pd.DataFrame:
    """Utility on IR-152/CelebA with q^y from D_valid or D_train (submitted Table 8 only).

    Columns: version, table, setting, q_from, acc, avg_l1, max_l1.
    """
    rows = _q_rows(version, UTILITY_LABELS)
    return _wide(rows, ["setting", "q_from"], list(UTILITY_METRICS), rows["metric"].map(METRIC_COLUMNS))


def high_resolution_attacks(version: str = "submitted") -> pd.DataFrame:
    """Mirror at 224x224 against each defense (submitted Table 10: ResNet-152/FaceScrub, Inception-v3 evaluator;
    final Table 8: IR-152/CelebA, MaxViT evaluator); columns as :func:`soft_label_attacks`."""
    return _metric_table("high_resolution", version, ATTACK_LABELS, ["setting", "attack", "defense"],
                         ATTACK_METRICS)


def high_resolution_utility(version: str = "submitted") -> pd.DataFrame:
    """Utility at 224x224 (submitted Table 11, final Table 8; the final version has no Max L1: NaN); columns as
    :func:`utility`. The defenses' settings of these tables are in :func:`ssdlib.paper.hyperparameter_table`."""
    return _metric_table("high_resolution", version, UTILITY_LABELS, ["setting", "defense"], UTILITY_METRICS)


def purifier_attacks(version: str = "iclr2025") -> pd.DataFrame:
    """A CVAE purifier against SSD on IR-152/CelebA under Mirror, C2F, BREP, LOKT (final Table 7 only);
    columns as :func:`soft_label_attacks`, defense "purifier" or "ssd"."""
    return _metric_table("purifier", version, ATTACK_LABELS, ["setting", "attack", "defense"], ATTACK_METRICS)


def purifier_utility(version: str = "iclr2025") -> pd.DataFrame:
    """Utility of the purifier and of SSD on IR-152/CelebA (final Table 7 only); columns as :func:`utility`
    (max_l1 NaN: not reported)."""
    return _metric_table("purifier", version, UTILITY_LABELS, ["setting", "defense"], UTILITY_METRICS)


def hyperparameter_rows(version: str) -> pd.DataFrame:
    """The raw hyper-parameter values of a version (Table 4/5 and the high-resolution table), one per column."""
    check_version(version)
    rows = values(version)
    rows = rows[rows["subject"].isin(["hyperparameters", "high_resolution"])
                & rows["metric"].isin(HYPERPARAMETER_LABELS)]
    return _wide(rows, ["setting"], [METRIC_COLUMNS[m] for m in HYPERPARAMETER_LABELS],
                 rows["metric"].map(METRIC_COLUMNS))

