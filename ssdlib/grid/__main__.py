"""Command line of the grid: ``python -m ssdlib.grid plan|run --scale SCALE [--only NB ...] [-p NAME VALUE]``.

``plan`` prints the jobs behind each notebook (and with ``--json FILE`` writes them); ``run`` fills the cache with
them (``--executor local|processes|cuda|slurm|pbs|ADDRESS``, ``--workers N``, ``--threads N``) and writes a report
of every job (cached or computed, seconds, worker, error) as CSV, and each job as it finishes as one JSON line
beside it (``.jsonl``: a killed grid keeps what finished). The runner then renders the book from the cache:
``SSD_CACHE_FORBID=models,priors,... python -m ssdlib.reporting.runner --scale SCALE`` checks that it computes
nothing the grid should have.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..scales import SCALES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ssdlib.grid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("plan", "list the jobs behind the book (and their estimated cost)"),
                       ("run", "run the jobs, filling the cache")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--scale", default=os.environ.get("SCALE", "cpu"), choices=SCALES)
        p.add_argument("--only", nargs="*", default=None, help="notebook names (default: every one in _toc.yml)")
        p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                       help="override a notebook parameter, as the runner's -p (repeatable)")
        p.add_argument("--json", type=Path, default=None, help="also write the jobs as JSON to this file")
    sub.choices["plan"].add_argument("--no-estimate", action="store_true",
                                     help="only count the jobs (no step-time measurement)")
    run = sub.choices["run"]
    run.add_argument("--executor", default="local",
                     help="local (in-process, default), processes, cuda, slurm, pbs, or a scheduler address")
    run.add_argument("--workers", type=int, default=None,
                     help="worker processes (processes), GPUs (cuda) or batch jobs (slurm/pbs)")
    run.add_argument("--threads", type=int, default=None, help="torch threads per job (default $SSD_GRID_THREADS or 1)")
    run.add_argument("--report", type=Path, default=None,
                     help="CSV report of every job (default: grid-report-SCALE.csv in the cache folder); each "
                          "finished job is also appended to the .jsonl file beside it as it finishes")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..cache import cache_dir
    from ..reporting.runner import parse_value
    from .executors import GridError, run_grid
    from .plan import Plan, plan_book

    args = _parser().parse_args(argv)
    overrides = {k: parse_value(v) for k, v in args.param}
    try:
        plans = plan_book(args.scale, only=args.only, overrides=overrides)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    whole = Plan()
    for plan in plans.values():
        whole.merge(plan)
    if args.json:
        args.json.write_text(whole.to_json())
    if args.command == "plan":
        from .cost import describe
        print(describe(plans, whole, args.scale, with_estimate=not getattr(args, "no_estimate", False)))
        return 0
    print(f"[grid] {len(whole)} jobs at scale {args.scale}: {whole.counts()}", file=sys.stderr)
    report_path = args.report or cache_dir() / f"grid-report-{args.scale}.csv"
    try:
        report = run_grid(whole, args.executor, workers=args.workers, threads=args.threads,
                          journal=report_path.with_suffix(".jsonl"))
        code = 0
    except GridError as err:
        report, code = err.report, 1
        print(f"error: {err}", file=sys.stderr)
    report.drop(columns=["artifacts"]).to_csv(report_path, index=False)
    done = report[report.status == "ok"]
    print(f"[grid] {len(done)}/{len(report)} jobs ok ({int(done.cached.sum())} cached, "
          f"{int((~done.cached.astype(bool)).sum())} computed) in {report.attrs.get('wall_seconds', 0):.1f} s; "
          f"report: {report_path}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
