"""Table 6 solver benchmark: waterfill vs the sort-based reference and the memory-traffic floor.

Prints the sweep over class counts and, at C=1e5 (B=256 by default), the two ratios the project promises:
waterfill >= 30x faster than waterfill_sort on CPU, and waterfill within 5x of the memory floor.  All ratios are
measured within this run.  Example:  python benchmarks/bench_solver.py --sizes 1e1 1e2 1e3 1e4 1e5 1e6
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ssdlib.experiments.solver import DEFAULT_CAPS, METHODS, table6_sweep  # noqa: E402
from ssdlib.utils import resolve_device  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["1e1", "1e2", "1e3", "1e4", "1e5", "1e6"],
                    help="class counts C (floats like 1e5 accepted)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    ap.add_argument("--repeat", type=int, default=3, help="at least this many timed runs per cell")
    ap.add_argument("--stat", choices=["min", "median"], default="min", help="statistic over the timed runs")
    ap.add_argument("--min-time", type=float, default=0.5, help="repeat a cell until its runs total this (s)")
    ap.add_argument("--eps", type=float, default=0.5)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--methods", nargs="+", default=["waterfill", "waterfill_validated", "waterfill_sort"],
                    choices=sorted(METHODS))
    ap.add_argument("--cap", nargs=2, action="append", metavar=("METHOD", "ELEMENTS"), default=[],
                    help=f"skip METHOD above B*C > ELEMENTS (defaults {DEFAULT_CAPS})")
    ap.add_argument("--target-size", type=float, default=1e5, help="C at which the promised ratios are checked")
    ap.add_argument("--out", default=None, help="write the table and ratios as JSON")
    args = ap.parse_args(argv)

    try:
        sizes = [int(float(s)) for s in args.sizes]
    except ValueError:
        ap.error(f"--sizes must be numbers, got {args.sizes}")
    if args.batch < 1 or args.repeat < 1:
        ap.error("--batch and --repeat must be >= 1")
    target = int(args.target_size)
    if target not in sizes:
        sizes.append(target)
    caps = {m: float(v) for m, v in args.cap}
    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    print(f"device={device} dtype={args.dtype} B={args.batch} eps={args.eps} torch threads={torch.get_num_threads()} "
          f"timing: {args.stat} of >= {args.repeat} runs and >= {args.min_time} s")

    df = table6_sweep(sorted(set(sizes)), B=args.batch, methods=args.methods, device=device, eps=args.eps,
                      dtype=dtype, repeat=args.repeat, caps=caps, progress=True, stat=args.stat,
                      min_time=args.min_time)
    with __import__("pandas").option_context("display.width", 200, "display.max_columns", 20):
        print(df.to_string(index=False, float_format=lambda x: f"{x:.4g}"))

    row = df[df["C"] == target].iloc[0]
    speedup = float(row.get("sort_over_waterfill", math.nan))
    floor_ratio = float(row.get("waterfill_over_floor", math.nan))
    print(f"\nat C={target}, B={args.batch} on {device}:")
    print(f"  waterfill_sort / waterfill = {speedup:.1f}x   (promise: >= 30x on CPU) -> "
          f"{'met' if speedup >= 30 else 'NOT met'}")
    print(f"  waterfill / memory floor   = {floor_ratio:.2f}x  (promise: <= 5x) -> "
          f"{'met' if floor_ratio <= 5 else 'NOT met'}")
    if args.out:
        out = {"device": str(device), "dtype": args.dtype, "batch": args.batch, "eps": args.eps, "stat": args.stat,
               "table": json.loads(df.to_json(orient="records")),
               "target_C": target, "sort_over_waterfill": speedup, "waterfill_over_floor": floor_ratio}
        Path(args.out).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
