"""Time a cold build of the whole book at a scale and record it in ``data/measurements/cold_build_<scale>.json``.

Usage::

    python benchmarks/cold_build.py --scale cpu --cache-dir /tmp/cold-cache          # build, then record
    python benchmarks/cold_build.py --scale cpu --summarize --report R.csv --walls G P H   # record a finished build
    python benchmarks/cold_build.py --summarize --report part1.jsonl part2.csv --walls G P H  # a build run in parts

The build is what ``make book`` does, from an empty cache (``--cache-dir`` must be empty or absent): the grid on
``--workers`` single-threaded processes, the runner over every page (``--page-jobs`` at once), then Jupyter Book;
each stage is timed by the
wall clock. The record charges each grid job to the first page that needs it
(:func:`ssdlib.reporting.build_time.build_record`); the re-run chapter shows it. ``--summarize`` records a build
run by hand with the same three commands (``--walls``: the seconds of the grid, the pages and the HTML, each summed
over the parts of a build that was stopped and resumed; the pages' own seconds come from the runner's records under
``executed/<scale>/``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from ssdlib.grid.plan import plan_book  # noqa: E402
from ssdlib.reporting import build_time  # noqa: E402
from ssdlib.reporting.runner import EXECUTED, toc_notebooks  # noqa: E402


def read_reports(paths) -> pd.DataFrame:
    """The grid's reports of one build (CSV, or the .jsonl journal of a grid that was stopped), one row per job: a
    job reported by several parts keeps the record in which it was computed."""
    frames = [pd.read_json(p, lines=True) if Path(p).suffix == ".jsonl" else pd.read_csv(p) for p in paths]
    report = pd.concat(frames, ignore_index=True)
    return report.sort_values("computed", ascending=False, kind="stable").drop_duplicates("job")


def _machine() -> str:
    cores = os.cpu_count() or 1
    return f"{platform.machine()}, {cores} CPU core{'s' if cores != 1 else ''}, no GPU used"


def _stage(cmd: list[str], log: Path, env: dict) -> float:
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {code}; see {log}")
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--page-jobs", type=int, default=None,
                        help="notebooks the runner executes at once (default: --workers, as `make book`)")
    parser.add_argument("--cache-dir", type=Path, help="an empty folder for the cold cache (build mode)")
    parser.add_argument("--summarize", action="store_true", help="record a finished build instead of running one")
    parser.add_argument("--report", type=Path, nargs="+",
                        help="the grid's report: its CSV, or the .jsonl journal of a grid that was stopped; several "
                             "for a build that ran in parts (default: in the cache folder)")
    parser.add_argument("--walls", type=float, nargs=3, metavar=("GRID", "PAGES", "HTML"),
                        help="with --summarize: wall-clock seconds of the three stages")
    parser.add_argument("--executed", type=Path, help="with --summarize: the runner's executed/<scale>/ folder of "
                        "the build (default: this checkout's)")
    parser.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    parser.add_argument("--how", default="", help="a sentence on how the build was run (shown in the book)")
    parser.add_argument("--out", type=Path, help="default: data/measurements/cold_build_<scale>.json")
    args = parser.parse_args(argv)
    args.page_jobs = args.workers if args.page_jobs is None else args.page_jobs
    if args.page_jobs < 1:
        parser.error(f"--page-jobs must be at least 1, got {args.page_jobs}")
    out = args.out or build_time.record_path(args.scale)
    if args.summarize:
        if args.walls is None or args.report is None:
            parser.error("--summarize needs --report and --walls")
        walls = dict(zip(("grid", "pages", "html"), args.walls))
    else:
        if args.cache_dir is None:
            parser.error("a cold build needs --cache-dir (an empty folder)")
        if args.cache_dir.exists() and any(args.cache_dir.iterdir()):
            parser.error(f"{args.cache_dir} is not empty: a cold build starts from an empty cache")
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SSD_CACHE_DIR": str(args.cache_dir)}
        report = (args.report or [args.cache_dir / f"grid-report-{args.scale}.csv"])[0]
        py = sys.executable
        walls = {
            "grid": _stage([py, "-m", "ssdlib.grid", "run", "--scale", args.scale, "--executor", "processes",
                            "--workers", str(args.workers), "--threads", "1", "--report", str(report)],
                           args.cache_dir / "grid.log", env),
            "pages": _stage([py, "-m", "ssdlib.reporting.runner", "--scale", args.scale, "--force",
                             "--jobs", str(args.page_jobs)],
                            args.cache_dir / "runner.log", env),
            "html": _stage([str(Path(py).with_name("jupyter-book")), "build", ".", "-W", "--keep-going"],
                           args.cache_dir / "html.log", env),
        }
        args.report = [report]
        args.how = args.how or (f"`python benchmarks/cold_build.py --scale {args.scale} --workers {args.workers} "
                                f"--page-jobs {args.page_jobs}` "
                                "into an empty cache")
    names = toc_notebooks()
    record = build_time.build_record(
        read_reports(args.report), plan_book(args.scale),
        build_time.page_seconds(args.executed or ROOT / EXECUTED / args.scale, names),
        walls, scale=args.scale, workers=args.workers, machine=_machine(), date=args.date, how=args.how,
        page_jobs=args.page_jobs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(build_time.build_markdown(record, args.scale))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
