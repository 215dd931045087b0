"""The running dashboard in a real headless Chromium during a replay: no exception boxes, no empty
charts, and tweets holding HTML or markdown are shown as text (no element is created from them).

The screenshot is kept under the test's tmp dir and copied to out/screenshots/dashboard.png.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.dashboard.conftest import produce, scored
from tests.ports import start_server, stop

REPO = Path(__file__).resolve().parents[2]
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium")
PAYLOAD = '<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> [click](javascript:alert(1)) **bold**'
SAMPLE = ["loving the new app #travel", "worst delay ever", "meeting moved to thursday", "great support 🎉"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM), reason="needs Debian's chromium and chromium-driver"),
]


@pytest.fixture
def dashboard_url(broker_url, topics, tmp_path, dead_port):
    """`sentistream dashboard` on a free port, reading this test's topics; stopped afterwards."""
    env = os.environ | topics | {"SENTISTREAM_DASHBOARD_WORKER_URL": f"http://127.0.0.1:{dead_port}"}
    process, port = start_server(
        lambda port: [
            sys.executable,
            "-m",
            "sentistream.cli",
            "dashboard",
            "--port",
            str(port),
            "--broker",
            broker_url,
        ],
        tmp_path / "dashboard.log",
        lambda port: _answers(f"http://127.0.0.1:{port}/_stcore/health"),
        env=env,
        cwd=tmp_path,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # the page is re-rendering under us; try again
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class Replay(threading.Thread):
    """Scored events at a gentle rate, as a worker behind `sentistream replay` would write them."""

    def __init__(self, broker_url: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.broker_url, self.topic, self.stop = broker_url, topic, threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            label = ("positive", "negative", "neutral", "positive")[i % 4]
            produce(self.broker_url, self.topic, [scored(SAMPLE[i % 4], label, 0.5 + (i % 5) / 10)])
            i += 1
            time.sleep(0.2)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"):
        options.add_argument(flag)
    for flag in ("--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1600,2600")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_dashboard_renders_live_data_and_shows_markup_as_text(
    browser, dashboard_url, broker_url, topics, tmp_path
):
    from selenium.webdriver.common.by import By

    replay = Replay(broker_url, topics["SENTISTREAM_SCORED_TOPIC"])
    replay.start()
    try:
        browser.get(dashboard_url)
        wait_until(
            lambda: _metric(browser, "Total scored") not in (None, "0"), 60, "scored events on the page"
        )
        wait_until(lambda: len(_charts(browser)) >= 2, 30, "both live charts")
    finally:
        replay.stop.set()
        replay.join()
    produce(broker_url, topics["SENTISTREAM_SCORED_TOPIC"], [scored(PAYLOAD, "neutral")])
    newest = wait_until(
        lambda: _newest(browser, By) == f"Newest: {PAYLOAD}" and True, 30, "the payload tweet"
    )
    # A later event on the page proves the payload has been through more refreshes since it first
    # showed, so anything that would inject has had its chance.
    produce(broker_url, topics["SENTISTREAM_SCORED_TOPIC"], [scored("after the payload", "positive")])
    wait_until(lambda: _newest(browser, By) == "Newest: after the payload", 30, "the event after the payload")
    shot = tmp_path / "dashboard.png"
    browser.save_screenshot(str(shot))
    (REPO / "out" / "screenshots").mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, REPO / "out" / "screenshots" / "dashboard.png")

    assert newest
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    for chart in _charts(browser):
        assert browser.execute_script(DRAWN_MARKS, chart) > 0, "a chart rendered empty (no marks drawn)"
    cells = browser.execute_script("return [...document.querySelectorAll('td')].map(td => td.textContent)")
    assert PAYLOAD in cells  # the table's own cells hold the payload as characters
    assert not browser.find_elements(By.CSS_SELECTOR, 'img[src="x"], a[href^="javascript"]')
    scripts = browser.execute_script("return [...document.scripts].map(s => s.text).join(' ')")
    assert "__xss" not in scripts
    assert browser.execute_script("return window.__xss === undefined")
    assert not browser.find_elements(By.XPATH, "//*[@data-testid='stText']//strong")


def _metric(browser, label: str) -> str | None:
    return browser.execute_script(
        """const m = [...document.querySelectorAll('[data-testid="stMetric"]')]
             .find(e => e.querySelector('[data-testid="stMetricLabel"]').innerText.trim() === arguments[0]);
           return m ? m.querySelector('[data-testid="stMetricValue"]').innerText.trim() : null;""",
        label,
    )


def _charts(browser):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"] svg.marks')


def _newest(browser, by) -> str | None:
    texts = browser.find_elements(by.CSS_SELECTOR, '[data-testid="stText"]')
    return texts[0].text if texts else None


# How many data marks (bars, areas) the chart drew with a visible size; 0 for an empty chart.
DRAWN_MARKS = """
return [...arguments[0].querySelectorAll('g.role-mark path')]
  .filter(p => { const b = p.getBBox(); return b.width > 0 && b.height > 0; }).length;
"""


def test_models_tab_draws_agreement_and_accuracy_charts(browser, dashboard_url, broker_url, topics, tmp_path):
    import asyncio
    from datetime import UTC, datetime, timedelta

    from selenium.webdriver.common.by import By

    from stream.control import publish
    from stream.events import Deployment, ModelAccuracy, ShadowStats
    from stream.settings import KafkaSettings
    from tests.dashboard.conftest import stats_window

    old, new, now = "tiny@1+aaaaaaaaaaaa", "tiny@2+bbbbbbbbbbbb", datetime.now(UTC).replace(microsecond=0)
    windows = []
    for i in range(6):
        confusion = {"positive": {"positive": 6 + i % 2, "negative": 2}, "negative": {"negative": 4}}
        shadow = ShadowStats(
            champion=old, challenger=new, compared=12 + i % 2, agreed=10 + i % 2, dropped=i % 3,
            confusion=confusion, challenger_accuracy=ModelAccuracy(labelled=12, correct=9 + i % 3),
        )  # fmt: skip
        accuracy = {old: ModelAccuracy(labelled=12, correct=8 + i % 2)}
        end = now - timedelta(seconds=10 * (6 - i))
        windows.append(
            stats_window("host-a:1", end, 12, by_model={old: 12}, accuracy=accuracy, shadow=shadow)
        )
    produce(broker_url, topics["SENTISTREAM_STATS_TOPIC"], windows)
    kafka = KafkaSettings(broker=broker_url, models_topic=topics["SENTISTREAM_MODELS_TOPIC"])
    champion = Deployment(
        uri="/bundles/tiny-1", model="tiny@1", model_version=old, checksum="a" * 64,
        deployed_by="ana@host", deployed_at=now,
    )  # fmt: skip
    asyncio.run(publish(kafka, "champion", champion))

    browser.get(dashboard_url)
    tab = wait_until(
        lambda: next(t for t in browser.find_elements(By.CSS_SELECTOR, '[role="tab"]') if "Models" in t.text),
        60,
        "the Models tab",
    )
    tab.click()
    wait_until(lambda: _metric(browser, "Compared") == "75", 60, "the shadow figures")
    wait_until(lambda: len([c for c in _charts(browser) if c.is_displayed()]) >= 2, 30, "both model charts")
    time.sleep(2)
    shot = tmp_path / "models.png"
    browser.save_screenshot(str(shot))
    (REPO / "out" / "screenshots").mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, REPO / "out" / "screenshots" / "dashboard-models.png")

    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    for chart in [c for c in _charts(browser) if c.is_displayed()]:
        assert browser.execute_script(DRAWN_MARKS_ANY, chart) > 0, "a model chart rendered empty"
    cells = browser.execute_script("return [...document.querySelectorAll('td')].map(td => td.textContent)")
    assert "ana@host" in cells


# Data marks of any kind (lines, points, bars) drawn with a visible size.
DRAWN_MARKS_ANY = """
return [...arguments[0].querySelectorAll('g.role-mark path, g.role-mark circle')]
  .filter(p => { const b = p.getBBox(); return b.width > 0 || b.height > 0; }).length;
"""
