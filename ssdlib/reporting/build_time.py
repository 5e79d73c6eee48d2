"""How long a cold build of the book takes, per page and in all, from a measured run (never typed).

A cold build (``benchmarks/cold_build.py``) fills an empty cache with the grid (``python -m ssdlib.grid run``, one row
per job in its report, with the seconds the job took on its worker), then the runner executes every page from that
cache (each page's seconds are in its runner record), then Jupyter Book renders the HTML. :func:`build_record` turns
those into one JSON-able record: each grid job is charged to the first page of the book that needs it, so a page's
cold time is the worker time of the jobs it brought in plus its own execution. :func:`build_markdown` writes the
re-run chapter's table and sentences from it, against the budget of :data:`BUDGET_HOURS`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

__all__ = ["BUDGET_HOURS", "first_pages", "page_seconds", "build_record", "build_table", "build_markdown",
           "record_path", "load_record", "COLD_BUILD_FILE"]

#: The whole `cpu` book, cold, on a 2-core machine: one working session rebuilds it (DEVELOPERS.md).
BUDGET_HOURS = {"cpu": 3.0}
#: The re-run chapter's include, written beside ``executed/pages.md``.
COLD_BUILD_FILE = "cold-build.md"


def record_path(scale: str, root: Path | None = None) -> Path:
    """Where the cold-build record of ``scale`` is kept: ``data/measurements/cold_build_<scale>.json``."""
    from ..utils import REPO_ROOT
    return (root or REPO_ROOT) / "data" / "measurements" / f"cold_build_{scale}.json"


def first_pages(plans: dict) -> dict[str, str]:
    """``{job name: page}``: the first page (in the order of ``plans``, the book's) whose plan holds the job.

    >>> from ssdlib.grid.jobs import Job
    >>> from ssdlib.grid.plan import Plan
    >>> a, b = Job("prior", {"n": 1}), Job("evaluator", {"n": 2})
    >>> first_pages({"prior": Plan([a]), "attack": Plan([a, b])}) == {a.name: "prior", b.name: "attack"}
    True
    """
    out: dict[str, str] = {}
    for page, plan in plans.items():
        for job in plan:
            out.setdefault(job.name, page)
    return out


def page_seconds(executed: Path, names) -> dict[str, float]:
    """The seconds of each page's last execution, from the runner's records under ``executed`` (a page not found
    there is left out)."""
    out = {}
    for name in names:
        try:
            out[name] = float(json.loads((executed / f"{name}.ipynb").read_text())["metadata"]["ssd_runner"]["seconds"])
        except (OSError, ValueError, KeyError):
            continue
    return out


def build_record(report: pd.DataFrame, plans: dict, render: dict[str, float], walls: dict[str, float], *,
                 scale: str, workers: int, machine: str, date: str, how: str = "", page_jobs: int = 1) -> dict:
    """One cold build as a JSON-able dict: per page the grid jobs it brought in (those computed, not found in the
    cache), their worker seconds and its own execution seconds; ``walls``: the wall-clock seconds of the stages
    (``grid``, ``pages``, ``html``); ``page_jobs``: the pages the runner executed at once. Raises if the report
    names a job of no plan, or if a stage is missing."""
    missing = {"grid", "pages", "html"} - set(walls)
    if missing:
        raise ValueError(f"walls needs the wall-clock seconds of every stage; missing: {sorted(missing)}")
    owner = first_pages(plans)
    unknown = sorted(set(report["job"]) - set(owner))
    if unknown:
        raise ValueError(f"{len(unknown)} jobs of the report are in no page's plan, e.g. {unknown[:3]}")
    failed = report[report["status"] != "ok"]
    computed = report[(report["status"] == "ok") & (report["computed"] > 0)]
    pages = []
    for page in plans:
        mine = computed[computed["job"].map(owner) == page]
        pages.append({"page": page, "jobs": int(len(mine)), "grid_s": round(float(mine["seconds"].sum()), 1),
                      "render_s": round(float(render[page]), 1) if page in render else None})
    kinds = computed.groupby("kind")["seconds"].agg(["count", "sum"])
    return {"scale": scale, "date": date, "machine": machine, "workers": int(workers), "how": how,
            "page_jobs": int(page_jobs),
            "walls": {k: round(float(v), 1) for k, v in walls.items()},
            "failed_jobs": int(len(failed)), "cached_jobs": int((report["computed"] == 0).sum()),
            "kinds": {k: {"jobs": int(r["count"]), "seconds": round(float(r["sum"]), 1)} for k, r in kinds.iterrows()},
            "pages": pages}


def build_table(record: dict) -> pd.DataFrame:
    """Per page: grid jobs it brought in, their worker minutes, its execution minutes and the sum."""
    frame = pd.DataFrame(record["pages"])
    frame["grid (min)"] = frame.pop("grid_s") / 60
    frame["page run (min)"] = frame.pop("render_s").astype(float) / 60
    frame["cold (min)"] = frame["grid (min)"] + frame["page run (min)"].fillna(0)
    return frame.rename(columns={"jobs": "grid jobs"})


def _hm(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def build_markdown(record: dict | None, scale: str) -> str:
    """The re-run chapter's account of the cold build of ``scale``: the wall time of each stage against the budget,
    then one line per page (worker time of the grid jobs it brought in, its own run)."""
    if record is None:
        return f"No cold build at scale `{scale}` is on record (`benchmarks/cold_build.py --scale {scale}` makes one).\n"
    walls = record["walls"]
    total = walls["grid"] + walls["pages"] + walls["html"]
    jobs = int(record.get("page_jobs", 1))
    together = f", {jobs} at a time," if jobs > 1 else ""
    budget = BUDGET_HOURS.get(record["scale"])
    verdict = ("" if budget is None else
               f" The budget is {budget:g} hours: the build {'fits' if total <= budget * 3600 else 'does not fit'} "
               f"({100 * total / (budget * 3600):.0f} % of it).")
    lines = [
        f"A cold build at scale `{record['scale']}` on {record['date']} ({record['machine']}), from an empty cache: "
        f"**{_hm(total)}** in all. The grid computed {sum(k['jobs'] for k in record['kinds'].values()):,} jobs on "
        f"{record['workers']} single-threaded worker processes in {_hm(walls['grid'])}"
        + (f" ({record['failed_jobs']} failed)" if record["failed_jobs"] else "")
        + f"; the pages then ran from that cache{together} in {_hm(walls['pages'])}, and the HTML took "
        f"{_hm(walls['html'])}." + verdict, "",
        "Where the time went, page by page: *grid* is the worker time of the jobs the page is the first to need "
        f"({record['workers']} workers share the wall clock), *page* its own run"
        + (" (runs overlap)." if jobs > 1 else "."), ""]
    table = build_table(record)
    for r in table.to_dict("records"):
        page_run = "not run" if pd.isna(r["page run (min)"]) else f"{r['page run (min)']:.1f} min"
        lines.append(f"- **{r['page']}**: grid {r['grid (min)']:.1f} min ({r['grid jobs']} jobs), page {page_run}")
    kinds = ", ".join(f"{k} {v['seconds'] / 60:.0f} min ({v['jobs']})" for k, v in
                      sorted(record["kinds"].items(), key=lambda kv: -kv[1]["seconds"]))
    lines += ["", f"Worker time by kind of job (jobs): {kinds}."]
    if record.get("how"):
        lines += ["", f"How it was run: {record['how']}"]
    return "\n".join(lines) + "\n"


def load_record(scale: str, root: Path | None = None) -> dict | None:
    """The cold-build record of ``scale``, or None when there is none."""
    path = record_path(scale, root)
    return json.loads(path.read_text()) if path.is_file() else None
