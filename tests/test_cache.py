"""The one cache: keys follow the configuration, loads check it, writes are atomic, and tests use a temporary one."""
import numpy as np
import pytest
import torch

from ssdlib.cache import cache_root, cached, config_hash, fingerprint


def test_tests_run_on_a_temporary_cache():
    assert "ssdlib-test-cache-" in str(cache_root())


def test_cached_computes_once_and_recomputes_on_a_new_config(tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))
    calls = []

    def compute(partial):
        calls.append(partial)
        return {"value": torch.arange(3) * len(calls)}

    first, info = cached("things", {"a": 1}, compute, name="t")
    again, info2 = cached("things", {"a": 1}, compute, name="t")
    other, info3 = cached("things", {"a": 2}, compute, name="t")
    assert len(calls) == 2 and not info.cached and info2.cached and not info3.cached
    assert torch.equal(again["value"], first["value"]) and not torch.equal(other["value"], first["value"])
    assert info.path.parent == tmp_path / "things" and info.path.name.startswith("t-")
    assert calls[0].name.endswith(".partial.pt")  # where compute may checkpoint and resume
    _, off = cached("things", {"a": 1}, compute, enabled=False)
    assert len(calls) == 3 and off.path is None


def test_a_damaged_or_foreign_file_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))
    payload, info = cached("things", {"a": 1}, lambda p: {"v": 1})
    info.path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable"):
        payload, info = cached("things", {"a": 1}, lambda p: {"v": 2})
    assert payload["v"] == 2
    torch.save({"config": {"a": 3}, "v": 9}, info.path)  # a file written for another configuration
    with pytest.warns(UserWarning, match="another configuration"):
        assert cached("things", {"a": 1}, lambda p: {"v": 3})[0]["v"] == 3


def test_hashes_and_fingerprints_see_content_not_identity():
    assert config_hash({"b": 1, "a": 2}) == config_hash({"a": 2, "b": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 1.5})
    x = torch.arange(6).reshape(2, 3)
    assert fingerprint(x) == fingerprint(x.clone()) != fingerprint(x.float())
    assert fingerprint(x, "a") != fingerprint(x, "b") and fingerprint(x.T) != fingerprint(x)


def test_fingerprints_are_stable_across_releases():
    """Cache keys hash data with fingerprint(): these values were computed before its bytes were read in place
    (without a copy), so every artifact cached earlier keeps its key; empty and transposed parts included."""
    assert fingerprint(torch.arange(6, dtype=torch.float32).reshape(2, 3), torch.tensor([1, 0]), "lfw", 3) == \
        "20a169854d615640"
    assert fingerprint(np.zeros((0, 3)), torch.rand(4, 6, generator=torch.Generator().manual_seed(0)).t()) == \
        "e6ff201c6386de67"
