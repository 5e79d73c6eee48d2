"""The simplex explorer driven in headless Chromium: sliders and dragging change the figure, and the numbers it
shows are those of ssdlib.waterfill / ssdlib.SSD for the same f, q and budget (standalone page and book page)."""
from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch

import ssdlib
from headless import start_chrome
from ssdlib.reporting.widgets import write_explorer_page
from ssdlib.utils import REPO_ROOT

F0 = [0.55, 0.30, 0.15]
Q = [[0.80, 0.12, 0.08], [0.15, 0.75, 0.10], [0.10, 0.15, 0.75]]  # the theory notebook's f and q table
THEORY_PAGE = REPO_ROOT / "_build" / "html" / "executed" / "theory.html"
SHOWN = 1e-6  # the figure prints 6 decimals


@pytest.fixture(scope="module")
def chrome():
    driver = start_chrome(1280, 1400)
    yield driver
    driver.quit()


def _root(driver):
    from selenium.webdriver.common.by import By

    root = driver.find_element(By.CSS_SELECTOR, ".ssd-explorer")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", root)
    return root


def _shown(root, role: str) -> list[float]:
    from selenium.webdriver.common.by import By

    text = root.find_element(By.CSS_SELECTOR, f'[data-role="{role}"]').text
    return [float(x) for x in re.findall(r"-?\d+\.\d+|inf", text)]


def _state(driver, root) -> dict:
    return driver.execute_script(
        "const s = arguments[0].ssdState; return {f: s.f, T: s.T, eps: s.eps, normalized: s.normalized,"
        " ball: s.ball, p: s.classes.map((c) => c.p)};", root)


def _numbers_match_python(driver, root, q_table=Q) -> dict:
    """Every number the figure shows equals ssdlib's for the figure's own f, T, eps and entropy unit."""
    st = _state(driver, root)
    f = torch.tensor(st["f"], dtype=torch.float64)
    q = torch.tensor(q_table, dtype=torch.float64)
    H = float(ssdlib.entropy(f[None], normalized=st["normalized"])[0])
    r = st["eps"] * H
    p = ssdlib.waterfill(f.expand(3, 3).contiguous(), q, torch.full((3,), r, dtype=torch.float64))
    P = torch.softmax(f / st["T"], 0)
    np.testing.assert_allclose(_shown(root, "f"), st["f"], atol=SHOWN)
    assert _shown(root, "H") == pytest.approx([H], abs=SHOWN) and _shown(root, "r") == pytest.approx([r], abs=SHOWN)
    for y in range(3):
        np.testing.assert_allclose(_shown(root, f"p-{y}"), p[y].numpy(), atol=SHOWN, err_msg=f"p^{y}")
        assert _shown(root, f"P-{y}") == pytest.approx([float(P[y])], abs=SHOWN)
        kl_p = float(ssdlib.kl_divergence(p[y][None], q[y][None])[0])
        kl_f = float(ssdlib.kl_divergence(f[None], q[y][None])[0])
        assert _shown(root, f"klp-{y}") == pytest.approx([kl_p], abs=SHOWN)
        assert _shown(root, f"klf-{y}") == pytest.approx([kl_f], abs=SHOWN)
        assert _shown(root, f"l1-{y}") == pytest.approx([float((p[y] - f).abs().sum())], abs=SHOWN)
    # the cloud's CMI before and after ssdlib.SSD (seeded as the figure's draws) on the figure's own cloud
    cloud = driver.execute_script("return arguments[0].ssdConfig.cloud;", root)
    points, labels = torch.tensor(cloud["points"], dtype=torch.float64), torch.tensor(cloud["labels"])
    defense = ssdlib.SSD(q, T=st["T"], eps=st["eps"], entropy="normalized" if st["normalized"] else "nats",
                         seed=cloud["seed"])
    assert _shown(root, "cmi-before") == pytest.approx([ssdlib.cmi(points, labels)], abs=SHOWN)
    assert _shown(root, "cmi-after") == pytest.approx([ssdlib.cmi(defense(points), labels)], abs=SHOWN)
    return st


def _press(root, role: str, key: str, times: int):
    from selenium.webdriver.common.by import By

    slider = root.find_element(By.CSS_SELECTOR, f'[data-role="{role}"]')
    slider.click()  # focus: the click itself moves the thumb to where it lands, so re-read the state afterwards
    for _ in range(times):
        slider.send_keys(key)


def _drag_f_to(driver, root, target):
    """Drag on the simplex from the star to the point of barycentric coordinates ``target``."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    svg = root.find_element(By.CSS_SELECTOR, '[data-role="figure"]')
    star = root.find_element(By.CSS_SELECTOR, '[data-role="f-marker"]')
    offset = driver.execute_script("""
      const svg = arguments[0], p = arguments[1], m = svg.getScreenCTM(), pt = svg.createSVGPoint();
      pt.x = 24 + 360 * (p[1] + 0.5 * p[2]); pt.y = 392 - 360 * Math.sqrt(3) / 2 * p[2];
      const c = pt.matrixTransform(m), box = svg.getBoundingClientRect();
      return [c.x - (box.left + box.width / 2), c.y - (box.top + box.height / 2)];
    """, svg, target)
    ActionChains(driver).move_to_element(star).click_and_hold().move_to_element_with_offset(
        svg, int(offset[0]), int(offset[1])).release().perform()


def _drive(driver, root, q_table=Q):
    """Move every control once; after each move the figure changes and its numbers match Python's."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    assert_numbers_match_python = functools.partial(_numbers_match_python, q_table=q_table)
    start = assert_numbers_match_python(driver, root)

    _press(root, "eps", Keys.ARROW_RIGHT, 15)
    after_eps = assert_numbers_match_python(driver, root)
    assert after_eps["eps"] != start["eps"]
    assert after_eps["ball"] != start["ball"], "the L1 ball did not change with eps"
    assert after_eps["p"] != start["p"], "p^y did not change with eps"

    _press(root, "logT", Keys.ARROW_RIGHT, 40)
    after_T = assert_numbers_match_python(driver, root)
    assert after_T["T"] != after_eps["T"]

    Select(root.find_element(By.CSS_SELECTOR, '[data-role="unit"]')).select_by_value(
        "nats" if after_T["normalized"] else "normalized")
    after_unit = assert_numbers_match_python(driver, root)
    assert after_unit["normalized"] != after_T["normalized"] and after_unit["ball"] != after_T["ball"]

    _press(root, "f0", Keys.ARROW_LEFT, 50)
    after_f0 = assert_numbers_match_python(driver, root)
    assert after_f0["f"] != after_unit["f"]

    target = [0.2, 0.3, 0.5]
    _drag_f_to(driver, root, target)
    after_drag = assert_numbers_match_python(driver, root)
    assert np.abs(np.array(after_drag["f"]) - target).sum() < 0.03, f"dragging put f at {after_drag['f']}"
    marker = root.find_element(By.CSS_SELECTOR, '[data-role="p-marker-0"]')
    assert marker.get_attribute("cx") and after_drag["p"] != after_f0["p"]


def test_standalone_explorer_follows_its_controls(tmp_path, chrome):
    page = write_explorer_page(tmp_path / "explorer.html", Q, F0, eps=0.3, T=0.1)
    chrome.get(page.as_uri())
    root = _root(chrome)
    logs = [e for e in chrome.get_log("browser") if e["level"] == "SEVERE"]
    assert not logs, logs
    _drive(chrome, root)


@pytest.mark.book
@pytest.mark.skipif(not THEORY_PAGE.exists(), reason="no built book: run `make book SCALE=smoke` first")
def test_explorer_in_the_rendered_theory_page(chrome):
    chrome.get(THEORY_PAGE.as_uri())
    root = _root(chrome)
    assert "SSDExplorer" not in " ".join(
        e["message"] for e in chrome.get_log("browser") if e["level"] == "SEVERE"), "the explorer's script failed"
    config = chrome.execute_script("return arguments[0].ssdConfig;", root)
    assert config["f"] == F0, "the page's explorer does not show the notebook's f"
    # it starts from panel (d): the cloud's own class means as q^y, so its CMI is the one printed above it
    cloud = config["cloud"]
    means = ssdlib.estimate_q_table(torch.tensor(cloud["points"], dtype=torch.float64),
                                    torch.tensor(cloud["labels"]), 3)
    np.testing.assert_allclose(config["q"], means.numpy(), atol=1e-12)
    text = chrome.execute_script("const a = document.querySelector('main').cloneNode(true);"
                                 "a.querySelectorAll('.ssd-explorer').forEach(e => e.remove()); return a.innerText;")
    shown = _shown(root, "cmi-before")[0]
    assert f"{shown:.3f}" in text, "the explorer's CMI is not the one panel (d) prints"
    _drive(chrome, root, q_table=config["q"])


@pytest.mark.book
@pytest.mark.skipif(not THEORY_PAGE.exists(), reason="no built book: run `make book SCALE=smoke` first")
def test_explorer_text_is_legible_at_page_width(chrome):
    """Every label of the explorer's two SVG figures is at least 10 CSS px tall at 1280 px (it was 6-7)."""
    chrome.set_window_size(1280, 1400)
    chrome.get(THEORY_PAGE.as_uri())
    _root(chrome)
    smallest = chrome.execute_script("""
      let least = Infinity;
      document.querySelectorAll('.ssd-explorer svg[data-role]').forEach(svg => {
        const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
        svg.querySelectorAll('text').forEach(t => {
          least = Math.min(least, parseFloat(t.getAttribute('font-size') || 12) * scale); });
      });
      return least;""")
    assert smallest >= 10, f"explorer text drawn at {smallest:.1f} px"
