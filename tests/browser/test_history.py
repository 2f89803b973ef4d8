"""The page's transcript record: past sessions, a reload that keeps the transcript, copy and
download per format; and a fatal provider_error that stops the capture. Headless Chromium."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from speakflow.wer import normalize

from ..conftest import running_server
from ..emulation.support import running_deepgram
from .test_page import ARTIFACTS, CHROMEDRIVER, CHROMIUM, UTTERANCE, chrome, text_of

webdriver = pytest.importorskip("selenium.webdriver")

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None, reason="needs chromium and chromium-driver"
)


def set_user(driver: webdriver.Chrome, user_id: str) -> None:
    field = driver.find_element(By.ID, "user-id")
    field.clear()
    field.send_keys(user_id)
    driver.find_element(By.ID, "refresh").click()  # blur: the change event stores and lists


def drive_history(base: str, fake_audio: Path, keywords: list[str], downloads: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver = chrome(fake_audio)
    try:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        driver.execute_cdp_cmd(
            "Browser.grantPermissions",
            {"origin": base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
        )
        wait = WebDriverWait(driver, 30)
        driver.get(base + "/")
        wait.until(lambda d: "Ready" in text_of(d, "#status"))
        set_user(driver, "history-user")
        wait.until(lambda d: "No stored sessions" in text_of(d, "#history-status"))
        driver.find_element(By.ID, "start").click()

        def heard(d: webdriver.Chrome, css: str) -> bool:
            said = set(normalize(text_of(d, css)))
            return sum(w in said for w in keywords) >= len(keywords) - 1

        try:
            WebDriverWait(driver, 90, poll_frequency=0.5).until(
                lambda d: heard(d, "#panel-microphone .finals")
            )
        except TimeoutException:
            driver.save_screenshot(str(ARTIFACTS / "browser-history-failed.png"))
            raise AssertionError(f"no finals: {text_of(driver, '#errors')!r}") from None
        assert "#session=" in driver.current_url

        # A reload in the middle of the meeting: the transcript comes back from the record.
        driver.refresh()
        wait.until(lambda d: d.find_element(By.ID, "viewer").is_displayed())
        wait.until(lambda d: heard(d, "#viewer-lines"))
        lines = text_of(driver, "#viewer-lines")
        assert "You" in lines, lines
        assert text_of(driver, "#errors") == ""
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#sessions li"))
        items = driver.find_elements(By.CSS_SELECTOR, "#sessions li")
        assert len(items) == 1 and "resumable" in items[0].text, items[0].text
        driver.save_screenshot(str(ARTIFACTS / "browser-history.png"))

        driver.find_element(By.CSS_SELECTOR, '[data-download="srt"]').click()
        deadline = time.monotonic() + 15
        while not list(downloads.glob("*.srt")) and time.monotonic() < deadline:
            time.sleep(0.1)
        srt = next(iter(downloads.glob("*.srt"))).read_text()
        assert srt.startswith("1\n00:00:") and "\nYou: " in srt, srt[:300]

        driver.find_element(By.CSS_SELECTOR, '[data-copy="txt"]').click()
        wait.until(lambda d: "Copied the txt transcript" in text_of(d, "#export-status"))
        pasted = driver.execute_async_script(
            "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('ERR ' + e))"
        )
        assert pasted.startswith("[00:00:") and "] You: " in pasted, pasted[:300]
        assert heard(driver, "#viewer-lines")
    finally:
        driver.quit()


async def test_page_lists_sessions_and_a_reload_keeps_the_transcript(
    audio_dir: Path, manifest: dict, tmp_path: Path
) -> None:
    utterance = next(u for u in manifest["utterances"] if u["file"] == UTTERANCE)
    keywords = [w for w in normalize(utterance["text"]) if len(w) > 4]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    store = f"sqlite:///{tmp_path / 'transcripts.db'}"
    async with running_server(TRANSCRIPT_STORE=store) as srv:
        with trio.fail_after(180):
            await trio.to_thread.run_sync(
                drive_history, srv.http, audio_dir / UTTERANCE, keywords, downloads
            )


def drive_provider_error(base: str, fake_audio: Path) -> None:
    driver = chrome(fake_audio)
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(base + "/")
        wait.until(lambda d: "Ready" in text_of(d, "#status"))
        driver.find_element(By.ID, "start").click()
        wait.until(lambda d: "provider_error" in text_of(d, "#errors"))
        wait.until(lambda d: "Session ended" in text_of(d, "#status"))
        errors = text_of(driver, "#errors")
        assert "Capture is off" in errors, errors
        assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-capturing") == "false"
        assert driver.find_element(By.ID, "start").is_enabled()
    finally:
        driver.quit()


async def test_page_stops_capturing_after_a_fatal_provider_error(audio_dir: Path) -> None:
    async with running_deepgram("echo") as dg:
        settings = {
            "SPEECH_PROVIDER": "deepgram",
            "DEEPGRAM_URL": dg.url,
            "DEEPGRAM_API_KEY": "not-the-emulators-key",  # refused: 401, provider_error
        }
        async with running_server(**settings) as srv:
            with trio.fail_after(90):
                await trio.to_thread.run_sync(drive_provider_error, srv.http, audio_dir / UTTERANCE)
            assert not srv.state.sessions  # stopped, not left running
