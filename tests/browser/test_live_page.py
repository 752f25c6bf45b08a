"""The live web page in headless Chromium, with readings flowing into a real collector.

Needs the Debian packages ``chromium`` and ``chromium-driver``; without them these tests are
skipped, or fail when ``CI=true``. ``TELEMETRY_SCREENSHOT=docs/live-view.png`` also saves the
page's screenshot there (with ten minutes of made-up history, so the sparklines have a shape).
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from telemetry.collector import Collector
from telemetry.collector import live as live_module
from telemetry.sinks.base import Record
from tests.conftest import StartCollector
from tests.support import RecordingSink, WireClient, timeout

CHROMIUM = next(
    (
        p
        for p in ("/usr/lib/chromium/chromium", shutil.which("chromium"))
        if p and os.path.exists(p)
    ),
    None,
)
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,860",
]


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A headless Chromium driven by the local chromedriver (never downloaded)."""
    missing = [
        name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not path
    ]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        message = (
            f"browser test needs {', '.join(missing)}: apt-get install -y chromium chromium-driver"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not try to download
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


async def _in_thread(fn: Callable[[], Any]) -> Any:
    """Selenium blocks: run it off the loop that serves the page."""
    return await asyncio.to_thread(fn)


async def _send_readings(collector: Collector) -> WireClient:
    client = await WireClient.connect(collector.ingest_port)
    await client.hello("greenhouse-2")
    readings = [
        {"sensor": "greenhouse-2/soil-3", "value": 41.25, "unit": "%", "metric": "moisture"},
        {"sensor": "greenhouse-2/air", "value": 21.5, "unit": "°C", "metric": "temperature"},
        {"sensor": "greenhouse-2/air", "value": "warm"},
    ]
    await client.send({"type": "batch", "seq": 0, "readings": readings})
    assert (await client.recv())["accepted"] == 2
    return client


def _backfill(collector: Collector) -> None:
    """Ten minutes of made-up history, through the real hook, for the screenshot."""
    now = datetime.now(UTC).timestamp()
    sensors = {
        "greenhouse-1/air": ("°C", "temperature", lambda i: 19 + 2 * math.sin(i / 9)),
        "greenhouse-1/soil-1": ("%", "moisture", lambda i: 48 - i * 0.08),
        "greenhouse-2/soil-3": ("%", "moisture", lambda i: 38 + 3 * math.cos(i / 14)),
        "greenhouse-2/air": ("°C", "temperature", lambda i: 20 + math.sin(i / 5) + i * 0.01),
        "shed/door": ("", "open", lambda i: float(i % 40 < 6)),
    }
    for i in range(120):
        at = now - (120 - i) * live_module.HISTORY_STEP
        ts = datetime.fromtimestamp(at, UTC)
        records = [
            Record(None, "greenhouse-2", name, round(fn(i), 2), ts, ts, metric=m, unit=u or None)
            for name, (u, m, fn) in sensors.items()
        ]
        with mock.patch.object(live_module.time, "time", return_value=at):
            collector.live.accepted(-1, records)
    collector.live.agents.pop(-1, None)


async def test_live_page_shows_agents_values_rejections_and_sinks(
    start_collector: StartCollector, browser: Any, tmp_path: Path
) -> None:
    """A person opening the page sees the agent, a value with its unit, a rejection and sinks."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    collector = await start_collector(sinks=[RecordingSink("sqlite")])
    screenshot_to = os.environ.get("TELEMETRY_SCREENSHOT")
    if screenshot_to:
        _backfill(collector)
    client = await _send_readings(collector)
    url = f"http://127.0.0.1:{collector.http.port}/"
    await _in_thread(lambda: browser.get(url))
    wait = WebDriverWait(browser, timeout(10))
    row = '#sensors tr[data-sensor="greenhouse-2/soil-3"]'
    await _in_thread(lambda: wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row)))

    def seen() -> dict[str, str]:
        text = lambda css: browser.find_element(By.CSS_SELECTOR, css).text  # noqa: E731
        return {
            "value": text(f"{row} td.value"),
            "agent": text('#agents tr[data-agent="greenhouse-2"]'),
            "rejections": text("#rejections tbody"),
            "sink": text('#sinks tr[data-sink="sqlite"]'),
            "state": text("#collector-state"),
        }

    page = await _in_thread(seen)
    assert page["value"].replace(" ", "") == "41.25%"
    assert "127.0.0.1:" in page["agent"]
    assert "greenhouse-2" in page["rejections"]
    assert "value: must be a number, not a string" in page["rejections"]
    assert "healthy" in page["sink"]
    assert "ready" in page["state"]
    sparkline = f"{row} svg.spark circle, {row} svg.spark polyline"
    assert await _in_thread(lambda: browser.find_elements(By.CSS_SELECTOR, sparkline))
    png = tmp_path / "live.png"
    assert await _in_thread(lambda: browser.save_screenshot(str(png)))
    assert png.stat().st_size > 10_000
    if screenshot_to:
        shutil.copyfile(png, screenshot_to)
    await client.close()


async def test_page_escapes_what_agents_send(start_collector: StartCollector, browser: Any) -> None:
    """A sensor name with HTML in it is shown as text, never run or parsed as markup."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    collector = await start_collector()
    client = await WireClient.connect(collector.ingest_port)
    await client.hello("evil")
    name = '<img src=x onerror="document.title=1">'
    await client.send({"type": "batch", "seq": 0, "readings": [{"sensor": name, "value": 1}]})
    await client.recv()
    await _in_thread(lambda: browser.get(f"http://127.0.0.1:{collector.http.port}/live"))
    wait = WebDriverWait(browser, timeout(10))
    cell = "#sensors tbody tr td"
    await _in_thread(
        lambda: wait.until(lambda d: d.find_element(By.CSS_SELECTOR, cell).text == name)
    )
    assert await _in_thread(lambda: browser.find_elements(By.CSS_SELECTOR, "#sensors img")) == []
    assert await _in_thread(lambda: browser.title) == "telemetry · live"
    await client.close()


TIME = r"^\d{4}-\d\d-\d\d ([01]\d|2[0-3]):[0-5]\d:[0-5]\d (\S+)$"


async def test_page_reads_at_a_glance_after_a_restart(
    start_collector: StartCollector, browser: Any
) -> None:
    """After a restart the last stored values are shown, marked restored; sparklines carry
    min, max and last; bytes are humanised; times are 24-hour with date and zone; a
    rejection names its sensor."""
    import re

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    first = await start_collector()
    client = await WireClient.connect(first.ingest_port)
    await client.hello("pi-9")
    stored = [{"sensor": "cellar/humidity", "value": 71.5, "unit": "%"}]
    await client.send({"type": "batch", "seq": 0, "readings": stored})
    await client.recv()
    await client.close()
    await first.shutdown()

    collector = await start_collector()
    now = datetime.now(UTC).timestamp()
    for i, value in enumerate((10.0, 30.0, 25.0)):  # three steps of one sensor's history
        at = now - (3 - i) * live_module.HISTORY_STEP
        ts = datetime.fromtimestamp(at, UTC)
        with mock.patch.object(live_module.time, "time", return_value=at):
            collector.live.accepted(-1, [Record(None, "pi-9", "attic/temp", value, ts, ts)])
    collector.live.agents.pop(-1, None)
    client = await _send_readings(collector)  # greenhouse-2: a rejection of greenhouse-2/air

    await _in_thread(lambda: browser.get(f"http://127.0.0.1:{collector.http.port}/"))
    wait = WebDriverWait(browser, timeout(10))
    restored = '#sensors tr.restored[data-sensor="cellar/humidity"]'
    await _in_thread(lambda: wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, restored)))

    def seen() -> dict[str, Any]:
        text = lambda css: browser.find_element(By.CSS_SELECTOR, css).text  # noqa: E731
        attic = '#sensors tr[data-sensor="attic/temp"] svg.spark'
        return {
            "restored_value": text(f"{restored} td.value"),
            "restored_when": text(f"{restored} td.when"),
            "spark": {c: text(f"{attic} text.{c}") for c in ("min", "max", "last")},
            "received": text('#agents tr[data-agent="greenhouse-2"] td.bytes'),
            "connected": browser.find_elements(By.CSS_SELECTOR, "#agents tbody td")[2].text,
            "rejection_sensor": text("#rejections tbody td.sensor"),
            "rejection_time": text("#rejections tbody td"),
            "zone": browser.execute_script(
                "return zoneName(new Date())"  # the page's own: the browser's zone, named
            ),
            "bytes": browser.execute_script(
                "return [0, 1023, 1536, 5 * 2 ** 20, 3.5 * 2 ** 30].map(fmtBytes)"
            ),
        }

    page = await _in_thread(seen)
    assert page["restored_value"].replace(" ", "") == "71.5%"
    assert page["restored_when"].endswith("restored")
    assert page["spark"] == {"min": "min 10", "max": "max 30", "last": "last 25"}
    assert re.fullmatch(r"\d+ B", page["received"]), page["received"]
    assert page["rejection_sensor"] == "greenhouse-2/air"
    assert page["bytes"] == ["0 B", "1023 B", "1.50 KiB", "5.00 MiB", "3.50 GiB"]
    restored_when = page["restored_when"].removesuffix("restored")
    for shown in (page["connected"], page["rejection_time"], restored_when):
        match = re.match(TIME, shown.strip())
        assert match, shown
        assert match.group(2) == page["zone"]
    await client.close()
