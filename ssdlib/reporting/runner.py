"""Execute the book's notebooks with papermill at a scale profile, skipping those already up to date.

Usage: ``python -m ssdlib.reporting.runner --scale cpu [--only solver] [-p name value] [--force] [--jobs 2]
[--dry-run]``.
The order and the executed copies come from ``_toc.yml`` (entries under ``executed/``); parameters come from
``notebooks/scales.yml`` (``common``, then the notebook's own entry) plus ``-p`` overrides. ``--dry-run`` executes
the scale's code paths with every loop capped (:data:`ssdlib.scales.DRY_RUN_CAPS`) on CPU, into
``executed/dry-run/`` and a cache of its own, never into the book, and ends with a summary of every notebook.
``--jobs N`` executes up to N notebooks at once, each in a process of its own and after the pages it ``needs``.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

import yaml

from ..cache import LOG_ENV, temporary_path
from ..scales import DRY_RUN_CAPS, DRY_RUN_ENV, SCALES, cap, dry_run
from ..utils import REPO_ROOT
from .pages import summarize_cache_log, write_pages

EXECUTED = "executed"
#: Where ``--dry-run`` writes its executed copies (under the git-ignored ``executed/``, outside the book's pages).
DRY_RUN_DIR = Path(EXECUTED) / "dry-run"


def toc_pages(toc_path: Path | None = None) -> list[str]:
    """Every page of ``_toc.yml`` in book order (``root`` and ``file`` entries, e.g. ``executed/theory``)."""
    toc = yaml.safe_load((toc_path or REPO_ROOT / "_toc.yml").read_text())
    pages: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    pages.append(node[key])
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return pages


def toc_notebooks(toc_path: Path | None = None) -> list[str]:
    """Names of the executed notebooks in book order (toc entries ``executed/<name>``)."""
    return [page.split("/", 1)[1].removesuffix(".ipynb") for page in toc_pages(toc_path)
            if page.startswith(EXECUTED + "/")]


def execution_order(names, profiles: dict) -> list[str]:
    """``names`` in book order, except that a notebook runs after the notebooks its profile ``needs`` (those among
    ``names``): a results page placed first in the book reads runs that later pages compute."""
    names = list(names)
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name):
        if name in order:
            return
        if name in visiting:
            raise ValueError(f"notebooks/scales.yml: a cycle of `needs` through {name!r}")
        visiting.add(name)
        for need in (profiles.get(name) or {}).get("needs") or []:
            if need in names:
                visit(need)
        visiting.discard(name)
        order.append(name)

    for name in names:
        visit(name)
    return order


def run_parallel(order, profiles: dict, jobs: int, run: Callable[[str], None]) -> dict[str, str]:
    """Call ``run(name)`` for every name of ``order`` on up to ``jobs`` threads, each once the names it ``needs``
    (among ``order``) have succeeded, starting the ready names in ``order``; return each name's outcome: "ok",
    "failed: <error>", or "skipped: needs <name>" when a page it needs did not succeed (the others still run).

    A page whose profile says ``exclusive: true`` (one that times itself) runs alone: it starts once nothing runs,
    and nothing starts beside it."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    order = list(order)
    needs = {n: [m for m in (profiles.get(n) or {}).get("needs") or [] if m in order] for n in order}
    outcome: dict[str, str] = {}
    running: dict = {}

    def exclusive(name):
        return bool((profiles.get(name) or {}).get("exclusive"))

    with ThreadPoolExecutor(jobs) as pool:
        while len(outcome) < len(order):
            for name in order:
                if name in outcome or name in running.values():
                    continue
                blocked = [m for m in needs[name] if outcome.get(m, "ok") != "ok"]
                if blocked:
                    outcome[name] = f"skipped: needs {blocked[0]}"
                elif len(running) < jobs and all(m in outcome for m in needs[name]):
                    if any(exclusive(n) for n in running.values()) or (exclusive(name) and running):
                        break  # book order: nothing overtakes a page that waits to run alone
                    running[pool.submit(run, name)] = name
            if not running:
                left = [n for n in order if n not in outcome]
                if left:
                    raise ValueError(f"a cycle of `needs` through {left[0]!r}")
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                err = future.exception()
                outcome[name] = "ok" if err is None else f"failed: {type(err).__name__}: {err}"
    return outcome


def _run_in_process(name: str, scale: str, args: list[str], log_dir: Path) -> None:
    """Execute one notebook with this runner in a process of its own (its own kernel environment and cache log),
    its output into ``log_dir/<name>.log``; raise if it fails, with the log's last lines."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, "-m", "ssdlib.reporting.runner", "--scale", scale, "--only", name,
                                "--mixed", "--no-index", *args], stdout=out, stderr=subprocess.STDOUT,
                               cwd=REPO_ROOT)
    lines = log.read_text(errors="replace").splitlines()
    if code:
        raise RuntimeError(f"exit status {code}; the log {log} ends with:\n" + "\n".join(lines[-15:]))
    print(next((line for line in reversed(lines) if line.startswith(f"[runner] {name}:")),
               f"[runner] {name}: done"), flush=True)


def load_profiles(path: Path | None = None) -> dict:
    """The scale profiles: ``{notebook: {"source": ..., scale: {param: value}}}`` plus ``common``."""
    return yaml.safe_load((path or REPO_ROOT / "notebooks" / "scales.yml").read_text()) or {}


def parameters_for(name: str, scale: str, profiles: dict, overrides: dict | None = None) -> dict:
    """Parameters injected into notebook ``name`` at ``scale``: common, its own ``parameters`` (any scale), its
    own for ``scale``, then overrides.

    >>> profiles = {"common": {"cpu": {"seed": 0}}, "solver": {"parameters": {"batch": 64}, "cpu": {"batch": 256}}}
    >>> parameters_for("solver", "cpu", profiles, overrides={"seed": 1})
    {'scale': 'cpu', 'seed': 1, 'batch': 256}
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {SCALES}")
    entry = profiles.get(name) or {}
    params = {"scale": scale}
    params.update((profiles.get("common") or {}).get(scale) or {})
    params.update(entry.get("parameters") or {})
    params.update(entry.get(scale) or {})
    params.update(overrides or {})
    # loop counts capped in the dry run, and one setting per architecture; else unchanged
    return {k: one_per_architecture(k, cap(k, v)) for k, v in params.items()}


#: Parameters that list settings (``attack_settings`` maps an attack to such a list).
SETTING_LISTS = ("settings", "dp_settings", "attack_settings")


def one_per_architecture(key: str, value):
    """In the dry run, a list of settings (``SETTING_LISTS``) keeps the first setting of each architecture: with the
    identities capped, two settings of one architecture differ only in their data set, which the data, evaluation
    and target pages of every setting still load. Unchanged otherwise."""
    if not dry_run() or key not in SETTING_LISTS:
        return value
    if isinstance(value, dict):
        return {k: one_per_architecture("settings", v) for k, v in value.items()}
    if not isinstance(value, (list, tuple)):
        return value
    from ..experiments.settings import setting
    kept = {}
    for name in value:
        kept.setdefault(setting(name).family, name)
    return type(value)(kept.values())


def capped_defaults(source: Path) -> dict:
    """In the dry run, the notebook's own default parameters that are loop counts, capped (a default is not in
    scales.yml, so the runner injects its capped value); ``{}`` otherwise."""
    if not dry_run():
        return {}
    import papermill as pm
    capped = {}
    for name, spec in pm.inspect_notebook(str(source)).items():
        if name in DRY_RUN_CAPS or name in SETTING_LISTS:
            value = parse_value(spec["default"])
            reduced = one_per_architecture(name, cap(name, value))
            if reduced != value:
                capped[name] = reduced
    return capped


def source_of(name: str, profiles: dict) -> Path:
    """The source notebook of an executed copy (``source:`` in scales.yml, else the same name)."""
    source = (profiles.get(name) or {}).get("source", name)
    path = REPO_ROOT / "notebooks" / f"{source}.ipynb"
    if not path.exists():
        raise FileNotFoundError(f"notebook source {path} for toc entry {EXECUTED}/{name} does not exist")
    return path


def library_digest() -> str:
    """Hash of the ssdlib sources, so an executed notebook is redone when the library changes."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "ssdlib").rglob("*.py")):
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def environment(params: dict) -> dict:
    """What else an executed copy depends on: the data root the loaders read (pointing ``SSD_DATA_ROOT`` at the
    full CelebA must re-execute), the torch version and the device the notebook runs on."""
    import torch

    from ..utils import data_root
    device = params.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return {"data_root": str(data_root(params.get("data_root")).resolve()), "torch": torch.__version__,
            "device": str(device), **({"dry_run": True} if dry_run() else {})}


def run_digest(source: Path, params: dict, env: dict | None = None) -> str:
    """Hash of a notebook's source, its parameters, the library sources and its :func:`environment`."""
    blob = json.dumps({"nb": source.read_text(), "params": params, "lib": library_digest(),
                       "env": environment(params) if env is None else env}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _recorded(path: Path) -> dict:
    """The runner's record (``metadata.ssd_runner``) of an executed copy, or ``{}``."""
    try:
        return json.loads(path.read_text())["metadata"].get("ssd_runner", {}) or {}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}


def _recorded_digest(path: Path) -> str | None:
    return _recorded(path).get("digest")


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def strip_widgets(nb: dict) -> dict:
    """Drop widget outputs (tqdm progress bars) and widget state: the static book cannot run them."""
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb.get("cells", []):
        if cell.get("outputs"):
            cell["outputs"] = [o for o in cell["outputs"] if WIDGET_MIME not in o.get("data", {})]
    return nb


def parse_value(text: str):
    """Read a ``-p`` value as a Python literal when it is one (numbers, lists, None), else as a string; a list or
    mapping is also read as YAML, as in ``scales.yml`` (``[lfw_ir152]``), never silently as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    if text.lstrip()[:1] in ("[", "{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"-p value {text!r} is neither a Python literal nor YAML: {err}") from None
    return text


def _markdown(text: str, tag: str, number: int) -> dict:
    """A markdown cell the runner adds, with a cell id of its own (nbformat 4.5 requires ids)."""
    return {"cell_type": "markdown", "id": f"{tag}-{number}", "metadata": {"tags": [tag]}, "source": text}


def annotate(nb: dict, name: str, scale: str, seconds: float, title: str | None = None) -> dict:
    """Page furniture of an executed notebook: its title (one per setting for shared sources), a banner with the
    scale, date and re-run command, and labels on the default and the injected parameter cells."""
    cells = nb["cells"]
    if title and cells and cells[0]["cell_type"] == "markdown":
        lines = "".join(cells[0]["source"]).split("\n")
        if lines and lines[0].startswith("# "):
            cells[0]["source"] = "\n".join([f"# {title}"] + lines[1:])
    date = time.strftime("%Y-%m-%d")
    banner = (f":::{{note}}\nThis page was built at scale **{scale}** on {date} ({seconds:.0f} s of execution). "
              f"Re-run it with `python -m ssdlib.reporting.runner --scale {scale} --only {name}` and change a "
              f"parameter with `-p NAME VALUE`; see {{doc}}`../book/rerun`.\n:::")
    out = []
    for i, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if "parameters" in tags:
            out.append(_markdown("**Default parameters** of this notebook (what a live Jupyter session uses):",
                                 "ssd-label", i))
        if "injected-parameters" in tags:
            out.append(_markdown(f"**Parameters of this build**, injected by the runner from "
                                 f"`notebooks/scales.yml` (scale `{scale}`) and `-p` overrides; they replace "
                                 "the defaults above:", "ssd-label", i))
        out.append(cell)
        if i == 0:
            out.append(_markdown(banner, "ssd-banner", i))
    nb["cells"] = out
    return nb


def publish_tables(scale: str) -> list[Path]:
    """Copy the CSV tables written by the notebooks of ``scale`` to ``executed/tables/``, where the book links them
    (each copy replaces its file at once: notebooks run with ``--jobs`` publish side by side)."""
    src = REPO_ROOT / EXECUTED / scale / "tables"
    dst = REPO_ROOT / EXECUTED / "tables"
    copied = []
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        for path in sorted(src.glob("*.csv")):
            tmp = temporary_path(dst / path.name)
            shutil.copyfile(path, tmp)
            os.replace(tmp, dst / path.name)
            copied.append(dst / path.name)
    return copied


def execute(name: str, scale: str, *, overrides: dict | None = None, force: bool = False,
            publish: bool = True, profiles: dict | None = None, root: Path | None = None) -> tuple[bool, float]:
    """Execute one notebook into ``<root>/<scale>/`` (root: ``executed/``); return (ran, seconds). Raises on the
    first failing cell.

    ``publish`` copies the result to ``executed/<name>.ipynb``, the copy the book renders.
    """
    import papermill as pm

    profiles = load_profiles() if profiles is None else profiles
    source = source_of(name, profiles)
    params = {**capped_defaults(source), **parameters_for(name, scale, profiles, overrides)}
    title = (profiles.get(name) or {}).get("title")
    digest = run_digest(source, {**params, "_title": title})
    root = REPO_ROOT / EXECUTED if root is None else Path(root)
    store = root / scale
    target = store / f"{name}.ipynb"
    ran, seconds = False, 0.0
    if force or not target.exists() or _recorded_digest(target) != digest:
        partial = root / "failed" / f"{name}.ipynb"
        partial.parent.mkdir(parents=True, exist_ok=True)
        store.mkdir(parents=True, exist_ok=True)
        log = partial.with_suffix(".cache.jsonl")
        log.unlink(missing_ok=True)
        previous = os.environ.get(LOG_ENV)
        os.environ[LOG_ENV] = str(log)  # the kernel inherits it: the cache logs what this page loads and computes
        start = time.perf_counter()
        try:
            pm.execute_notebook(str(source), str(partial), parameters=params, cwd=str(store),
                                kernel_name="python3", progress_bar=False, log_output=False)
        except Exception:
            print(f"[runner] {name} failed; the partly executed copy is {partial}", file=sys.stderr)
            raise
        finally:
            if previous is None:
                os.environ.pop(LOG_ENV, None)
            else:
                os.environ[LOG_ENV] = previous
        seconds = time.perf_counter() - start
        cache = summarize_cache_log(log.read_text().splitlines() if log.exists() else [])
        log.unlink(missing_ok=True)
        history = _recorded(target)
        nb = annotate(strip_widgets(json.loads(partial.read_text())), name, scale, seconds, title)
        runs = [r for r in history.get("runs", []) if history.get("scale") == scale][-19:]
        runs.append({"date": time.strftime("%Y-%m-%d"), "seconds": round(seconds, 1),
                     "computed": sum(v["computed"] for v in cache.values())})
        merged = {k: dict(v) for k, v in (history.get("cache") or {}).items()} if history.get("scale") == scale else {}
        for kind, counts in cache.items():
            slot = merged.setdefault(kind, {"loaded": 0, "computed": 0, "compute_s": 0.0})
            for key, value in counts.items():
                slot[key] = slot.get(key, 0) + value
        nb["metadata"]["ssd_runner"] = {"digest": digest, "scale": scale, "parameters": params,
                                        "seconds": round(seconds, 1), "environment": environment(params),
                                        "cache": merged, "runs": runs}
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(nb, indent=1))
        os.replace(tmp, target)
        partial.unlink()
        ran = True
    if publish:
        shutil.copyfile(target, REPO_ROOT / EXECUTED / f"{name}.ipynb")
        publish_tables(scale)
    return ran, seconds


def published_scales(names, root: Path | None = None) -> dict[str, str]:
    """``{notebook: scale}`` of the published copies (``executed/<name>.ipynb``) among ``names``."""
    scales = {}
    for name in names:
        path = (root or REPO_ROOT) / EXECUTED / f"{name}.ipynb"
        try:
            scales[name] = json.loads(path.read_text())["metadata"]["ssd_runner"]["scale"]
        except (OSError, ValueError, KeyError):
            continue
    return scales


def failure_of(err: BaseException) -> str:
    """One line naming what failed: the cell and its exception for a notebook error, else the exception."""
    if hasattr(err, "ename"):  # papermill's PapermillExecutionError
        return f"cell {err.exec_count}: {err.ename}: {str(err.evalue).splitlines()[0] if err.evalue else ''}"
    return f"{type(err).__name__}: {err}"


def dry_run_environment(scale: str) -> None:
    """Turn the dry run on for this process and the kernels it starts: ``$SSD_DRY_RUN`` and a cache of its own
    (``$SSD_CACHE_DIR``, default ``~/.cache/ssdlib-dry-run/<scale>``), never the cache of real artifacts."""
    os.environ[DRY_RUN_ENV] = "1"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    os.environ.setdefault("SSD_CACHE_DIR", str(base / "ssdlib-dry-run" / scale))


def dry_run_book(names, scale: str, overrides: dict, profiles: dict, root: Path) -> int:
    """Execute every notebook of ``names`` under the dry run, going on after a failure; print a summary (notebook,
    seconds, ok or the failing cell's exception) and return 1 if any failed."""
    rows = []
    for name in execution_order(names, profiles):
        start = time.perf_counter()
        try:
            execute(name, scale, overrides=overrides, force=True, publish=False, profiles=profiles, root=root)
            status = "ok"
        except Exception as err:  # noqa: BLE001 - the summary reports it, the run goes on
            status = f"error: {failure_of(err)}"
        rows.append((name, time.perf_counter() - start, status))
        print(f"[dry-run] {name}: {rows[-1][1]:.1f} s, {status}", flush=True)
    width = max(len(n) for n, _, _ in rows) if rows else 8
    print(f"\n[dry-run] summary at scale {scale} (cache {os.environ['SSD_CACHE_DIR']}, copies in {root / scale}):")
    for name, seconds, status in rows:
        print(f"  {name:<{width}}  {seconds:8.1f} s  {status}")
    failed = sum(status != "ok" for _, _, status in rows)
    print(f"[dry-run] {len(rows) - failed} ok, {failed} failed, {sum(s for _, s, _ in rows):.1f} s in all")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default=os.environ.get("SCALE", "cpu"), choices=SCALES)
    parser.add_argument("--only", nargs="*", default=None, help="notebook names to run (default: all in _toc.yml)")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a parameter of the notebooks run (repeatable)")
    parser.add_argument("--force", action="store_true", help="re-execute even if the executed copy is up to date")
    parser.add_argument("--jobs", type=int, default=1,
                        help="notebooks executed at once, each in a process of its own after the pages it needs "
                             "(logs in executed/<scale>/logs/)")
    parser.add_argument("--no-index", action="store_true", help=argparse.SUPPRESS)  # a --jobs child
    parser.add_argument("--list", action="store_true", help="list the notebooks and their parameters, run nothing")
    parser.add_argument("--mixed", action="store_true",
                        help="with --only: publish even if the other pages of the book were built at another scale")
    parser.add_argument("--dry-run", action="store_true",
                        help="run the scale's code paths with every loop capped, on CPU, with a cache of its own; "
                             "publish nothing, go on after a failure and end with a summary")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"with --dry-run: where the executed copies go (default {DRY_RUN_DIR}/)")
    args = parser.parse_args(argv)
    if args.out is not None and not args.dry_run:
        parser.error("--out is for --dry-run only (the book's copies always go to executed/)")

    profiles = load_profiles()
    names = toc_notebooks()
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"not in _toc.yml: {unknown}; known: {names}")
        others = {n: s for n, s in published_scales([n for n in names if n not in args.only]).items()
                  if s != args.scale}
        if others and not args.list and not args.mixed and not args.dry_run:
            parser.error(f"the book's other pages were built at another scale ({others}); publishing "
                         f"{args.only} at scale {args.scale} would mix scales in one book. Run every notebook at "
                         f"{args.scale} (no --only), or pass --mixed to do it anyway")
        names = [n for n in names if n in args.only]
    if args.dry_run:
        dry_run_environment(args.scale)
        args.param.append(("device", "cpu"))  # the dry run checks the paper path without a GPU
        if args.list:
            print(f"[dry-run] caps: {json.dumps(DRY_RUN_CAPS)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    overrides = {k: parse_value(v) for k, v in args.param}
    if args.list:
        for name in names:
            print(name, parameters_for(name, args.scale, profiles, overrides))
        return 0
    if args.dry_run:
        return dry_run_book(names, args.scale, overrides, profiles, (REPO_ROOT / (args.out or DRY_RUN_DIR)))
    total = time.perf_counter()
    order = execution_order(names, profiles)
    if args.jobs > 1 and len(order) > 1:
        child = [*(["--force"] if args.force else []), *(a for pair in args.param for a in ("-p", *pair))]
        outcome = run_parallel(order, profiles, args.jobs, lambda name: _run_in_process(
            name, args.scale, child, REPO_ROOT / EXECUTED / args.scale / "logs"))
        failed = {n: o for n, o in outcome.items() if o != "ok"}
        for name, what in failed.items():
            print(f"[runner] {name}: {what}", file=sys.stderr, flush=True)
    else:
        failed = {}
        for name in order:
            ran, seconds = execute(name, args.scale, overrides=overrides, force=args.force, profiles=profiles)
            print(f"[runner] {name}: {'executed in %.1f s' % seconds if ran else 'up to date, skipped'}", flush=True)
    print(f"[runner] {len(names) - len(failed)} of {len(names)} notebooks at scale {args.scale} in "
          f"{time.perf_counter() - total:.1f} s")
    if not args.no_index:
        write_pages(toc_notebooks(), REPO_ROOT / EXECUTED)  # the re-run chapter's page list and the intro's banner
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
