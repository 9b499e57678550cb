"""The console in a real headless Chromium against a real `voxgate serve` on loopback, with real speech.

One walk through the console as an operator does it, each step checked on the page and, where it changes
the store, through the API too: log in; enroll a speaker from two uploaded recordings and see the
voiceprint listed; watch two live HTTP streams fed by this test (the same speaker, and someone else) on the
Live calls page until one shows `verified` and the other `not_verified`; delete the voiceprint; open a
calibration profile's report; fit a profile on an uploaded ZIP of recordings and read its DET curve; the
System and Events pages; then the Try-it page with Chromium's fake
microphone playing real speech: enroll from the microphone, then verify. A screenshot of every page goes to
the screenshot folder (see conftest.py), and the first load's page weight and time to first render are
written to ``figures.json`` beside them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.api.test_calibrate import dataset_zip
from tests.api.test_pbx import account
from tests.conftest import libri_files
from tests.telephony import peers

PASSWORD = "console-test-password-42"
MIN_ENROLL_S = 8.0  # lowered from 20 s: two LibriSpeech recordings of 12-15 s each, a short microphone take
SPEAKER, OTHER, TRY_SPEAKER = "1688", "2414", "3080"
CUSTOMER = "console-1688"
RATE_HZ = 16000


@pytest.fixture(scope="module")
def server_env() -> Iterator[None]:
    """The settings this module's ``live_server`` starts with (it passes the environment on)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VOXGATE_MIN_ENROLL_SPEECH_S", str(MIN_ENROLL_S))
        env.setenv("VOXGATE_SIP_BIND_HOST", "127.0.0.1")  # registers with the test's Kamailio on loopback
        yield


@pytest.fixture(scope="module")
def token(server_env: None, live_server: str) -> str:
    response = httpx.post(f"{live_server}/rest-auth/login/", json={"username": "admin", "password": PASSWORD})
    response.raise_for_status()
    return str(response.json()["key"])


def speech(speaker: str, indices: list[int]) -> np.ndarray:
    """Recordings of one LibriSpeech speaker joined, float32 at 16 kHz."""
    files = libri_files(speaker)
    return np.concatenate([sf.read(files[i], dtype="float32")[0] for i in indices])


class Caller(threading.Thread):
    """A contact centre's side of a call: opens an HTTP stream, sends real speech at twice real time and
    asks for a verification after every half second of audio, as an integration polls; then keeps
    polling without audio until told to hang up."""

    def __init__(self, base: str, token: str, audio: np.ndarray, external_id: str, info: dict[str, str]):
        super().__init__(daemon=True)
        self.base, self.headers = base, {"Authorization": f"Token {token}"}
        self.pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        self.external_id, self.info = external_id, info
        self.uuid = ""
        self.results: list[str] = []
        self.opened = threading.Event()
        self.hang_up = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base, headers=self.headers, timeout=60) as client:
                opened = client.post("/api/v2/stream/HTTP", json={"info": self.info, "frequency": RATE_HZ})
                opened.raise_for_status()
                self.uuid = opened.json()["uuid"]
                self.opened.set()
                step = RATE_HZ  # bytes: half a second of s16le
                for offset in range(0, len(self.pcm), step):
                    if self.hang_up.is_set():
                        break
                    client.post(
                        f"/api/v2/stream/HTTP/data/{self.uuid}", content=self.pcm[offset : offset + step]
                    )
                    self._verify(client)
                    time.sleep(0.25)
                while not self.hang_up.wait(0.5):
                    self._verify(client)
                client.delete(f"/api/v2/stream/HTTP/{self.uuid}")
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.opened.set()

    def _verify(self, client: httpx.Client) -> None:
        answer = client.post("/api/v2/verify", json={"uuid": self.uuid, "external_id": self.external_id})
        if answer.status_code == 200:
            self.results.append(answer.json()["result"])


CONTRAST_JS = """
const rgb = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
const lum = ([r, g, b]) => {
  const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const behind = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
const low = [];
for (const el of document.querySelectorAll('body *')) {
  if (el.closest('svg, [disabled], [hidden]') || !el.checkVisibility()) continue;
  const text = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
  if (!text) continue;
  const style = getComputedStyle(el);
  const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(behind(el))];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  const large = parseFloat(style.fontSize) >= 24 || (parseFloat(style.fontSize) >= 18.66 && style.fontWeight >= 700);
  if (ratio < (large ? 3 : 4.5)) low.push(`${text.slice(0, 40)}: ${ratio.toFixed(2)}`);
}
return low;
"""


class Console:
    """The browser on the console, with the few moves the test repeats."""

    def __init__(self, driver: webdriver.Chrome, base: str, screenshots: Path) -> None:
        self.driver, self.base, self.folder = driver, base, screenshots
        self.shots: list[str] = []

    def wait(self, condition: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
        try:
            return WebDriverWait(self.driver, timeout_s, poll_frequency=0.2).until(lambda _: condition())
        except Exception as exc:  # a timeout, or an error the page showed
            self.shot(f"failed-{what.replace(' ', '-')[:40]}")
            shown = self.text("#page")[-600:]
            raise AssertionError(f"{exc!r} waiting {timeout_s} s for {what}; the page: {shown}") from exc

    def shows(self, element: WebElement, text: str) -> bool:
        """Whether ``element`` shows ``text``; an error on its status line fails at once."""
        errors = element.find_elements(By.CSS_SELECTOR, ".status[data-kind='error']")
        if errors and errors[0].text:
            raise AssertionError(f"the page shows an error: {errors[0].text}")
        return text in element.text

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        """The text the element shows now, read in one step (pages redraw: an element found first may be
        replaced before its text is read)."""
        return str(
            self.driver.execute_script("return document.querySelector(arguments[0])?.innerText ?? ''", css)
        )

    def open(self, name: str, label: str) -> None:
        """Follow the navigation link, as a person does, and wait for the page's heading."""
        self.driver.find_element(By.LINK_TEXT, label).click()
        self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, f"section[data-page='{name}'] h1"), name)

    def open_by_keyboard(self, name: str, label: str) -> None:
        """From the top of the document: the first Tab reaches the skip link, further Tabs the navigation
        link, Enter follows it."""
        self.driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
        keys = ActionChains(self.driver)
        keys.send_keys(Keys.TAB).perform()
        assert self.driver.execute_script("return document.activeElement.textContent") == "Skip to content"
        for _ in range(12):
            keys.send_keys(Keys.TAB).perform()
            if self.driver.execute_script("return document.activeElement.textContent") == label:
                break
        else:
            raise AssertionError(f"Tab never reached the {label} link")
        keys.send_keys(Keys.ENTER).perform()
        self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, f"section[data-page='{name}'] h1"), name)
        focused = self.driver.execute_script("return document.activeElement.id")
        assert focused == f"h-{name}", focused  # focus moves to the new page's heading

    def shot(self, name: str, css: str | None = None) -> None:
        """A screenshot of the window, scrolled to the top or to ``css``'s element."""
        if css is None:
            self.driver.execute_script("window.scrollTo(0, 0)")
        else:
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", self.find(css))
        self.check_labels()
        self.check_contrast()
        file = f"{len(self.shots) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(self.folder / file))
        self.shots.append(file)

    def check_labels(self) -> None:
        """Every form control of the page has an accessible name (a label, or aria-label)."""
        unnamed = self.driver.execute_script(
            "return [...document.querySelectorAll('#page input, #page select, #page button')]"
            ".filter((el) => !(el.labels?.length || el.getAttribute('aria-label') || el.textContent.trim()))"
            ".map((el) => el.outerHTML)"
        )
        assert not unnamed, unnamed

    def check_contrast(self) -> None:
        """Every text the page shows meets WCAG AA contrast against what is behind it (4.5:1; 3:1 for large
        text); disabled controls are exempt, as WCAG has it."""
        low = self.driver.execute_script(CONTRAST_JS)
        assert not low, low

    def downloaded(self, folder: Path, pattern: str) -> Path:
        """The file the browser saved in ``folder`` (its name matches ``pattern``), once complete."""

        def saved() -> Path | None:
            files = [p for p in folder.glob(pattern) if not p.name.endswith(".crdownload")]
            return files[0] if files else None

        found: Path = self.wait(saved, f"the download {pattern}")
        return found

    def accept_confirm(self) -> None:
        def alert() -> bool:
            try:
                self.driver.switch_to.alert.accept()
            except NoAlertPresentException:
                return False
            return True

        self.wait(alert, "the confirmation dialog", 5)


def first_load_figures(driver: webdriver.Chrome) -> dict[str, float]:
    """KB transferred for the console's own files (document, scripts, styles) and first contentful paint."""
    figures: dict[str, float] = driver.execute_script(
        """
        const entries = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
          .filter((e) => new URL(e.name).pathname.startsWith('/console/'));
        const paint = performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint');
        return {
          files: entries.length,
          kb_transferred: entries.reduce((sum, e) => sum + e.transferSize, 0) / 1024,
          kb_decoded: entries.reduce((sum, e) => sum + e.decodedBodySize, 0) / 1024,
          first_contentful_paint_ms: paint ? paint.startTime : -1,
          dom_content_loaded_ms: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
        };
        """
    )
    return figures


@pytest.fixture
def api(live_server: str, token: str) -> Iterator[httpx.Client]:
    """The REST API as the test itself calls it, to check what the page did."""
    with httpx.Client(
        base_url=live_server, headers={"Authorization": f"Token {token}"}, timeout=60
    ) as client:
        yield client


def test_console_end_to_end(
    server_env: None,
    api: httpx.Client,
    live_server: str,
    token: str,
    screenshots: Path,
    browser_factory: Callable[..., webdriver.Chrome],
    tmp_path: Path,
) -> None:
    # the fake microphone: real speech of a third speaker, as a WAV (Chromium loops it)
    microphone = tmp_path / "microphone.wav"
    sf.write(microphone, speech(TRY_SPEAKER, [0, 1, 2, 3]), RATE_HZ, subtype="PCM_16")
    driver = browser_factory(fake_audio=microphone)
    page = Console(driver, live_server, screenshots)
    figures: dict[str, Any] = {}

    # -- log in (first load: weight and time to first render) -------------------------------------------
    driver.get(f"{live_server}/")  # the server's address leads to the console
    page.wait(lambda: page.find("#login").is_displayed(), "the login form")
    assert driver.current_url == f"{live_server}/console/"
    # the paint is timed once the frame is presented, a moment after the form shows (on a busy box, later)
    page.wait(
        lambda: driver.execute_script(
            "return performance.getEntriesByType('paint').some((e) => e.name === 'first-contentful-paint')"
        ),
        "the first contentful paint's timing",
    )
    figures["login_page"] = first_load_figures(driver)
    page.shot("login")
    page.find("#password").send_keys("not the password")
    page.find("#login-form button[type=submit]").click()
    page.wait(lambda: "Unable to log in" in page.text("#login-status"), "a refused login")
    page.find("#password").clear()
    page.find("#password").send_keys(PASSWORD)
    page.find("#login-form button[type=submit]").click()
    page.wait(lambda: page.find("#nav").is_displayed(), "the navigation after login")
    page.wait(lambda: page.driver.find_elements(By.CSS_SELECTOR, "#live-running"), "the Live calls page")
    figures["after_login"] = first_load_figures(driver)

    # -- enroll from two uploaded recordings; the voiceprint is listed ------------------------------------
    page.open_by_keyboard("voiceprints", "Voiceprints")
    page.find("#voiceprint-list")
    form = page.find("form[aria-labelledby='h-enroll']")
    form.find_element(By.CSS_SELECTOR, "input[name=external_id]").send_keys(CUSTOMER)
    recordings = libri_files(SPEAKER)[:2]  # 15.0 s and 12.6 s
    form.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys("\n".join(str(p) for p in recordings))
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # 240 s: an import runs niced, and a CI box may be busy
    page.wait(lambda: page.shows(form, f"Enrolled {CUSTOMER}"), "the enrollment", 240)
    page.wait(lambda: CUSTOMER in page.text("#voiceprint-list table"), "the voiceprint in the list")
    page.wait(lambda: "Net speech" in page.text("#voiceprint-details"), "the voiceprint's details")
    stored = api.post("/api/v2/voiceprint", json={"external_id": CUSTOMER}).json()
    assert stored["exists"] and stored["source"]["type"] == "recordings"
    page.shot("voiceprints-enrolled")
    downloads = Path(driver.capabilities["chrome"]["userDataDir"]) / "downloads"
    page.driver.find_element(By.XPATH, "//button[text()='Download snapshot']").click()
    snapshot = page.downloaded(downloads, "voxgate-snapshot-*.json.gz")

    # -- live calls: the speaker is verified, someone else is not ------------------------------------------
    page.open("live", "Live calls")
    page.wait(lambda: "No stream is running" in page.text("#live-running"), "an empty Live calls page")
    genuine = Caller(live_server, token, speech(SPEAKER, [6, 7, 3]), CUSTOMER, {"caller": "+44 20 7946 0018"})
    impostor = Caller(live_server, token, speech(OTHER, [2, 4]), CUSTOMER, {"caller": "+44 20 7946 0999"})
    for call in (genuine, impostor):
        call.start()
        call.opened.wait(30)
        assert call.error is None, call.error
    try:

        def row_verdict(uuid: str) -> str:
            """The verdict in the running stream's row, read in one step (the table is redrawn live)."""
            return str(
                driver.execute_script(
                    "const code = document.querySelector(`#live-running code[title='${arguments[0]}']`);"
                    "return code ? code.closest('tr').querySelector('[data-verdict]').dataset.verdict : '';",
                    uuid,
                )
            )

        page.wait(lambda: "+44 20 7946 0018" in page.text("#live-running"), "the genuine call on the page")
        page.wait(lambda: row_verdict(genuine.uuid) == "verified", "the genuine call verified", 90)
        page.wait(lambda: row_verdict(impostor.uuid) == "not_verified", "the impostor not verified", 90)
        assert page.driver.find_elements(By.CSS_SELECTOR, "#live-running svg.timeline circle.v-verified")
        page.shot("live-calls")
    finally:
        for call in (genuine, impostor):
            call.hang_up.set()
        for call in (genuine, impostor):
            call.join(30)
    assert genuine.error is None and impostor.error is None, (genuine.error, impostor.error)
    assert genuine.results[-1] == "verified" and "verified" not in impostor.results, (
        genuine.results,
        impostor.results,
    )
    page.wait(lambda: genuine.uuid[:8] in page.text("#live-ended"), "the ended call under Recently ended")

    # -- delete the voiceprint -----------------------------------------------------------------------------
    page.open("voiceprints", "Voiceprints")
    page.wait(lambda: CUSTOMER in page.text("#voiceprint-list table"), "the voiceprint in the list")
    page.driver.find_element(By.XPATH, f"//*[@id='voiceprint-list']//button[text()='{CUSTOMER}']").click()
    page.wait(lambda: f"Delete {CUSTOMER}" in page.text("#voiceprint-details"), "the delete button")
    page.driver.find_element(By.XPATH, f"//button[text()='Delete {CUSTOMER}']").click()
    page.accept_confirm()
    page.wait(lambda: f"Deleted {CUSTOMER}" in page.text("#voiceprint-details"), "the deletion")
    page.wait(lambda: "0 voiceprints" in page.text("#voiceprint-list"), "the empty list")
    assert api.post("/api/v2/voiceprint", json={"external_id": CUSTOMER}).json()["exists"] is False
    page.shot("voiceprints-deleted")
    # ... and back from the snapshot downloaded before
    page.find("input[accept^='.json']").send_keys(str(snapshot))
    page.driver.find_element(By.XPATH, "//button[text()='Import snapshot']").click()
    page.wait(lambda: "Imported 1, overwritten 0, skipped 0" in page.text("#page"), "the snapshot import")
    page.wait(lambda: CUSTOMER in page.text("#voiceprint-list table"), "the voiceprint listed again")
    assert api.post("/api/v2/voiceprint", json={"external_id": CUSTOMER}).json()["exists"] is True

    # -- a calibration profile's report --------------------------------------------------------------------
    page.open("calibration", "Calibration")
    page.wait(lambda: "telephone" in page.text("#profile-list table"), "the profile list")
    page.driver.find_element(By.CSS_SELECTOR, "button[aria-label='Report of telephone']").click()
    page.wait(lambda: "Report: telephone" in page.text("#profile-report"), "the report")
    report = page.text("#profile-report")
    telephone = next(p for p in api.get("/api/v2/maintenance/asp/").json() if p["name"] == "telephone")
    document = api.get(f"/api/v2/maintenance/asp/{telephone['uuid']}").json()["document"]
    assert str(document["thresholds"]["accept_llr"]) in report and "librispeech_test_other" in report
    page.shot("calibration-report", "#profile-report")
    # fit a profile on uploaded recordings: progress, then its DET curve and histograms
    archive = tmp_path / "digits.zip"
    archive.write_bytes(dataset_zip())
    fit = page.find("form[aria-labelledby='h-fit']")
    fit.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(archive))
    fit.find_element(By.CSS_SELECTOR, "input[name=fit-name]").send_keys("console-fit")
    Select(fit.find_element(By.CSS_SELECTOR, "select[name=fit-model]")).select_by_value("campplus")
    fit.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    page.wait(lambda: page.shows(fit, "Stored console-fit"), "the fitted profile", 180)
    page.wait(lambda: page.driver.find_elements(By.CSS_SELECTOR, "#fit-report svg.det polyline"), "the DET")
    assert "EER" in page.text("#fit-report")
    fitted = [p for p in api.get("/api/v2/maintenance/asp/").json() if p["name"] == "console-fit"]
    assert len(fitted) == 1 and not fitted[0]["active"]
    page.shot("calibration-fit", "#fit-report")
    page.driver.find_element(By.CSS_SELECTOR, "button[aria-label='Activate console-fit']").click()
    page.wait(lambda: "Active: console-fit" in page.text("#profile-list"), "the fitted profile active")
    assert api.get("/api/v2/maintenance/asp/active").json()["active"]["name"] == "console-fit"
    page.driver.find_element(By.CSS_SELECTOR, "button[aria-label='Unset console-fit']").click()
    page.wait(lambda: "No profile is set active" in page.text("#profile-list"), "automatic scoring again")
    assert api.get("/api/v2/maintenance/asp/active").json()["active"] is None

    # -- system, events and billing ------------------------------------------------------------------------
    page.open("system", "System")
    page.wait(lambda: "Inference engine" in page.text("#system-status"), "the status")
    assert page.text("#maintenance-state") == "off"
    page.driver.find_element(By.XPATH, "//button[text()='Lock (maintenance on)']").click()
    page.wait(lambda: page.text("#maintenance-state").startswith("on"), "maintenance mode on")
    assert api.get("/api/v2/lock").json()["maintenance"] is True  # (GET locks too; it already is)
    page.shot("system-locked")
    # a backup, restored while locked
    page.driver.find_element(By.XPATH, "//button[text()='Download backup']").click()
    backup = page.downloaded(downloads, "voxgate-backup-*.json.gz")
    page.find("input[accept='.gz,.json']").send_keys(str(backup))
    page.driver.find_element(By.XPATH, "//button[text()='Restore backup']").click()
    page.accept_confirm()
    page.wait(lambda: "Restored 1 voiceprints" in page.text("#page"), "the restore")
    page.driver.find_element(By.XPATH, "//button[text()='Unlock']").click()
    page.wait(lambda: page.text("#maintenance-state") == "off", "maintenance mode off")
    assert api.get("/api/v2/status").json()["maintenance"] is False
    # a PBX instance registers with a real Kamailio on loopback, started and stopped from the page
    with peers.kamailio(tmp_path / "kamailio") as proxy:
        created = api.post("/api/v2/pbx/", json=account(proxy))
        assert created.status_code == 201, created.text
        page.driver.refresh()  # the page lists instances as it loads
        page.wait(lambda: "loopback kamailio" in page.text("#system-pbx"), "the PBX instance")
        assert "stopped" in page.text("#system-pbx table")
        page.driver.find_element(By.XPATH, "//button[text()='Start loopback kamailio']").click()
        page.wait(lambda: "registered" in page.text("#system-pbx table"), "the registration", 30)
        page.shot("system-pbx", "#system-pbx")
        page.driver.find_element(By.XPATH, "//button[text()='Stop loopback kamailio']").click()
        page.wait(lambda: "stopped" in page.text("#system-pbx table"), "the stopped instance")
    page.open("events", "Events & billing")
    page.wait(lambda: "verify" in page.text("#events-table"), "the verify events")
    Select(page.find("select[name=type]")).select_by_value("verify")
    page.driver.find_element(By.XPATH, "//button[text()='Filter']").click()

    def shown_types() -> list[str]:
        return list(
            page.driver.execute_script(
                "return [...document.querySelectorAll('#events-table tbody tr')].map((r) => r.cells[1].innerText)"
            )
        )

    page.wait(lambda: set(shown_types()) == {"verify"}, "only verify events")
    types = shown_types()
    page.driver.find_element(By.XPATH, "//button[starts-with(text(), 'Export CSV')]").click()
    exported = page.downloaded(downloads, "voxgate-events-*.csv").read_text().splitlines()
    assert exported[0] == "id,time,type,stream,external_id,outcome,duration_s,detail"
    assert len(exported) == 1 + len(types) and all(",verify," in line for line in exported[1:])
    page.wait(
        lambda: page.driver.find_elements(By.CSS_SELECTOR, "#billing svg.chart rect.s-verify"), "the chart"
    )
    assert "1 imports" in page.text("#billing")
    page.shot("events")
    page.shot("billing", "#billing")

    # -- try it: the fake microphone enrolls, then verifies --------------------------------------------------
    page.open("try", "Try it")
    page.find("input[name=external_id]").clear()
    page.find("input[name=external_id]").send_keys("try-me")
    page.find("section[data-page='try'] button[type=submit]").click()
    try_page = page.find("section[data-page='try']")
    page.wait(lambda: page.shows(try_page, "Enrolled “try-me”"), "the microphone's enrollment", 90)
    page.shot("try-enrolled")
    Select(page.find("select[name=mode]")).select_by_value("verify")
    page.find("section[data-page='try'] button[type=submit]").click()
    page.wait(
        lambda: page.shows(try_page, "") and page.text("#try-verdict") == "verified",
        "the microphone verified",
        90,
    )
    assert page.text("#try-llr").startswith("LLR ")
    page.shot("try-verified")
    page.find("section[data-page='try'] button.secondary").click()

    # -- someone else at another browser's microphone is not verified ------------------------------------------
    someone_else = tmp_path / "someone-else.wav"
    sf.write(someone_else, speech(OTHER, [1, 4, 5]), RATE_HZ, subtype="PCM_16")
    other = Console(browser_factory(fake_audio=someone_else), live_server, screenshots)
    other.shots = page.shots  # one numbering
    other.driver.get(f"{live_server}/console/#/try")
    other.wait(lambda: other.find("#login").is_displayed(), "the login form")
    other.find("#password").send_keys(PASSWORD)
    other.find("#login-form button[type=submit]").click()
    other.wait(lambda: other.driver.find_elements(By.CSS_SELECTOR, "section[data-page='try']"), "Try it")
    other.find("input[name=external_id]").clear()
    other.find("input[name=external_id]").send_keys("try-me")
    Select(other.find("select[name=mode]")).select_by_value("verify")
    other.find("section[data-page='try'] button[type=submit]").click()
    other_page = other.find("section[data-page='try']")
    other.wait(
        lambda: other.shows(other_page, "") and other.text("#try-verdict") == "not verified",
        "someone else not verified",
        90,
    )
    other.shot("try-someone-else")
    other.find("section[data-page='try'] button.secondary").click()

    figures["screenshots"] = page.shots
    (screenshots / "figures.json").write_text(json.dumps(figures, indent=2))
    print(f"console screenshots and figures in {screenshots}: {json.dumps(figures)}")
    assert figures["login_page"]["first_contentful_paint_ms"] > 0
