"""The release: a built wheel installs and runs in a clean virtual environment without the book extras, its version
is ``ssdlib.__version__``, and ``environment.yml`` agrees with ``pyproject.toml`` on the dependencies.

The clean environment gets no download: it sees the runtime dependencies of ``ssdlib`` (and theirs, nothing else)
through links to this interpreter's installed copies, so the test runs offline and in CI alike, and an import of a
book or test extra from the library's core fails there as it would for a user.
"""
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest
import yaml

import ssdlib
from ssdlib.utils import REPO_ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
requirements = pytest.importorskip("packaging.requirements")
from packaging.specifiers import SpecifierSet  # noqa: E402  (packaging is there once the line above passed)
from packaging.utils import canonicalize_name  # noqa: E402

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
#: Import names of the tools that run the tests and the book (the extras' own packages are read from pyproject.toml).
TOOL_MODULES = {"IPython", "ipykernel", "nbformat", "sphinx", "sphinxcontrib", "myst_nb", "pytest", "hypothesis"}
#: conda-forge names of pip packages (environment.yml), and the conda entries that are tools, not Python packages.
CONDA_NAMES = {"pytorch": "torch"}
CONDA_TOOLS = {"python", "pip", "nodejs"}


def top_levels(dists: dict) -> set[str]:
    """The top-level names (packages, modules, dist-info folders) the distributions install."""
    return {f.parts[0].removesuffix(".py") for d in dists.values() for f in d.files or [] if f.parts[0] != ".."}


def extra_modules() -> set[str]:
    """Import names of every optional extra's packages (installed ones: the top-level names they install)."""
    names = set(TOOL_MODULES)
    for reqs in PYPROJECT["project"]["optional-dependencies"].values():
        for line in reqs:
            req = requirements.Requirement(line)
            names.add(canonicalize_name(req.name).replace("-", "_"))
            try:
                names |= top_levels({req.name: importlib.metadata.distribution(req.name)})
            except importlib.metadata.PackageNotFoundError:
                pass
    return {n for n in names if n.isidentifier() and n != "__pycache__"}


def base_requirements() -> list:
    return [requirements.Requirement(r) for r in PYPROJECT["project"]["dependencies"]]


def runtime_distributions(extras: tuple[str, ...] = ()) -> dict:
    """The installed distributions that ssdlib's base dependencies (plus those of ``extras``) need, transitively."""
    extra_reqs = [requirements.Requirement(r) for e in extras for r in PYPROJECT["project"]["optional-dependencies"][e]]
    found, stack = {}, base_requirements() + extra_reqs
    while stack:
        req = stack.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in found:
            continue
        try:
            found[name] = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{req.name}, which ssdlib{list(extras) or ''} needs at run time, is not installed here")
        stack.extend(requirements.Requirement(r) for r in found[name].requires or [])
    return found


def link_distributions(dists: dict, target) -> None:
    """Link every top-level file and folder of ``dists`` (packages, .libs, dist-info) into ``target``."""
    target.mkdir()
    for dist in dists.values():
        if dist.files is None:
            pytest.skip(f"{dist.metadata['Name']} has no RECORD: cannot tell which files are its own")
        for top in {f.parts[0] for f in dist.files if f.parts[0] not in ("..", "__pycache__")}:
            source = dist.locate_file(top)
            if source.exists() and not (target / top).exists():
                (target / top).symlink_to(source)


def lowest_version(conda_spec: str) -> str | None:
    """The lowest version a conda match spec admits: ``=2.*`` -> ``2.0``, ``>=2.1,<3`` -> ``2.1``, ``=3.11`` ->
    ``3.11``; None when it has no lower bound."""
    match = re.search(r"(?:^=+|>=)\s*(\d+(?:\.\d+)*)(\.\*)?", conda_spec)
    if not match:
        return None
    return match.group(1) + (".0" if match.group(2) and "." not in match.group(1) else "")


def run(*cmd, **kwargs):
    """Run ``cmd``; the clean environment must not see this checkout through ``$PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, env=env, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_version_is_semantic_and_in_the_changelog():
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ssdlib.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", ssdlib.__version__), ssdlib.__version__
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text()
    assert f"## {ssdlib.__version__} " in changelog, "CHANGELOG.md has no section for ssdlib.__version__"
    versions = re.findall(r"^## (\d+)\.(\d+)\.(\d+)", changelog, flags=re.M)
    assert versions == sorted(versions, key=lambda v: tuple(map(int, v)), reverse=True), "newest version first"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """ssdlib's wheel, built offline from a copy of the sources (once per module)."""
    try:  # the build runs without isolation (offline): this environment's setuptools builds the wheel
        setuptools_version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("building the wheel offline needs setuptools here (the faces extra installs it)")
    if not SpecifierSet(">=77").contains(setuptools_version):
        pytest.skip(f"building the wheel needs setuptools >= 77 (pyproject.toml), this is {setuptools_version}")
    tmp_path = tmp_path_factory.mktemp("wheel")
    src = tmp_path / "src"  # build from a copy: the build writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "ssdlib", src / "ssdlib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", tmp_path / "dist")
    wheels = list((tmp_path / "dist").glob("ssdlib-*.whl"))
    assert [w.name.split("-")[1] for w in wheels] == [ssdlib.__version__]
    return wheels[0]


def clean_venv(tmp_path, wheel, extras: tuple[str, ...] = ()):
    """A venv holding only the wheel, which sees ssdlib's runtime dependencies (and ``extras``') through links to
    this interpreter's copies; returns (its python, its site-packages, the extra import names it must not see)."""
    env = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", env)
    python = env / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    runtime = runtime_distributions(extras)
    link_distributions(runtime, tmp_path / "deps")
    (tmp_path / "venv" / site / "runtime-deps.pth").write_text(str(tmp_path / "deps") + "\n")
    return python, site, sorted(extra_modules() - top_levels(runtime))  # a CUDA torch brings triton itself


@pytest.mark.slow
def test_the_wheel_installs_and_runs_in_a_clean_venv_without_extras(tmp_path, wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "ssdlib/paper/data/tables.csv" in names and "ssdlib/__init__.py" in names
    assert not [n for n in names if n.split("/")[0] in ("tests", "notebooks", "book", "benchmarks")]

    python, site, extras = clean_venv(tmp_path, wheel)
    script = textwrap.dedent(f"""
        import importlib, importlib.metadata, importlib.util, pkgutil, sys
        import torch
        import ssdlib
        assert ssdlib.__file__.startswith({site!r}), ssdlib.__file__
        assert importlib.metadata.version("ssdlib") == ssdlib.__version__ == {ssdlib.__version__!r}
        extras = {extras!r}
        present = [m for m in extras if importlib.util.find_spec(m) is not None]
        assert not present, f"the clean venv sees extras: {{present}}"
        probs = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), -1)
        ssd = ssdlib.SSD.from_predictions(probs, torch.arange(6) % 4, T=1.0, eps=0.5, seed=0)
        out = ssd(probs)
        assert out.shape == probs.shape and torch.allclose(out.sum(-1), torch.ones(6))
        assert ((out - probs).abs().sum(-1) <= ssd.radius(probs) + 1e-6).all()
        need_extras = []
        for mod in pkgutil.walk_packages(ssdlib.__path__, "ssdlib."):
            try:
                importlib.import_module(mod.name)
            except ImportError as err:  # a missing extra, raised as is or wrapped in a clearer message
                cause = err if isinstance(err, ModuleNotFoundError) else err.__cause__
                missing = getattr(cause, "name", None) or ""
                assert missing.split(".")[0] in extras, f"{{mod.name}} fails to import: {{err!r}}"
                need_extras.append(mod.name)
        print("ok", ssdlib.__version__, "modules needing an extra:", need_extras)
    """)
    out = run(python, "-c", script, cwd=tmp_path)  # cwd: the repository is not on the path
    assert out.startswith("ok " + ssdlib.__version__)
    assert "usage: python -m ssdlib.cache_archive" in run(python, "-m", "ssdlib.cache_archive", "--help")


@pytest.mark.slow
def test_the_art_extra_and_the_readme_example_run_in_a_clean_venv(tmp_path, wheel):
    """``pip install "ssdlib[art]"``: the wheel declares ART under the ``art`` extra, and with that extra's
    dependencies (and nothing else beyond the core) the README's example of SSD inside ART runs as written."""
    pytest.importorskip("art", reason="the art extra is not installed here")
    python, site, extras = clean_venv(tmp_path, wheel, ("art",))
    readme = (REPO_ROOT / "README.md").read_text().split("## SSD inside IBM's Adversarial Robustness Toolbox", 1)[1]
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    script = textwrap.dedent(f"""
        import importlib.metadata, importlib.util
        requires = importlib.metadata.requires("ssdlib")
        assert any(r.startswith("adversarial-robustness-toolbox") and 'extra == "art"' in r for r in requires), requires
        assert importlib.util.find_spec("torchvision") is None, "ART came with its [pytorch] extra"
        present = [m for m in {extras!r} if importlib.util.find_spec(m) is not None]
        assert not present, f"the clean venv sees other extras: {{present}}"
    """) + example + textwrap.dedent("""
        import art, ssdlib
        assert ssdlib.__file__.startswith(%r), ssdlib.__file__
        assert answers.shape == (5, 10) and abs(answers.sum(-1) - 1).max() < 1e-5
        print("ok", ssdlib.__version__, "art", art.__version__)
    """ % site)
    out = run(python, "-c", script, cwd=tmp_path)
    assert out.startswith("ok " + ssdlib.__version__)


def test_environment_yml_and_pyproject_agree():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    conda = {}
    pip_lines = []
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            pip_lines += entry.get("pip", [])
            continue
        name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*([^\s#]*)", entry).groups()
        conda[CONDA_NAMES.get(name, name)] = spec
    base = {canonicalize_name(r.name): r for r in base_requirements()}
    extras = PYPROJECT["project"]["optional-dependencies"]
    missing = sorted(set(base) - {canonicalize_name(n) for n in conda})
    assert not missing, f"environment.yml lacks base dependencies of pyproject.toml: {missing}"
    in_extras = {canonicalize_name(requirements.Requirement(r).name) for reqs in extras.values() for r in reqs}
    stray = sorted(n for n in conda if n not in CONDA_TOOLS and canonicalize_name(n) not in set(base) | in_extras)
    assert not stray, f"environment.yml installs what pyproject.toml does not list: {stray}"
    for name, spec in conda.items():  # the lowest version a conda spec admits must satisfy pyproject.toml
        lowest = lowest_version(spec)
        if lowest and name in base:
            assert base[name].specifier.contains(lowest), f"environment.yml {name}{spec} admits {lowest}: {base[name]}"
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(lowest_version(conda["python"]))
    installs = [re.search(r'\.\[([a-z,]+)\]', line) for line in pip_lines]
    assert any(installs), "environment.yml must pip-install ssdlib itself with its extras"
    named = {x for m in installs if m for x in m.group(1).split(",")}
    assert named <= set(extras), f"environment.yml names extras pyproject.toml lacks: {sorted(named - set(extras))}"
    assert {"book", "test"} <= named
