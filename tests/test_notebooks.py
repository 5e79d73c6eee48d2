"""Every notebook of the book executes at smoke scale, and committed notebooks carry no outputs."""
import json

import pytest

from ssdlib.reporting import runner
from ssdlib.utils import REPO_ROOT

NOTEBOOKS = runner.toc_notebooks()


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_source_notebooks_have_no_outputs_and_a_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "clear the outputs"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert "scale" in "".join(params[0]["source"]) and "device" in "".join(params[0]["source"])


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory):
    """A scratch copy of what the runner reads (toc, profiles, notebooks), so the test executes every notebook
    itself instead of reading back the copy a book build wrote; the library digest still covers ssdlib."""
    import shutil
    root = tmp_path_factory.mktemp("book")
    for name in ("_toc.yml", "notebooks"):
        src = REPO_ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, root / name)
    (root / "ssdlib").symlink_to(REPO_ROOT / "ssdlib", target_is_directory=True)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_at_smoke_scale(name, scratch_repo, monkeypatch):
    """Executes notebook ``name`` at smoke scale into a scratch folder; a failing cell raises."""
    monkeypatch.setattr(runner, "REPO_ROOT", scratch_repo)
    ran, _ = runner.execute(name, "smoke", publish=False)
    assert ran
    nb = json.loads((scratch_repo / runner.EXECUTED / "smoke" / f"{name}.ipynb").read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert nb["metadata"]["ssd_runner"]["scale"] == "smoke"
