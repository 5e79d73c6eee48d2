"""The API reference (book/api.md): every name it documents exists and carries an example, and every example in the
modules it documents runs as a doctest (what ``pytest --doctest-modules`` would do on those modules, kept here so
that ``make test`` runs them with the rest)."""
import doctest
import importlib
import re
import sys
import types

import pytest
import torch

import ssdlib
from ssdlib.utils import REPO_ROOT

API_PAGE = REPO_ROOT / "book" / "api.md"
#: An autodoc directive inside the page's ``{eval-rst}`` blocks, and its indented options.
DIRECTIVE = re.compile(r"^\.\. auto(function|class|data|module):: (\S+)\n((?:[ ]+:[a-z-]+:.*\n)*)", re.M)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def resolve(dotted: str):
    """The object a dotted name documents (``ssdlib.paper.hyperparameters``, ``ssdlib.SSD``...)."""
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def documented() -> dict[str, object]:
    """Every object book/api.md documents, with the members its ``:members:`` options list."""
    found = {}
    for _, name, options in DIRECTIVE.findall(API_PAGE.read_text()):
        obj = found[name] = resolve(name)
        members = re.search(r":members: (.+)", options)
        for member in (members.group(1).split(",") if members else []):
            found[f"{name}.{member.strip()}"] = getattr(obj, member.strip())
    return found


def defining_modules() -> list[str]:
    """The modules that define the documented objects: their doctests all run."""
    return sorted({sys.modules[getattr(obj, "__module__", None) or name].__name__
                   for name, obj in documented().items()})


def test_the_page_documents_the_public_api():
    assert len(documented()) > 40, "the directive pattern no longer reads book/api.md"
    names = {name.rsplit(".", 1)[-1] for name in documented()}
    missing = sorted(set(ssdlib.__all__) - names - {"paper"})  # the paper's data: hyperparameters stands for it
    assert not missing, f"book/api.md does not document {missing}"


@pytest.mark.parametrize("name", sorted(documented()))
def test_every_documented_name_has_an_example(name):
    doc = documented()[name].__doc__ or ""
    assert ">>> " in doc, f"{name} has no example in its docstring (the API page shows it)"


def run_examples(module) -> tuple[int, int]:
    """(failed, attempted) examples of a module's docstrings, the torch random state left as it was."""
    tests = [t for t in doctest.DocTestFinder().find(module, module.__name__) if t.examples]
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    rng = torch.random.get_rng_state()
    try:
        for test in tests:
            runner.run(test)
    finally:
        torch.random.set_rng_state(rng)  # examples draw random inputs; later tests keep their own stream
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("module", defining_modules())
def test_docstring_examples_run(module, one_thread):
    failed, attempted = run_examples(importlib.import_module(module))
    assert attempted or module == "ssdlib", f"{module} has no example"
    assert not failed, f"{failed} of {attempted} examples in {module} failed (run it with -s for the report)"


def test_a_wrong_example_fails(capsys):
    module = types.ModuleType("wrong_example")
    module.__doc__ = ">>> 1 + 1\n3\n"
    assert run_examples(module) == (1, 1)
    assert "Expected:\n    3\nGot:\n    2" in capsys.readouterr().out
