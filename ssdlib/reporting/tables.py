"""Results tables: shown without the index column or all-NaN columns, and written as CSV beside the executed
notebooks (``executed/<scale>/tables/<name>.csv``, with the scale and the date of the run in every row) so that
readers and scripts can load our numbers without parsing HTML; the runner publishes them with the book."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pandas as pd

TABLES = "tables"


def save_table(df: pd.DataFrame, name: str, *, scale: str, folder: str | os.PathLike = TABLES) -> Path:
    """Write ``df`` to ``folder/<name>.csv`` (relative to the notebook's working directory, i.e. beside the
    executed copy) with ``scale`` and ``run_date`` columns; return the path."""
    if not name or any(c in name for c in "/\\ "):
        raise ValueError(f"table name must be a plain file stem, got {name!r}")
    path = Path(folder) / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.reset_index(drop=not isinstance(df.index, pd.MultiIndex) and df.index.name is None)
    out = out.assign(scale=scale, run_date=dt.date.today().isoformat())
    tmp = path.with_suffix(".csv.tmp")
    out.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def side_by_side(df: pd.DataFrame, index: list[str], groups: dict[str, dict[str, str]]) -> pd.DataFrame:
    """``df`` re-laid for reading ours beside the paper: rows indexed by the ``index`` columns, two-level columns
    ``(quantity, source)`` from ``groups = {quantity: {source: column of df}}`` (e.g. ``{"Acc (%)": {"ours":
    "test_acc", "paper": "paper_acc"}}``), so each quantity's values sit next to each other."""
    missing = [c for c in index if c not in df] + [c for m in groups.values() for c in m.values() if c not in df]
    if missing:
        raise KeyError(f"side_by_side: no column(s) {', '.join(map(repr, missing))} in the table")
    columns = pd.MultiIndex.from_tuples([(g, src) for g, m in groups.items() for src in m])
    values = {(g, src): df[col].to_numpy() for g, m in groups.items() for src, col in m.items()}
    rows = pd.MultiIndex.from_frame(df[index]) if len(index) > 1 else pd.Index(df[index[0]])
    return pd.DataFrame(values, index=rows, columns=columns)


def show(df: pd.DataFrame, precision: int = 3, *, hide_index: bool | None = None,
         precisions: dict[str, int] | None = None, na_rep: str = "", formats: dict[str, str] | None = None):
    """A display of ``df`` for the book: all-NaN columns dropped, numbers rounded (``precisions`` per column, or
    per top-level label of two-level columns), no 0..n index, no wrapping of labels (a pandas Styler, which
    renders as a plain HTML table). A named index (e.g. from :func:`side_by_side`) is shown unless told not to;
    ``na_rep`` is what a missing value shows (say beside the table what it means); ``formats`` gives a format
    string per column (e.g. ``"{:.1e}"`` for errors near machine precision, which a fixed precision shows as 0)."""
    shown = df.dropna(axis=1, how="all")
    styler = shown.style.format(precision=precision, na_rep=na_rep)
    for key, digits in (precisions or {}).items():
        cols = [c for c in shown.columns if c == key or (isinstance(c, tuple) and c[0] == key)]
        if cols:
            styler = styler.format(precision=digits, na_rep=na_rep, subset=cols)
    for key, fmt in (formats or {}).items():
        cols = [c for c in shown.columns if c == key or (isinstance(c, tuple) and c[0] == key)]
        if cols:
            styler = styler.format(fmt, na_rep=na_rep, subset=cols)
    if hide_index is None:
        hide_index = all(name is None for name in shown.index.names)
    if hide_index:
        styler = styler.hide(axis="index")
    return styler.set_table_styles([{"selector": "th, td", "props": "white-space: nowrap; padding: 2px 6px; font-size: 0.92em;"},
                                    {"selector": "th.col_heading", "props": "text-align: center;"},
                                    {"selector": "th.row_heading", "props": "vertical-align: top; text-align: left;"}])
