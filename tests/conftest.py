"""Shared fixtures, and a temporary cache for the whole test session.

Tests never read models, evaluators or attack runs that an earlier build cached: ``SSD_CACHE_DIR`` points to a
fresh folder. Decoded faces and dlib embeddings, which are content-addressed inputs (keyed by the source files or
the image bytes) and slow to recompute, are linked in file by file from the user's cache when it has them; the
folders themselves are the test cache's own, so whatever the tests compute is written there and never into the
user's cache.
"""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from ssdlib.cache import cache_root

_USER_CACHE = cache_root()
_TEST_CACHE = Path(tempfile.mkdtemp(prefix="ssdlib-test-cache-"))
for _kind in ("faces", "embeddings"):
    if (_USER_CACHE / _kind).is_dir():
        (_TEST_CACHE / _kind).mkdir()
        for _file in (_USER_CACHE / _kind).iterdir():
            if _file.is_file() and not _file.name.startswith("."):
                (_TEST_CACHE / _kind / _file.name).symlink_to(_file)
os.environ["SSD_CACHE_DIR"] = str(_TEST_CACHE)
atexit.register(shutil.rmtree, _TEST_CACHE, ignore_errors=True)


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine, 2 threads per process oversubscribe and run slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
