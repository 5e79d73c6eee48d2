"""Cache export and import: a round trip through one archive; a bad archive is refused and imports nothing."""
import io
import json
import tarfile

import pytest
import torch

from ssdlib.cache import cache_root, cached
from ssdlib.cache_archive import MANIFEST, ArchiveError, export_cache, import_cache, main, read_manifest


@pytest.fixture
def filled(tmp_path, monkeypatch):
    """A cache with three kinds (faces among them), a resumable partial file and a torn temporary."""
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path / "mine"))
    cached("models", {"net": "a"}, lambda p: {"w": torch.arange(5.0)}, name="ir152")
    cached("models", {"net": "b"}, lambda p: {"w": torch.ones(3)}, name="vgg16")
    cached("attacks", {"attack": "rlb", "seed": 1}, lambda p: {"images": torch.rand(2, 3, 4, 4)}, name="rlb")
    cached("faces", {"src": "lfw"}, lambda p: {"images": torch.zeros(2, 3, 4, 4, dtype=torch.uint8)}, name="lfw")
    (cache_root() / "models" / "ir152-0123456789ab.partial.pt").write_bytes(b"unfinished")
    (cache_root() / "models" / ".ir152-0123456789ab.pt.77.tmp").write_bytes(b"torn")
    return cache_root()


def files_of(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_round_trip_restores_the_files_and_cached_reads_them(filled, tmp_path, monkeypatch):
    manifest = export_cache(tmp_path / "runs.tar.gz", progress=False)
    assert manifest["kinds"] == ["attacks", "models"]  # faces only when asked for by name
    assert {e["name"] for e in manifest["files"]} == {p.split("/")[1] for p in files_of(filled)
                                                      if not p.startswith("faces") and ".partial" not in p
                                                      and "/." not in p}
    assert manifest["environment"]["torch"] == torch.__version__
    assert all(len(e["sha256"]) == 64 and e["size"] > 0 for e in manifest["files"])
    assert read_manifest(tmp_path / "runs.tar.gz") == manifest

    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path / "theirs"))
    report = import_cache(tmp_path / "runs.tar.gz", progress=False)
    assert len(report.added) == 3 and not report.identical
    theirs, mine = files_of(cache_root()), files_of(filled)
    assert theirs == {k: v for k, v in mine.items() if k in theirs} and len(theirs) == 3
    assert not list(cache_root().glob(".import-*"))  # the staging folder is gone
    payload, info = cached("models", {"net": "a"}, lambda p: pytest.fail("recomputed an imported artifact"),
                           name="ir152")
    assert info.cached and torch.equal(payload["w"], torch.arange(5.0))
    again = import_cache(tmp_path / "runs.tar.gz", progress=False)
    assert len(again.identical) == 3 and not again.added


def test_kinds_are_selectable_on_export_and_import(filled, tmp_path):
    manifest = export_cache(tmp_path / "all.tar", ["faces", "models"], progress=False)
    assert sorted({e["kind"] for e in manifest["files"]}) == ["faces", "models"]
    report = import_cache(tmp_path / "all.tar", ["faces"], root=tmp_path / "theirs", progress=False)
    assert report.added == [f"faces/{(filled / 'faces').iterdir().__next__().name}"]
    assert not (tmp_path / "theirs" / "models").exists()
    with pytest.raises(ArchiveError, match=r"no kind \['priors'\]"):
        export_cache(tmp_path / "x.tar", ["priors"], progress=False)
    with pytest.raises(ArchiveError, match=r"no kind \['attacks'\]"):
        import_cache(tmp_path / "all.tar", ["attacks"], root=tmp_path / "theirs", progress=False)
    with pytest.raises(ArchiveError, match="must end in .tar"):
        export_cache(tmp_path / "runs.zip", progress=False)


def rewrite(src, dst, change):
    """Copy an archive member by member, letting ``change(name, data)`` return new bytes or None to drop it."""
    with tarfile.open(src) as tar_in, tarfile.open(dst, "w") as tar_out:
        for member in tar_in:
            data = change(member.name, tar_in.extractfile(member).read())
            if data is not None:
                member.size = len(data)
                tar_out.addfile(member, io.BytesIO(data))


def edit_manifest(edit):
    def change(name, data):
        if name != MANIFEST:
            return data
        manifest = json.loads(data)
        edit(manifest)
        return json.dumps(manifest).encode()
    return change


def flip_a_byte(name, data):
    return data if name == MANIFEST or not name.startswith("models/ir152") else data[:-9] + b"X" + data[-8:]


def add_torch_1(manifest):
    manifest["environment"]["torch"] = "1.13.1+cu117"


@pytest.mark.parametrize("change, message", [
    (flip_a_byte, r"models/ir152-\w+\.pt in .* is corrupted"),
    (lambda name, data: None if name.startswith("attacks/") else data, "lacks 1 file"),
    (edit_manifest(lambda m: m["files"].pop()), "which its manifest does not list"),
    (edit_manifest(lambda m: m["files"][0].update(config_hash="0" * 12)), "which its name does not carry"),
    (edit_manifest(lambda m: m["files"][0].update(name="../../evil-0123456789ab.pt")), "unsafe or foreign"),
    (edit_manifest(lambda m: m.update(format_version=99)), "format version 99"),
    (edit_manifest(add_torch_1), "written with torch 1.13.1"),
    (lambda name, data: None if name == MANIFEST else data, "does not start with manifest.json"),
])
def test_a_bad_archive_is_refused_and_imports_nothing(filled, tmp_path, change, message):
    export_cache(tmp_path / "good.tar", progress=False)
    rewrite(tmp_path / "good.tar", tmp_path / "bad.tar", change)
    with pytest.raises(ArchiveError, match=message):
        import_cache(tmp_path / "bad.tar", root=tmp_path / "theirs", progress=False)
    theirs = tmp_path / "theirs"
    assert not theirs.exists() or not any(theirs.rglob("*"))  # no file, no kind folder, no staging folder left


def test_other_torch_is_imported_when_allowed(filled, tmp_path):
    export_cache(tmp_path / "good.tar", progress=False)
    rewrite(tmp_path / "good.tar", tmp_path / "old.tar", edit_manifest(add_torch_1))
    report = import_cache(tmp_path / "old.tar", root=tmp_path / "theirs", allow_other_torch=True, progress=False)
    assert len(report.added) == 3


def test_truncated_or_foreign_files_are_refused(filled, tmp_path):
    export_cache(tmp_path / "good.tar", progress=False)
    with tarfile.open(tmp_path / "good.tar") as tar:
        last = tar.getmembers()[-1]
    blob = (tmp_path / "good.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(blob[: last.offset_data + last.size // 2])  # ends inside the last file
    with pytest.raises(ArchiveError, match="damaged|corrupted|lacks"):
        import_cache(tmp_path / "cut.tar", root=tmp_path / "theirs", progress=False)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ArchiveError, match="not a readable cache archive"):
        read_manifest(tmp_path / "notes.txt")
    with pytest.raises(ArchiveError, match="no archive at"):
        read_manifest(tmp_path / "nowhere.tar")


def test_export_refuses_a_file_under_a_wrong_key(filled, tmp_path):
    src = next((filled / "models").glob("vgg16-*.pt"))
    src.rename(src.with_name("vgg16-0123456789ab.pt"))  # a file renamed by hand: its configuration says otherwise
    with pytest.raises(ArchiveError, match="named for configuration 0123456789ab but holds"):
        export_cache(tmp_path / "runs.tar", progress=False)
    assert not (tmp_path / "runs.tar").exists() and not list(tmp_path.glob(".runs.tar*"))


def test_a_different_local_file_is_kept_unless_overwrite(filled, tmp_path):
    export_cache(tmp_path / "runs.tar", ["models"], progress=False)
    theirs = tmp_path / "theirs"
    import_cache(tmp_path / "runs.tar", root=theirs, progress=False)
    local = next((theirs / "models").glob("ir152-*.pt"))
    local.write_bytes(b"computed here")
    report = import_cache(tmp_path / "runs.tar", root=theirs, progress=False)
    assert report.kept_local == [f"models/{local.name}"] and local.read_bytes() == b"computed here"
    report = import_cache(tmp_path / "runs.tar", root=theirs, overwrite=True, progress=False)
    assert report.replaced == [f"models/{local.name}"] and local.read_bytes() == (filled / "models" /
                                                                                   local.name).read_bytes()


def test_command_line(filled, tmp_path, monkeypatch, capsys):
    assert main(["export", str(tmp_path / "runs.tar"), "--kind", "models"]) == 0
    assert "2 files" in capsys.readouterr().out
    assert main(["show", str(tmp_path / "runs.tar")]) == 0
    assert "models: 2 files" in capsys.readouterr().out
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path / "theirs"))
    assert main(["import", str(tmp_path / "runs.tar")]) == 0
    assert "2 added" in capsys.readouterr().out
    assert main(["import", str(tmp_path / "runs.tar"), "--kind", "priors"]) == 2
    assert "error: no kind ['priors']" in capsys.readouterr().err
