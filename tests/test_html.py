"""The rendered book in headless Chromium: math typeset by the local MathJax, figures present, no remote scripts."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ssdlib.utils import REPO_ROOT

HTML = REPO_ROOT / "_build" / "html"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = [
    pytest.mark.book,
    pytest.mark.skipif(not (HTML / "index.html").exists(),
                       reason="no built book in _build/html: run `make book SCALE=smoke` first"),
]


def render(page: Path) -> str:
    """The DOM of ``page`` after scripts ran, from headless Chromium."""
    if BROWSER is None:
        pytest.skip("no Chromium found: install Debian's `chromium` to check the rendered HTML")
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--allow-file-access-from-files", "--virtual-time-budget=15000", "--dump-dom", page.as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize("page", ["book/theory.html", "executed/theory.html", "executed/solver.html"])
def test_math_is_typeset(page):
    dom = render(HTML / page)
    assert re.search(r'class="MathJax(_SVG|_CHTML)?[" ]', dom), f"no typeset math in {page}"
    assert 'class="MathJax_Error"' not in dom, f"MathJax reported a TeX error in {page}"


@pytest.mark.parametrize("page", ["executed/theory.html", "executed/solver.html"])
def test_figures_are_present(page):
    html = (HTML / page).read_text()
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert images, f"no figures in {page}"
    for src in images:
        if not src.startswith("data:"):
            assert (HTML / page).parent.joinpath(src).resolve().exists(), f"missing image {src} in {page}"


def test_no_page_loads_remote_scripts():
    for page in HTML.rglob("*.html"):
        scripts = re.findall(r'<script[^>]+src="([^"]+)"', page.read_text())
        remote = [s for s in scripts if s.startswith(("http:", "https:", "//"))]
        assert not remote, f"{page.relative_to(HTML)} loads remote scripts {remote}"
