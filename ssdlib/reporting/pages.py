"""What the book's pages were built from, generated from the executed notebooks' runner records: the table of pages
of the re-run chapter (parameters, cache artifacts each depends on, execution times) and the intro's build banner.

The runner stores in each executed notebook (``metadata.ssd_runner``) its parameters, the seconds it ran, the
artifacts it loaded from or computed into the cache (``cache``: kind -> counts, via ``$SSD_CACHE_LOG``) and the
history of its runs (``runs``); :func:`write_pages` turns them into Markdown files under ``executed/`` that the book
includes, so no time or dependency in the book is typed by hand.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

__all__ = ["summarize_cache_log", "page_records", "pages_markdown", "banner_markdown", "write_pages",
           "PAGES_FILE", "BANNER_FILE"]

PAGES_FILE = "pages.md"
BANNER_FILE = "build.md"


def summarize_cache_log(lines) -> dict:
    """``{kind: {"loaded": n, "computed": n, "compute_s": seconds}}`` from the JSON lines of a cache log."""
    out: dict[str, dict] = {}
    for line in lines:
        line = line.strip()
        if not line:
            continue
        entry = json.loads(line)
        kind = entry.get("kind") or "other"
        slot = out.setdefault(kind, {"loaded": 0, "computed": 0, "compute_s": 0.0})
        if entry.get("cached"):
            slot["loaded"] += 1
        else:
            slot["computed"] += 1
            slot["compute_s"] = round(slot["compute_s"] + float(entry.get("seconds", 0.0)), 2)
    return out


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _inputs(params: dict) -> str:
    shown = {k: v for k, v in params.items() if k not in ("scale", "device", "data_root", "seed")}
    text = ", ".join(f"{k}={v}" for k, v in shown.items())
    return text if len(text) <= 160 else text[:157] + "..."


def page_records(names, executed: Path) -> pd.DataFrame:
    """One row per notebook of ``names`` published under ``executed/``: scale, date, parameters, cache kinds loaded
    and computed, the last run's seconds and the longest run on record (a cold run computes everything, so the
    longest run is the cold time as far as the record goes)."""
    rows = []
    for name in names:
        path = executed / f"{name}.ipynb"
        try:
            record = json.loads(path.read_text())["metadata"]["ssd_runner"]
        except (OSError, ValueError, KeyError):
            rows.append({"page": name, "scale": "not built"})
            continue
        runs = record.get("runs") or [{"seconds": record.get("seconds", 0.0), "date": record.get("date", "")}]
        longest = max(runs, key=lambda r: r.get("seconds", 0.0))
        cache = record.get("cache")
        unknown = "not recorded" if cache is None else "none"
        cache = cache or {}
        rows.append({"page": name, "scale": record.get("scale", ""), "date": runs[-1].get("date", ""),
                     "inputs": _inputs(record.get("parameters", {})),
                     "depends on": ", ".join(sorted(k for k, v in cache.items() if v.get("loaded"))) or unknown,
                     "computes": ", ".join(sorted(k for k, v in cache.items() if v.get("computed"))) or unknown,
                     "last run (s)": float(runs[-1].get("seconds", 0.0)),
                     "longest run (s)": float(longest.get("seconds", 0.0)), "runs on record": len(runs)})
    return pd.DataFrame(rows)


def pages_markdown(records: pd.DataFrame) -> str:
    """The re-run chapter's list of pages: one bullet per page, so long parameter lists wrap in the column."""
    lines = []
    for r in records.to_dict("records"):
        if r["scale"] == "not built":
            lines.append(f"- **{r['page']}**: not built yet.")
            continue
        n = int(r["runs on record"])
        when = f", {r['date']}" if r["date"] else ""
        lines.append(
            f"- **{r['page']}** (scale `{r['scale']}`{when}): inputs `{r['inputs'] or 'none'}`; loads from the "
            f"cache: {r['depends on']}; computed into it: {r['computes']}. Last run {_minutes(r['last run (s)'])}, "
            f"longest of {n} run{'s' if n != 1 else ''} on record {_minutes(r['longest run (s)'])}.")
    built = records[records.scale != "not built"]
    if len(built):
        total = built["longest run (s)"].sum()
        lines.append("")
        lines.append(f"The longest runs on record add up to {_minutes(total)} for the {len(built)} pages built; "
                     "a page whose record holds only cached re-runs understates its cold time.")
    return "\n".join(lines) + "\n"


def banner_markdown(records: pd.DataFrame) -> str:
    """The intro's banner: the scale(s) and dates of the pages its claims table reads."""
    built = records[records.scale != "not built"]
    if not len(built):
        return ":::{note}\nNo page of this book has been executed yet: run `make book`.\n:::\n"
    scales = sorted(set(built.scale))
    dates = sorted(d for d in built.date if d)
    when = dates[0] if dates and dates[0] == dates[-1] else f"between {dates[0]} and {dates[-1]}" if dates else ""
    scale_text = (f"scale **{scales[0]}**" if len(scales) == 1 else
                  "mixed scales (" + ", ".join(f"**{s}**" for s in scales) + "): compare with care")
    missing = len(records) - len(built)
    when = f"{'on ' if ' ' not in when else ''}{when} " if when else ""
    return (f":::{{note}}\nThis build's findings come from {len(built)} page{'s' if len(built) != 1 else ''} executed "
            f"{when}at {scale_text}"
            + (f"; {missing} page{'s are' if missing > 1 else ' is'} not built yet" if missing else "")
            + ". Each page's banner gives its own scale and date; see {doc}`rerun`.\n:::\n")


def write_pages(names, executed: Path) -> tuple[Path, Path]:
    """Write ``executed/pages.md`` and ``executed/build.md`` from the published notebooks' records, and
    ``executed/cold-build.md`` from the recorded cold build of the `cpu` book, the one a laptop user rebuilds
    (:mod:`ssdlib.reporting.build_time`)."""
    from .build_time import COLD_BUILD_FILE, build_markdown, load_record
    records = page_records(names, executed)
    executed.mkdir(parents=True, exist_ok=True)
    pages, banner = executed / PAGES_FILE, executed / BANNER_FILE
    pages.write_text(pages_markdown(records))
    banner.write_text(banner_markdown(records))
    (executed / COLD_BUILD_FILE).write_text(build_markdown(load_record("cpu"), "cpu"))
    return pages, banner
