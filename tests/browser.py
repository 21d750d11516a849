"""Headless Chromium for the browser tests (test_html_report.py, test_serve_browser.py):
Debian's `chromium` driven through Selenium and Debian's `chromium-driver`. The tests are
skipped only when those two are not installed (`.ci/run` installs them).

Each module keeps its own module-scoped `browser` fixture (`with chrome() as driver:
yield driver`), so one browser serves a module's tests.
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
NOT_INSTALLED = (
    "Debian's chromium and chromium-driver are not installed "
    "(apt-get install chromium chromium-driver; .ci/run installs them)"
)
needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=NOT_INSTALLED)
Browser = webdriver.Chrome
WAIT = 20.0  # seconds a browser condition may take before the test fails


@contextlib.contextmanager
def chrome() -> Iterator[Browser]:
    """A headless Chromium that keeps its console log (`console_errors`); skips the test
    when Chromium or its driver is not installed."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(NOT_INSTALLED)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--allow-file-access-from-files",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Browser) -> list[dict[str, Any]]:
    """Browser log entries at error level since the last call (the log is drained)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [e for e in entries if e["level"] in ("SEVERE", "ERROR")]


def wait(driver: Browser, condition: Callable[[Browser], Any], what: str) -> Any:
    return WebDriverWait(driver, WAIT).until(condition, message=f"timed out: {what}")


def load_report(driver: Browser, path: Path) -> None:
    """Open the HTML report file `path` and wait until its script has drawn it."""
    console_errors(driver)  # drop what an earlier page logged
    driver.get("about:blank")
    driver.get(path.resolve().as_uri())
    wait(
        driver,
        lambda d: d.execute_script("return document.documentElement.dataset.ready === '1'"),
        "report ready",
    )


def js(driver: Browser, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def png() -> bytes:
    """A 2x2 red PNG, made here so the tests need no image library."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
