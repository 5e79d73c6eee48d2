"""Headless Chromium (Selenium + chromedriver) for the HTML tests, and checks of typeset math as a reader sees it.

:func:`math_problems` returns what is wrong with the math on the loaded page, whichever MathJax drew it (2 or 3,
HTML-CSS or SVG): TeX errors; glyphs drawn in a non-math font (the platform font Chromium really used, from the
DevTools protocol) or, for SVG output, drawn as text instead of paths; hat accents whose ink is not just above
their letter's ink (measured on a screenshot); \\mathbb / \\mathcal letters not drawn in their fonts.
"""
from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pytest

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
SCALE = 2  # device pixels per CSS pixel: accent gaps of a tenth of an em are then a few pixels
MATH_FONT = re.compile(r"MathJax|MJXTEX|MJXZERO|STIX|Latin Modern Math|TeX Gyre .* Math|XITS|Cambria Math", re.I)
VARIANT_FONT = {"double-struck": re.compile(r"MathJax_AMS|DoubleStruck|MJXTEX-A", re.I),
                "calligraphic": re.compile(r"MathJax_Caligraphic|Script|MJXTEX-C", re.I)}
MAX_ACCENTS = 4  # hat accents measured per page


def start_chrome(width: int = 1280, height: int = 1600):
    """A headless Chromium driven by chromedriver; skips the test with a message when either is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    if BROWSER is None or CHROMEDRIVER is None:
        pytest.skip("no Chromium/chromedriver found: install Debian's `chromium` and `chromium-driver`")
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--allow-file-access-from-files", f"--force-device-scale-factor={SCALE}",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    return driver


WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const start = Date.now();
(function poll() {
  const MJ = window.MathJax;
  if (MJ && MJ.startup && MJ.startup.promise) {
    MJ.startup.promise.then(() => done("3"), (e) => done("3:" + e));
    return;
  }
  if (MJ && MJ.Hub && MJ.Hub.Register) { MJ.Hub.Register.StartupHook("End", () => done("2")); return; }
  if (Date.now() - start > 20000) { done(null); return; }
  setTimeout(poll, 50);
})();
"""

# Marks the elements to check and returns what the DOM alone tells.  Works for MathJax 3 (SVG/CHTML) and 2.
SURVEY = r"""
const out = {renderer: null, count: 0, errors: [], textGlyphs: [], fontErrors: [], accents: [], variants: []};
const v3 = document.querySelectorAll("mjx-container");
const v2 = document.querySelectorAll(".MathJax, .MathJax_Display .MathJax, .MathJax_SVG, .MathJax_CHTML");
let n = 0;
const mark = (el, kind) => { const id = "chk" + (n++); el.setAttribute("data-check", id); return id; };
const rect = (el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
if (v3.length) {
  out.renderer = "mj3-" + (v3[0].getAttribute("jax") || "?").toLowerCase();
  out.count = v3.length;
  document.querySelectorAll("mjx-merror, [data-mjx-error], g[data-mml-node='merror']").forEach(
    (e) => out.errors.push(e.getAttribute("data-mjx-error") || e.textContent));
  document.querySelectorAll("mjx-container svg text").forEach((t) => {  // empty text nodes (tags) draw nothing
    if (t.textContent.trim()) out.textGlyphs.push(t.textContent);
  });
  const overs = "mjx-container svg g[data-mml-node='mover'], mjx-container svg g[data-mml-node='munderover']";
  document.querySelectorAll(overs).forEach((g) => {
    const kids = Array.from(g.children);
    if (kids.length < 2) return;
    const acc = kids[kids.length - 1], hat = acc.querySelector("use[data-c='5E'], use[data-c='2C6']");
    if (hat && acc.querySelectorAll("use").length === 1) out.accents.push({base: mark(kids[0]), accent: mark(acc)});
  });
  document.querySelectorAll("mjx-container").forEach((c) => {
    const mml = c.querySelector("mjx-assistive-mml");
    if (!mml) return;
    const ds = mml.querySelectorAll("mi[mathvariant='double-struck']").length;
    const cal = mml.querySelectorAll("mi[data-mjx-variant='-tex-calligraphic']").length;
    const svg = c.querySelector("svg");
    if (svg) {
      const uses = Array.from(svg.querySelectorAll("use")).map(
        (u) => u.getAttribute("xlink:href") || u.getAttribute("href") || "");
      const drawn = (font) => uses.filter((h) => h.includes("-TEX-" + font + "-")).length;
      if (ds) out.variants.push({variant: "double-struck", wanted: ds, drawn: drawn("D")});
      if (cal) out.variants.push({variant: "calligraphic", wanted: cal, drawn: drawn("C")});
    }
  });
} else if (window.MathJax && MathJax.Hub && MathJax.Hub.getAllJax) {
  out.renderer = "mj2";
  out.count = v2.length;
  document.querySelectorAll(".MathJax_Error, span.merror, .MathJax span.merror").forEach(
    (e) => out.errors.push(e.textContent));
  // every leaf span that holds text is a glyph run: its platform font is checked from Python
  document.querySelectorAll(".MathJax span").forEach((s) => {
    if (s.children.length === 0 && s.textContent.trim()) mark(s, "glyph");
  });
  const span = (node) => node && node.spanID !== undefined ? document.getElementById("MathJax-Span-" + node.spanID)
                                                            : null;
  const isLeaf = (s) => s.children.length === 0 && s.textContent.trim();
  const leaf = (el) => el ? Array.from(el.querySelectorAll("span")).filter(isLeaf)[0] || el : null;
  const walk = (node) => {
    if (!node || typeof node !== "object" || !node.type) return;
    if ((node.type === "mover" || node.type === "munderover") && node.data) {
      const base = node.data[node.base === undefined ? 0 : node.base];
      const over = node.data[node.over === undefined ? 1 : node.over];
      const b = span(base), o = span(over);
      if (b && o && /^[\u005E\u02C6]$/.test(o.textContent.trim())) out.accents.push({base: mark(b), accent: mark(o)});
    }
    if (node.type === "mi" && node.mathvariant) {
      const variant = node.mathvariant === "double-struck" ? "double-struck"
        : /script|caligraphic/.test(node.mathvariant) ? "calligraphic" : null;  // TeX input: "-tex-caligraphic"
      const el = leaf(span(node));
      if (variant && el) out.variants.push({variant: variant, node: mark(el)});
    }
    (node.data || []).forEach(walk);
  };
  MathJax.Hub.getAllJax().forEach((jax) => walk(jax.root));
}
out.glyphs = Array.from(document.querySelectorAll("[data-check]")).length;
if (document.fonts) document.fonts.forEach((f) => { if (f.status === "error") out.fontErrors.push(f.family); });
return out;
"""


def _platform_fonts(driver, check_ids: list[str]) -> dict[str, list[str]]:
    """The font families Chromium used to draw the text of each marked element (DevTools CSS domain)."""
    driver.execute_cdp_cmd("DOM.enable", {})
    driver.execute_cdp_cmd("CSS.enable", {})
    root = driver.execute_cdp_cmd("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    fonts = {}
    for cid in check_ids:
        node = driver.execute_cdp_cmd("DOM.querySelector", {"nodeId": root, "selector": f'[data-check="{cid}"]'})
        if node.get("nodeId"):
            used = driver.execute_cdp_cmd("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})["fonts"]
            fonts[cid] = [f["familyName"] for f in used]
    return fonts


def _ink_box(png: np.ndarray, box, pad: float = 1.0):
    """Bounding box (device pixels) of the dark pixels of ``png`` inside CSS-pixel ``box``, or None."""
    left, top, right, bottom = (int(round(v * SCALE)) for v in (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad))
    top, left = max(top, 0), max(left, 0)
    crop = png[top:bottom, left:right]
    if crop.size == 0:
        return None
    ys, xs = np.nonzero(crop < 128)
    if len(xs) == 0:
        return None
    return left + xs.min(), top + ys.min(), left + xs.max(), top + ys.max()


def _accent_problem(driver, acc: dict) -> tuple[dict, str | None]:
    """Measure one hat accent on a screenshot: its ink must sit over its letter's ink, just above it.

    Returns the measures (gap and horizontal offset in em) and the problem, if any."""
    from PIL import Image

    info = driver.execute_script("""
      const b = document.querySelector('[data-check="' + arguments[0] + '"]');
      const a = document.querySelector('[data-check="' + arguments[1] + '"]');
      b.scrollIntoView({block: "center"});
      const r = (el) => { const x = el.getBoundingClientRect(); return [x.left, x.top, x.right, x.bottom]; };
      const box = b.closest("mjx-container, .MathJax") || b;
      return {base: r(b), accent: r(a), em: parseFloat(getComputedStyle(box).fontSize),
              where: (b.closest("p, li, div, dd, td") || document.body).textContent.trim().slice(0, 60)};
    """, acc["base"], acc["accent"])
    png = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("L"), dtype=np.uint8)
    base, accent = _ink_box(png, info["base"]), _ink_box(png, info["accent"])
    where = f"hat accent near {info['where']!r}"
    if base is None or accent is None:
        return {}, f"{where}: no ink found for the {'letter' if base is None else 'accent'}"
    em = info["em"] * SCALE
    gap = (base[1] - accent[3]) / em  # > 0: accent above the letter
    centre = (accent[0] + accent[2]) / 2
    measures = {"gap_em": round(float(gap), 3), "centre_em": round(float(centre - base[0]) / em, 3),
                "letter_width_em": round(float(base[2] - base[0]) / em, 3)}
    if not (base[0] <= centre <= base[2]):
        return measures, (f"{where}: accent centre {measures['centre_em']:+.2f} em from the letter's left edge, "
                          "not over it")
    if not (-0.05 <= gap <= 0.35):
        return measures, f"{where}: accent ink {gap:.2f} em above the letter's ink (expected just above: 0 to 0.35 em)"
    return measures, None


def math_problems(driver, url: str) -> tuple[dict, list[str]]:
    """Load ``url``, wait for MathJax, and list what is wrong with the math; returns (survey, problems)."""
    driver.get(url)
    version = driver.execute_async_script(WAIT_FOR_MATHJAX)
    if version is None:
        return {}, ["MathJax never started"]
    survey = driver.execute_script(SURVEY)
    problems = []
    if not survey["count"]:
        problems.append("no typeset math on the page")
    problems += [f"MathJax error: {e[:80]!r}" for e in survey["errors"]]
    if survey["textGlyphs"]:
        problems.append(f"{len(survey['textGlyphs'])} glyphs drawn as text in a browser font instead of paths: "
                        f"{''.join(survey['textGlyphs'])[:40]!r}")
    problems += [f"web font {family!r} failed to load" for family in sorted(set(survey["fontErrors"]))]
    if survey["renderer"] == "mj2":  # text-based output: ask Chromium which fonts it really used
        ids = driver.execute_script("return Array.from(document.querySelectorAll('[data-check]'))"
                                    ".map((e) => e.getAttribute('data-check'));")
        fonts = _platform_fonts(driver, ids)
        bad = sorted({f for used in fonts.values() for f in used if not MATH_FONT.search(f)})
        if bad:
            problems.append(f"math glyphs drawn with non-math fonts {bad}")
        wrong: dict = {}  # variant -> (how many letters, fonts used)
        for v in survey["variants"]:
            used = fonts.get(v["node"], [])
            if not any(VARIANT_FONT[v["variant"]].search(f) for f in used):
                count, families = wrong.get(v["variant"], (0, set()))
                wrong[v["variant"]] = (count + 1, families | set(used))
        problems += [f"{count} {k} letters drawn with {sorted(families)}, not a {k} math font"
                     for k, (count, families) in wrong.items()]
    else:
        for v in survey["variants"]:
            if v["drawn"] < v["wanted"]:
                problems.append(f"{v['wanted'] - v['drawn']} {v['variant']} letters not drawn with the "
                                f"{v['variant']} glyphs")
    survey["accent_measures"] = []
    for acc in survey["accents"][:MAX_ACCENTS]:
        measures, problem = _accent_problem(driver, acc)
        survey["accent_measures"].append(measures)
        if problem:
            problems.append(problem)
    return survey, problems
