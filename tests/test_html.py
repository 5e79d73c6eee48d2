"""The rendered book in headless Chromium: math as a reader sees it, the scripts each page loads, the bibliography.

The math checks (tests/headless.py) are first run on two tiny fixture pages: one with the book's MathJax set-up
(must pass) and one with the MathJax 2 set-up the book used before (HTML-CSS output asking for TeX web fonts that
the jupyter-server-mathjax copy does not ship), on which they must fail: that is what the book's pages looked like.
"""
from __future__ import annotations

import html as htmlmod
import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from headless import math_problems, start_chrome
from ssdlib.reporting import runner
from ssdlib.utils import REPO_ROOT

HTML = REPO_ROOT / "_build" / "html"
CONFIG = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())["sphinx"]["config"]
STATIC = REPO_ROOT / CONFIG["html_static_path"][0]
MATHJAX = STATIC / CONFIG["mathjax_path"]

needs_book = pytest.mark.skipif(not (HTML / "index.html").exists(),
                                reason="no built book in _build/html: run `make book SCALE=smoke` first")
needs_mathjax = pytest.mark.skipif(not MATHJAX.exists(), reason=f"no {MATHJAX}: run `make mathjax` first")

#: TeX the fixture pages typeset: the accent, blackboard and calligraphic letters the theory chapter uses.
FIXTURE_MATH = [r"I(X;\hat{Y}\mid Y)", r"\mathbb{E}_{(x,y)}\big[\mathrm{KL}(p\,\|\,q^y)\big]", r"C=|\mathcal{Y}|",
                r"\hat Y"]

# The MathJax 2 set-up of the book until this test was written (_config.yml of commit 216d769).
OLD_MATHJAX2_CONFIG = {"tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                                   "processEscapes": True, "processClass": "math|output_area|tex2jax_process",
                                   "ignoreClass": "tex2jax_ignore|mathjax_ignore"},
                       "TeX": {"equationNumbers": {"autoNumber": "AMS"}}}


def fixture_page(path: Path, head: str) -> str:
    """Write a page with :data:`FIXTURE_MATH` as Sphinx marks up inline math, after ``head``; returns its URL."""
    body = "\n".join(f'<p>Formula {i}: <span class="math notranslate nohighlight">\\({htmlmod.escape(tex)}\\)</span>'
                     "</p>" for i, tex in enumerate(FIXTURE_MATH))
    path.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8">{head}</head>'
                    f'<body style="font-size:16px;font-family:sans-serif">{body}</body></html>')
    return path.as_uri()


@pytest.fixture(scope="module")
def chrome():
    driver = start_chrome()
    yield driver
    driver.quit()


@needs_mathjax
def test_math_checks_pass_with_the_books_mathjax(tmp_path, chrome):
    config = json.dumps(CONFIG.get("mathjax3_config", {}))
    url = fixture_page(tmp_path / "new.html", f"<script>window.MathJax = {config}</script>"
                                              f'<script defer src="{MATHJAX.as_uri()}"></script>')
    survey, problems = math_problems(chrome, url)
    assert survey["renderer"] == "mj3-svg"
    assert len(survey["accents"]) == 2 and {v["variant"] for v in survey["variants"]} == {"double-struck",
                                                                                        "calligraphic"}
    assert problems == []


def test_math_checks_fail_on_the_old_mathjax2_setup(tmp_path, chrome):
    if importlib.util.find_spec("jupyter_server_mathjax") is None:
        pytest.skip("jupyter-server-mathjax (the old MathJax 2 copy) is not installed: pip install -e '.[test]'")
    import jupyter_server_mathjax

    src = Path(jupyter_server_mathjax.__file__).parent / "static" / "MathJax.js"
    url = fixture_page(tmp_path / "old.html",
                       f'<script type="text/x-mathjax-config">MathJax.Hub.Config({json.dumps(OLD_MATHJAX2_CONFIG)})'
                       f'</script><script async src="{src.as_uri()}?config=TeX-AMS-MML_HTMLorMML-full"></script>')
    survey, problems = math_problems(chrome, url)
    assert survey["renderer"] == "mj2" and survey["count"] == len(FIXTURE_MATH)
    text = "\n".join(problems)
    assert "non-math fonts" in text, problems
    assert "hat accent" in text, problems
    assert "double-struck letters drawn with" in text and "calligraphic letters drawn with" in text, problems


@needs_book
@pytest.mark.book
@pytest.mark.parametrize("page", ["book/theory.html", "book/intro.html", "book/solver.html", "executed/theory.html"])
def test_book_math_renders(page, chrome):
    survey, problems = math_problems(chrome, (HTML / page).as_uri())
    assert problems == [], f"{page}: " + "; ".join(problems)
    assert survey["renderer"] == "mj3-svg", f"{page}: math not drawn by MathJax 3 SVG ({survey['renderer']})"
    if page == "book/theory.html":  # the chapter has them all: make sure they were measured
        assert survey["accents"] and {v["variant"] for v in survey["variants"]} == {"double-struck", "calligraphic"}


def _scripts(page: Path) -> list[str]:
    return re.findall(r'<script[^>]+src="([^"]+)"', page.read_text())


@needs_book
@pytest.mark.book
def test_pages_load_one_mathjax_and_only_existing_local_scripts():
    pages = [p for p in HTML.rglob("*.html") if "_static" not in p.relative_to(HTML).parts]  # not theme templates
    assert len(pages) > 10
    for page in pages:
        scripts = _scripts(page)
        remote = [s for s in scripts if s.startswith(("http:", "https:", "//"))]
        assert not remote, f"{page.relative_to(HTML)} loads remote scripts {remote}"
        mathjax = [s for s in scripts if "/mathjax/" in s]
        assert len(mathjax) <= 1 and all(s.split("?")[0].endswith("/tex-svg-full.js") for s in mathjax), \
            f"{page.relative_to(HTML)} loads MathJax components as page scripts: {mathjax}"
        for s in scripts:
            assert (page.parent / s.split("?")[0]).resolve().exists(), f"{page.relative_to(HTML)}: missing script {s}"
    assert any("tex-svg-full.js" in s for s in _scripts(HTML / "book" / "theory.html"))


@needs_book
@pytest.mark.book
@pytest.mark.parametrize("page", ["executed/theory.html", "executed/solver.html"])
def test_figures_are_present(page):
    html = (HTML / page).read_text()
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert images, f"no figures in {page}"
    for src in images:
        if not src.startswith("data:"):
            assert (HTML / page).parent.joinpath(src).resolve().exists(), f"missing image {src} in {page}"


def _text(fragment: str) -> str:
    return " ".join(htmlmod.unescape(re.sub(r"<[^>]+>", "", fragment)).split())  # nbsp and runs of space: one space


@needs_book
@pytest.mark.book
def test_bibliography_labels_are_the_author_year_citations():
    bib = (HTML / "book" / "bibliography.html").read_text()
    labels = {m.group(1): _text(m.group(2)) for m in re.finditer(
        r'<div class="citation" id="([^"]+)"[^>]*>\s*<span class="label">(.*?)</span></span>', bib, re.S)}
    assert len(labels) > 10, "no bibliography entries found"
    assert all(re.fullmatch(r"\[.+, (\d{4}|n\.d\.)[a-z]?\]", label) for label in labels.values()), labels
    checked = 0
    for page in (HTML / "book").glob("*.html"):
        for target, text in re.findall(r'href="bibliography\.html#([^"]+)"[^>]*>(.*?)</a>', page.read_text(), re.S):
            text = _text(text)
            if target in labels and re.search(r", \d{4}", text):  # {cite}: "Zhuang et al., 2025"
                assert labels[target] == f"[{text}]", f"{page.name}: cites {text!r}, bibliography says {labels[target]}"
                checked += 1
    assert checked > 10


@needs_book
@pytest.mark.book
def test_bibliography_shows_no_raw_tex():
    bib = (HTML / "book" / "bibliography.html").read_text()
    entries = [_text(e) for e in re.findall(r'<div class="citation".*?</div>', bib, re.S)]
    raw = [e for e in entries if re.search(r"\$|\\[a-zA-Z]+|[{}]", e)]
    assert not raw, f"bibliography entries with raw TeX: {raw}"


#: Every page of the table of contents, as built HTML paths.
BOOK_PAGES = [f"{page}.html" for page in runner.toc_pages()]

MEASURE_WIDTHS = """
const article = document.querySelector('article.bd-article') || document.querySelector('main');
const column = article.getBoundingClientRect().width;
const cut = [];
document.querySelectorAll('mjx-container[display="true"]').forEach((e) => {
  const svg = e.querySelector('svg');
  const width = svg ? svg.getBoundingClientRect().width : e.scrollWidth;
  const room = e.getBoundingClientRect().width;
  if (width > room + 1) cut.push(['equation', Math.round(width), Math.round(room), e.textContent.slice(0, 40)]);
});
article.querySelectorAll('table').forEach((t) => {
  const room = Math.min(column, t.parentElement.getBoundingClientRect().width);
  if (t.scrollWidth > room + 1) cut.push(['table', t.scrollWidth, Math.round(room), t.textContent.slice(0, 40)]);
});
return cut;
"""


def too_wide(driver, url: str) -> list:
    """Display equations and tables on the page at ``url`` wider than the room they have (cut or scrolled)."""
    driver.set_window_size(1280, 1600)
    driver.get(url)
    from headless import WAIT_FOR_MATHJAX
    driver.execute_async_script(WAIT_FOR_MATHJAX)
    return driver.execute_script(MEASURE_WIDTHS)


@needs_mathjax
def test_width_check_finds_a_wide_equation_and_table(tmp_path, chrome):
    wide = " + ".join(f"x_{{{i}}}" for i in range(120))
    page = tmp_path / "wide.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8">'
                    f'<script>MathJax = {{tex: {{displayMath: [["\\\\[", "\\\\]"]]}}}};</script>'
                    f'<script src="{MATHJAX.as_uri()}"></script></head><body><main style="width:600px">'
                    f'<div>\\[{wide}\\]</div><div style="overflow:auto"><table><tr>'
                    + "".join(f"<td>column-{i}</td>" for i in range(60)) + "</tr></table></div></main></body></html>")
    kinds = [c[0] for c in too_wide(chrome, page.as_uri())]
    assert kinds == ["equation", "table"]


@needs_book
@pytest.mark.book
@pytest.mark.parametrize("page", BOOK_PAGES)
def test_equations_and_results_tables_fit_their_column(page, chrome):
    """No display equation is cut and no results table scrolls sideways at 1280 px."""
    assert too_wide(chrome, (HTML / page).as_uri()) == []


VISIBLE_SEARCH = """return [...document.querySelectorAll('.search-button-field')].filter(e => {
  const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; }).length"""


@needs_book
@pytest.mark.book
def test_one_search_box_and_the_book_title_uncovered_at_desktop_width():
    """The theme's header bar repeated the sidebar's search box and covered the title (book/_theme/ssd.css)."""
    chrome = start_chrome(1280, 900)  # its own browser: the shared one's state after other pages is not at issue
    request_quit = chrome.quit
    chrome.get((HTML / "book" / "intro.html").as_uri())
    assert chrome.execute_script(VISIBLE_SEARCH) == 1
    title = chrome.execute_script("const r = document.querySelector('.logo__title').getBoundingClientRect();"
                                  "return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2)"
                                  ".closest('.logo__title') !== null")
    request_quit()
    assert title, "the book title is covered"


BLANK_CELL = re.compile(r"<td[^>]*>\s*(?:None|&lt;NA&gt;)?\s*</td>|<td[^>]*>[^<]*\b(?:nan|NaN)\b[^<]*</td>")


@needs_book
@pytest.mark.book
def test_results_tables_have_no_blank_or_nan_cells():
    """A missing value shows a dash explained beside its table, never an empty cell or a "nan" (alone or inside a
    formatted cell such as an interval "nan–nan")."""
    for page in sorted((HTML / "executed").glob("*.html")):
        blanks = BLANK_CELL.findall(page.read_text())
        assert not blanks, f"{page.name}: {len(blanks)} blank or NaN cells, e.g. {blanks[0]}"


@needs_book
@pytest.mark.book
def test_no_stray_return_values_on_the_pages():
    """A cell ending in a call that returns a path (save_table, savefig) prints it; the reader sees noise."""
    for page in sorted((HTML / "executed").glob("*.html")):
        assert "PosixPath(" not in page.read_text(), f"{page.name} shows a stray PosixPath(...) output"
