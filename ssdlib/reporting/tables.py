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


def show(df: pd.DataFrame, precision: int = 3, *, hide_index: bool = True):
    """A display of ``df`` for the book: all-NaN columns dropped, numbers rounded, no 0..n index, no wrapping
    of labels (a pandas Styler, which renders as a plain HTML table)."""
    shown = df.dropna(axis=1, how="all")
    styler = shown.style.format(precision=precision, na_rep="")
    if hide_index:
        styler = styler.hide(axis="index")
    return styler.set_table_styles([{"selector": "th, td", "props": "white-space: nowrap; padding: 2px 8px;"}])
