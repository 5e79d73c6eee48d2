"""Export and import of the cache as one archive, so a reader can rebuild the book from someone else's runs.

An archive is a tar file (``.tar``, or ``.tar.gz``/``.tgz`` compressed) whose first member, ``manifest.json``, lists
every cached file it holds: its kind (the cache subfolder: ``models``, ``priors``, ``evaluators``, ``attacks``...),
its configuration hash (the key :func:`ssdlib.cache.cached` stores it under, checked against the configuration
inside the file at export), its size and SHA-256, and the environment that wrote it (Python, torch, NumPy and
ssdlib versions). Import checks all of it before anything lands in the cache: a file whose size or checksum differs
from the manifest, a member the manifest does not list, a listed file that is missing, a name that does not carry
its configuration hash, or an archive written under another torch release (unless allowed) is refused with an
error naming the problem, and nothing is imported. Checksums prove integrity against the manifest, not who wrote
it: cached files are pickles, so import archives only from people you trust.

Usage::

    python -m ssdlib.cache_archive export runs.tar                   # every kind but the decoded faces
    python -m ssdlib.cache_archive export runs.tar --kind models --kind priors
    python -m ssdlib.cache_archive show runs.tar
    python -m ssdlib.cache_archive import runs.tar [--kind attacks] [--overwrite] [--allow-other-torch]

Decoded faces (kind ``faces``) are left out unless asked for by name: they are crops of the data sets, which a
reader rebuilds from their own copy and which an archive should not redistribute.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import re
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from tqdm.auto import tqdm

from .cache import cache_root, config_hash

__all__ = ["ArchiveError", "ImportReport", "current_environment", "cached_kinds", "export_cache", "read_manifest",
           "import_cache", "main", "MANIFEST", "FORMAT", "FORMAT_VERSION", "NOT_BY_DEFAULT"]

MANIFEST = "manifest.json"
FORMAT = "ssdlib-cache-archive"
FORMAT_VERSION = 1
#: Kinds exported only when named: decoded faces are crops of the data sets themselves.
NOT_BY_DEFAULT = ("faces",)
_KIND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FILE = re.compile(r"^(?:[A-Za-z0-9_.+-]*-)?([0-9a-f]{12})\.pt$")  # <name>-<config hash>.pt, as cached() writes
_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive, or a file in it, that cannot be trusted or does not fit this cache; nothing was imported.

    >>> import pathlib, shutil, tempfile
    >>> notes = pathlib.Path(tempfile.mkdtemp()) / "notes.tar"
    >>> _ = notes.write_text("not a tar file")
    >>> read_manifest(notes)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ssdlib.cache_archive.ArchiveError: ... is not a readable cache archive: file could not be opened successfully...
    >>> shutil.rmtree(notes.parent)
    """


@dataclass
class ImportReport:
    """What an import did, file by file (``kind/name``): added, identical and skipped, kept or replaced.

    >>> report = ImportReport(added=["models/ir152-0123456789ab.pt"], identical=["priors/0123456789ab.pt"])
    >>> report.added, report.kept_local
    (['models/ir152-0123456789ab.pt'], [])
    """

    added: list[str] = field(default_factory=list)
    identical: list[str] = field(default_factory=list)
    kept_local: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: how many files of each outcome.

        >>> ImportReport(added=["models/ir152-0123456789ab.pt"]).summary()
        '1 added, 0 already present, 0 replaced, 0 kept (a local file differs; --overwrite replaces it)'
        """
        return (f"{len(self.added)} added, {len(self.identical)} already present, {len(self.replaced)} replaced, "
                f"{len(self.kept_local)} kept (a local file differs; --overwrite replaces it)")


def current_environment() -> dict:
    """The versions that wrote (or read) cached files: Python, torch, NumPy, ssdlib and the platform.

    >>> sorted(current_environment())
    ['numpy', 'platform', 'python', 'ssdlib', 'torch']
    """
    from . import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "ssdlib": __version__, "platform": platform.platform()}


def _torch_release(version: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` -> ``(2, 13)``: the part of torch's version that decides whether pickles load alike."""
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:2])


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else cache_root()


def cached_kinds(root: str | os.PathLike | None = None) -> list[str]:
    """The kinds (subfolders) present in the cache ``root`` (default: the cache of :func:`ssdlib.cache.cache_root`).

    >>> import pathlib, shutil, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "models").mkdir(); (root / "priors").mkdir()
    >>> cached_kinds(root)
    ['models', 'priors']
    >>> shutil.rmtree(root)
    """
    folder = _root(root)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and _KIND.match(p.name))


def _cache_files(folder: Path) -> list[Path]:
    """Finished cache files of one kind: ``<name>-<hash>.pt``, neither hidden temporaries nor ``.partial`` ones."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".partial.pt")
                  and _FILE.match(p.name))


def _sha256(stream: BinaryIO) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _stored_config_hash(path: Path) -> str:
    """The hash of the configuration stored inside a cached file (memory-mapped: large files are not read)."""
    payload = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    if not isinstance(payload, dict) or "config" not in payload:
        raise ArchiveError(f"{path} holds no configuration: not a file written by ssdlib.cache.cached")
    return config_hash(payload["config"])


def _select(available: list[str], kinds, default_excludes: bool) -> list[str]:
    if kinds is None:
        return [k for k in available if not (default_excludes and k in NOT_BY_DEFAULT)]
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    missing = sorted(set(kinds) - set(available))
    if missing:
        raise ArchiveError(f"no kind {missing} here; available: {available}")
    return sorted(set(kinds))


def _compression(path: Path, mode: str) -> str:
    name = path.name
    if name.endswith((".tar.gz", ".tgz")):
        return f"{mode}:gz"
    if name.endswith(".tar"):
        return f"{mode}:"
    raise ArchiveError(f"archive name must end in .tar, .tar.gz or .tgz, got {name!r}")


class _HashingReader(io.RawIOBase):
    """Reads a file while hashing it, so the bytes written to the archive are the bytes the manifest lists."""

    def __init__(self, stream: BinaryIO):
        self.stream, self.digest = stream, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        chunk = self.stream.read(n)
        self.digest.update(chunk)
        return chunk


def export_cache(archive: str | os.PathLike, kinds=None, *, root: str | os.PathLike | None = None,
                 check_configs: bool = True, progress: bool = True) -> dict:
    """Write the cached files of ``kinds`` (default: every kind but the decoded faces) to one archive; return its
    manifest.

    ``check_configs`` loads each file (memory-mapped) to check that the configuration inside hashes to the key in
    its name, so that an archive never carries a file under a wrong key. The archive is written to a temporary
    file and renamed at the end: an interrupted export leaves no archive. A file that changes while it is being
    written (another run replacing it) stops the export with an :class:`ArchiveError`.

    >>> import pathlib, shutil, tempfile, torch
    >>> from ssdlib.cache import atomic_save, config_hash
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> config = {"width": 4}  # what cached("models", config, ..., name="toy") would store, by hand
    >>> path = tmp / "cache" / "models" / f"toy-{config_hash(config)}.pt"
    >>> _ = atomic_save({"config": config, "weights": torch.zeros(4)}, path)
    >>> manifest = export_cache(tmp / "runs.tar", root=tmp / "cache", progress=False)
    >>> [(f["kind"], f["name"], f["size"] > 0) for f in manifest["files"]]
    [('models', 'toy-a1174e18cdc7.pt', True)]
    >>> shutil.rmtree(tmp)
    """
    root, archive = _root(root), Path(archive)
    mode = _compression(archive, "w")
    selected = _select(cached_kinds(root), kinds, default_excludes=True)
    files = [(kind, path) for kind in selected for path in _cache_files(root / kind)]
    entries = []
    for kind, path in tqdm(files, desc="checking cache files", disable=not progress or not files):
        key = _FILE.match(path.name).group(1)
        if check_configs:
            stored = _stored_config_hash(path)
            if stored != key:
                raise ArchiveError(f"{path} is named for configuration {key} but holds configuration {stored}; "
                                   "delete it (the cache recomputes it) or leave its kind out")
        with open(path, "rb") as stream:
            sha, size = _sha256(stream)
        entries.append({"kind": kind, "name": path.name, "config_hash": key, "size": size, "sha256": sha})
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "environment": current_environment(), "kinds": selected, "files": entries}
    blob = json.dumps(manifest, indent=1, sort_keys=True).encode()
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, mode) as tar:
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime = len(blob), int(time.time())
            tar.addfile(info, io.BytesIO(blob))
            for entry in tqdm(entries, desc=f"writing {archive.name}", disable=not progress or not entries):
                path = root / entry["kind"] / entry["name"]
                with open(path, "rb") as stream:
                    if os.fstat(stream.fileno()).st_size != entry["size"]:
                        raise ArchiveError(f"{path} changed during the export; run it again")
                    info = tarfile.TarInfo(f"{entry['kind']}/{entry['name']}")
                    info.size, info.mtime = entry["size"], int(os.fstat(stream.fileno()).st_mtime)
                    reader = _HashingReader(stream)
                    tar.addfile(info, reader)
                    if reader.digest.hexdigest() != entry["sha256"]:
                        raise ArchiveError(f"{path} changed during the export; run it again")
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    return manifest


def _check_manifest(manifest) -> dict:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"not an ssdlib cache archive (its {MANIFEST} does not say format {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArchiveError(f"archive format version {manifest.get('format_version')!r}; this ssdlib reads "
                           f"version {FORMAT_VERSION}")
    seen = set()
    for entry in manifest.get("files", []):
        kind, name = entry.get("kind", ""), entry.get("name", "")
        match = _FILE.match(name)
        if not _KIND.match(kind) or not match or "/" in name:
            raise ArchiveError(f"manifest lists an unsafe or foreign file name {kind!r}/{name!r}")
        if match.group(1) != entry.get("config_hash"):
            raise ArchiveError(f"{kind}/{name} is listed with configuration hash {entry.get('config_hash')!r}, "
                               "which its name does not carry")
        if f"{kind}/{name}" in seen:
            raise ArchiveError(f"manifest lists {kind}/{name} twice")
        seen.add(f"{kind}/{name}")
    return manifest


def read_manifest(archive: str | os.PathLike) -> dict:
    """The manifest of an archive (its first member), checked for format and file names; no file is read.

    >>> import pathlib, shutil, tempfile, torch
    >>> from ssdlib.cache import atomic_save, config_hash
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = atomic_save({"config": {"n": 1}, "x": torch.zeros(1)}, tmp / "evaluators" / f"{config_hash({'n': 1})}.pt")
    >>> _ = export_cache(tmp / "runs.tar", root=tmp, progress=False)
    >>> manifest = read_manifest(tmp / "runs.tar")
    >>> manifest["kinds"], manifest["environment"]["torch"] == torch.__version__
    (['evaluators'], True)
    >>> shutil.rmtree(tmp)
    """
    archive = Path(archive)
    if not archive.is_file():
        raise ArchiveError(f"no archive at {archive}")
    try:
        with tarfile.open(archive, "r:*") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise ArchiveError(f"{archive} does not start with {MANIFEST}: not an ssdlib cache archive")
            return _check_manifest(json.loads(tar.extractfile(first).read()))
    except (tarfile.TarError, EOFError, OSError, json.JSONDecodeError) as err:
        raise ArchiveError(f"{archive} is not a readable cache archive: {err}") from err


def import_cache(archive: str | os.PathLike, kinds=None, *, root: str | os.PathLike | None = None,
                 overwrite: bool = False, allow_other_torch: bool = False, progress: bool = True) -> ImportReport:
    """Verify an archive against its manifest and add its files of ``kinds`` (default: all it holds) to the cache.

    Every selected file is first copied to a staging folder inside the cache while its size and SHA-256 are
    checked; only when all agree are they moved into place, so a refused archive imports nothing. A local file of
    the same name is kept when it differs (the same configuration computed elsewhere) unless ``overwrite``.
    An archive written under another torch release (major.minor) is refused unless ``allow_other_torch``.

    >>> import pathlib, shutil, tempfile, torch
    >>> from ssdlib.cache import atomic_save, config_hash
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> config = {"steps": 3}
    >>> _ = atomic_save({"config": config, "G": torch.ones(2)}, tmp / "mine" / "priors" / f"{config_hash(config)}.pt")
    >>> _ = export_cache(tmp / "runs.tar.gz", root=tmp / "mine", progress=False)
    >>> report = import_cache(tmp / "runs.tar.gz", root=tmp / "theirs", progress=False)
    >>> report.added
    ['priors/6f35973e41fd.pt']
    >>> import_cache(tmp / "runs.tar.gz", root=tmp / "theirs", progress=False).summary()
    '0 added, 1 already present, 0 replaced, 0 kept (a local file differs; --overwrite replaces it)'
    >>> shutil.rmtree(tmp)
    """
    manifest = read_manifest(archive)
    root, archive = _root(root), Path(archive)
    theirs, ours = manifest.get("environment", {}).get("torch", "?"), torch.__version__
    if not allow_other_torch and _torch_release(str(theirs)) != _torch_release(ours):
        raise ArchiveError(f"{archive} was written with torch {theirs}, this is torch {ours}: its models may not "
                           "load alike; pass allow_other_torch=True (--allow-other-torch) to import it anyway")
    selected = _select(sorted({e["kind"] for e in manifest["files"]} | set(manifest.get("kinds", []))), kinds,
                       default_excludes=False)
    wanted = {f"{e['kind']}/{e['name']}": e for e in manifest["files"] if e["kind"] in selected}
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=root))  # same file system: files move in by rename
    listed = {f"{e['kind']}/{e['name']}" for e in manifest["files"]}
    report = ImportReport()
    try:
        found = set()
        with tarfile.open(archive, "r:*") as tar:
            bar = tqdm(total=len(wanted), desc=f"verifying {archive.name}", disable=not progress or not wanted)
            for member in tar:
                if member.name == MANIFEST:
                    continue
                if member.name not in listed:
                    raise ArchiveError(f"{archive} holds {member.name!r}, which its manifest does not list")
                if not member.isfile():
                    raise ArchiveError(f"{member.name} in {archive} is not a regular file")
                if member.name in found:
                    raise ArchiveError(f"{archive} holds {member.name} twice")
                found.add(member.name)
                entry = wanted.get(member.name)
                if entry is None:
                    continue
                target = staging / entry["kind"] / entry["name"]
                target.parent.mkdir(exist_ok=True)
                with tar.extractfile(member) as source, open(target, "wb") as sink:
                    digest, size = hashlib.sha256(), 0
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        sink.write(chunk)
                if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
                    raise ArchiveError(f"{member.name} in {archive} is corrupted: {size} bytes with SHA-256 "
                                       f"{digest.hexdigest()[:16]}..., the manifest says {entry['size']} bytes "
                                       f"with {entry['sha256'][:16]}...")
                bar.update()
            bar.close()
        missing = sorted(set(wanted) - found)
        if missing:
            raise ArchiveError(f"{archive} lacks {len(missing)} file(s) its manifest lists, e.g. {missing[0]}")
        for name, entry in sorted(wanted.items()):
            staged, target = staging / entry["kind"] / entry["name"], root / entry["kind"] / entry["name"]
            if target.is_file():
                with open(target, "rb") as stream:
                    same = _sha256(stream) == (entry["sha256"], entry["size"])
                if same:
                    report.identical.append(name)
                    continue
                if not overwrite:
                    report.kept_local.append(name)
                    continue
                report.replaced.append(name)
            else:
                report.added.append(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
    except (tarfile.TarError, EOFError) as err:
        raise ArchiveError(f"{archive} is damaged: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m ssdlib.cache_archive export|import|show ARCHIVE``: the command line of this module."""
    parser = argparse.ArgumentParser(prog="python -m ssdlib.cache_archive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write cached files to one archive (.tar, .tar.gz or .tgz)")
    exp.add_argument("archive")
    exp.add_argument("--kind", action="append", help="a kind to export (repeatable; default: all but faces)")
    exp.add_argument("--no-config-check", action="store_true", help="skip loading each file to check its key")
    imp = sub.add_parser("import", help="verify an archive and add its files to the cache")
    imp.add_argument("archive")
    imp.add_argument("--kind", action="append", help="a kind to import (repeatable; default: all)")
    imp.add_argument("--overwrite", action="store_true", help="replace local files that differ")
    imp.add_argument("--allow-other-torch", action="store_true", help="import an archive of another torch release")
    show = sub.add_parser("show", help="print an archive's environment and files per kind")
    show.add_argument("archive")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            manifest = export_cache(args.archive, args.kind, check_configs=not args.no_config_check)
            size = sum(e["size"] for e in manifest["files"])
            print(f"{args.archive}: {len(manifest['files'])} files, {size / 1e6:.1f} MB, kinds {manifest['kinds']}")
        elif args.command == "import":
            report = import_cache(args.archive, args.kind, overwrite=args.overwrite,
                                  allow_other_torch=args.allow_other_torch)
            print(f"into {cache_root()}: {report.summary()}")
        else:
            manifest = read_manifest(args.archive)
            print(json.dumps({"created": manifest["created"], "environment": manifest["environment"]}, indent=1))
            for kind in manifest["kinds"]:
                files = [e for e in manifest["files"] if e["kind"] == kind]
                print(f"{kind}: {len(files)} files, {sum(e['size'] for e in files) / 1e6:.1f} MB")
    except ArchiveError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
