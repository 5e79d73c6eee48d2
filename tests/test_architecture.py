"""The import graph of ssdlib: no cycles between modules, and every import goes down the layers of ARCHITECTURE.md."""
import ast
from pathlib import Path

import pytest

from ssdlib.utils import REPO_ROOT

PACKAGE = REPO_ROOT / "ssdlib"

#: The layers of ARCHITECTURE.md: a unit (top-level module or subpackage) may import its own modules and units of
#: strictly lower layers, never a unit of its own or a higher layer.
LAYERS = {
    "utils": 0, "scales": 0, "timing": 0, "paper": 0,
    "cache": 0.5,  # the one foundation above another: it reads the dry-run switch of `scales`
    "information": 1, "data": 1, "cache_archive": 1,
    "solver": 2,
    "defenses": 3, "models": 3,
    "training": 4, "blackbox": 4, "priors": 4,
    "metrics": 5, "attacks": 5,
    "experiments": 6,
    "reporting": 7, "integrations": 7,
    "grid": 8,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "data/build" not in p.as_posix()}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """ssdlib modules imported by a module (relative and absolute, at any depth of the code)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ssdlib"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "ssdlib":
                target = node.module
            else:
                continue
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known}
    return {m for m in found if m in known and m != name}


@pytest.fixture(scope="module")
def graph():
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def unit(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_unit_has_a_layer(graph):
    missing = sorted({unit(m) for m in graph if unit(m)} - set(LAYERS))
    assert not missing, f"add these to ARCHITECTURE.md and LAYERS: {missing}"


def test_no_import_cycle(graph):
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_imports_go_down_the_layers(graph):
    bad = []
    for m, targets in graph.items():
        for t in targets:
            a, b = unit(m), unit(t)
            if a is None or b is None or a == b:
                continue  # the package root re-exports the public API; a unit may import itself
            if LAYERS[b] >= LAYERS[a]:
                bad.append(f"{m} (layer {LAYERS[a]}) imports {t} (layer {LAYERS[b]})")
    assert not bad, "imports against ARCHITECTURE.md:\n" + "\n".join(sorted(bad))


def test_the_check_finds_a_cycle(tmp_path):
    """The cycle detector itself: two modules importing each other are reported."""
    (tmp_path / "a.py").write_text("from . import b\n")
    (tmp_path / "b.py").write_text("from .a import x\n")
    found = {n: imports_of(f"pkg.{n}", tmp_path / f"{n}.py", {"pkg.a", "pkg.b"}) for n in ("a", "b")}
    assert found == {"a": {"pkg.b"}, "b": {"pkg.a"}}


def test_architecture_document_names_every_unit():
    text = (REPO_ROOT / "ARCHITECTURE.md").read_text()
    missing = [u for u in LAYERS if f"`{u}" not in text]
    assert not missing, f"ARCHITECTURE.md does not describe {missing}"
