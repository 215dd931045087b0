"""The History tab in a real headless Chromium: the chart draws, search finds, markup stays text."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from infra.broker import free_port
from tests.dashboard.test_browser import (
    CHROMEDRIVER,
    CHROMIUM,
    DRAWN_MARKS,
    _metric,
    browser,  # noqa: F401  (the fixture)
    streamlit_served,
    wait_until,
)
from tests.dashboard.test_history import MARKUP, write_history

PAGE = Path(__file__).with_name("history_page.py")
REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM), reason="needs Debian's chromium and chromium-driver"),
]


@pytest.fixture
def history_url(tmp_path):
    folder = write_history(tmp_path / "history")
    port = free_port()
    env = os.environ | {"SENTISTREAM_DASHBOARD_HISTORY_DIR": str(folder), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "streamlit", "run", str(PAGE), "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]  # fmt: skip
    with streamlit_served(command, env, port, tmp_path) as url:
        yield url


def test_history_tab_in_a_real_browser(browser, history_url, tmp_path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(history_url)
    wait_until(lambda: _metric(browser, "Events in range") == "18", 60, "the events metric")
    chart = wait_until(
        lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"] svg.marks'),
        30,
        "the chart",
    )[0]
    assert browser.execute_script(DRAWN_MARKS, chart) > 0, "the share chart drew nothing"
    box = wait_until(
        lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="stTextInput"] input'), 30, "search box"
    )[0]
    box.send_keys("xss", Keys.ENTER)
    cells = "return [...document.querySelectorAll('td')].map(td => td.textContent)"
    wait_until(lambda: MARKUP in browser.execute_script(cells), 30, "the search result")
    browser.save_screenshot(str(tmp_path / "history.png"))
    (REPO / "out" / "screenshots").mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "history.png", REPO / "out" / "screenshots" / "history.png")
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not browser.find_elements(By.CSS_SELECTOR, "script:not([src])") or browser.execute_script(
        "return ![...document.scripts].some(s => s.text.includes('__xss'))"
    )
    assert browser.execute_script("return window.__xss === undefined")
