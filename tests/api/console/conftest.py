"""A real headless Chromium (Debian's ``chromium`` and ``chromedriver``) driven through Selenium.

Debian's browser, not a test tool's own download: that needs the network at test time. Install both with
``scripts/cluster-tools.sh chromium`` (``make test`` does). Screenshots go to ``VOXGATE_TEST_SCREENSHOTS``
when it is set, else to the test's temporary folder (printed).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1366, 768)  # a laptop screen


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("VOXGATE_TEST_SCREENSHOTS")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium(user_data: Path, fake_audio: Path | None = None) -> webdriver.Chrome:
    """Headless Chromium as root in a container: no sandbox, no GPU, nothing phoning home; the fake
    microphone plays ``fake_audio`` (a WAV, looped) when given; downloads go to ``user_data/downloads``."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing: run `bash scripts/cluster-tools.sh chromium` "
            "(Debian's chromium and chromium-driver)",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={user_data}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt
    ):
        options.add_argument(arg)
    downloads = user_data / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    if fake_audio is not None:
        options.add_argument("--use-fake-device-for-media-stream")
        options.add_argument(f"--use-file-for-fake-audio-capture={fake_audio}")
    service = Service(executable_path=str(CHROMEDRIVER))  # never Selenium Manager's download
    return webdriver.Chrome(options=options, service=service)


@pytest.fixture
def browser_factory(tmp_path: Path) -> Iterator[Callable[..., webdriver.Chrome]]:
    """Start browsers (``browser_factory(fake_audio=...)``); each is quit after the test."""
    started: list[webdriver.Chrome] = []

    def start(fake_audio: Path | None = None) -> webdriver.Chrome:
        driver = chromium(tmp_path / f"chromium-{len(started)}", fake_audio)
        started.append(driver)
        return driver

    try:
        yield start
    finally:
        for driver in started:
            driver.quit()
        for index in range(len(started)):
            shutil.rmtree(tmp_path / f"chromium-{index}", ignore_errors=True)
