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


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_at_smoke_scale(name):
    """Runs (or reuses, when up to date) executed/smoke/<name>.ipynb; a failing cell raises."""
    runner.execute(name, "smoke", publish=False)
    nb = json.loads((REPO_ROOT / runner.EXECUTED / "smoke" / f"{name}.ipynb").read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert nb["metadata"]["ssd_runner"]["scale"] == "smoke"
