"""Sources a reader sees (book prose, notebooks, docstrings) hold no control characters: a backslash escape lost
in a Python string (``"\tilde"`` is a tab followed by "ilde") shows up as garbage on the rendered page."""
import ast
import json
import re

import pytest

from ssdlib.utils import REPO_ROOT

CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # everything below space but newline (tab included)


def control_characters(text: str) -> list[str]:
    """``"line N: 'context'"`` for each control character (tab included) in ``text``."""
    found = []
    for number, line in enumerate(text.split("\n"), 1):
        for m in CONTROL.finditer(line.replace("\r", "")):
            found.append(f"line {number}: {line[max(0, m.start() - 10):m.end() + 10]!r}")
    return found


def docstrings(source: str):
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "name", "module"), doc


def test_the_check_finds_a_lost_backslash():
    assert control_characters("fine\n$\\tilde q$") == []
    assert len(control_characters("$\tilde q^y$")) == 1  # what a lost "\t" looks like


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "book").glob("*.md")), ids=lambda p: p.name)
def test_book_prose_has_no_control_characters(path):
    assert control_characters(path.read_text()) == []


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_cells_have_no_control_characters(path):
    for cell in json.loads(path.read_text())["cells"]:
        assert control_characters("".join(cell["source"])) == [], cell.get("id")


def test_docstrings_have_no_control_characters():
    bad = []
    for path in sorted((REPO_ROOT / "ssdlib").rglob("*.py")):
        for name, doc in docstrings(path.read_text()):
            bad += [f"{path.relative_to(REPO_ROOT)}:{name}: {c}" for c in control_characters(doc)]
    assert bad == []
