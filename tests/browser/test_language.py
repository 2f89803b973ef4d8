"""Spanish on the browser page out of the box (issue 21, item 4): headless Chromium plays a
Spanish utterance as its microphone, the Language field is left empty, and the server runs
the production default (multilingual Whisper ``base``, DEFAULT_LANGUAGE=auto). The page
must show Spanish words, label each final and the panel with the detected ``es``, and label
the stored transcript's lines the same way when it shows the session from the record."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from speakflow.config import Settings
from speakflow.wer import normalize

from ..conftest import running_server
from .test_page import ARTIFACTS, CHROMEDRIVER, CHROMIUM, chrome, text_of

webdriver = pytest.importorskip("selenium.webdriver")

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None, reason="needs chromium and chromium-driver"
)

#: "Buenos días a todos, gracias por venir a la reunión de planificación."
UTTERANCE_ES = "es_00_es.wav"


def labels(driver: webdriver.Chrome, css: str) -> list[str]:
    return [str(e.text) for e in driver.find_elements(By.CSS_SELECTOR, css)]


def drive_spanish(base: str, fake_audio: Path, keywords: list[str]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver = chrome(fake_audio)
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(base + "/")
        wait.until(lambda d: "Ready" in text_of(d, "#status"))
        language = driver.find_element(By.ID, "language")
        assert language.get_attribute("value") == ""  # as the desktop: no language sent
        assert language.get_attribute("placeholder") == "auto"
        user = driver.find_element(By.ID, "user-id")
        user.clear()
        user.send_keys("browser-es")
        driver.find_element(By.ID, "start").click()

        def heard(d: webdriver.Chrome, css: str) -> bool:
            said = set(normalize(text_of(d, css)))
            return sum(w in said for w in keywords) * 2 >= len(keywords)

        try:
            WebDriverWait(driver, 120, poll_frequency=0.5).until(
                lambda d: heard(d, "#panel-microphone .finals")
            )
        except TimeoutException:
            driver.save_screenshot(str(ARTIFACTS / "browser-spanish-failed.png"))
            raise AssertionError(
                f"page never showed half of {keywords}: "
                f"finals {text_of(driver, '#panel-microphone')!r}, "
                f"status {text_of(driver, '#status')!r}, errors {text_of(driver, '#errors')!r}"
            ) from None
        finals = text_of(driver, "#panel-microphone .finals")
        # not Whisper's translation into English, which a default of `en` used to give
        assert not {"morning", "thanks", "planning"} & set(normalize(finals)), finals
        shown = labels(driver, "#panel-microphone .finals li .lang")
        assert shown and set(shown) == {"es"}, shown
        assert text_of(driver, "#panel-microphone .panel-lang") == "· es"
        assert text_of(driver, "#panel-system .panel-lang") == ""  # no audio, no language
        assert text_of(driver, "#errors") == ""
        driver.save_screenshot(str(ARTIFACTS / "browser-spanish.png"))

        # Stop: the page shows the session from the record, each line with its language.
        driver.find_element(By.ID, "stop").click()
        wait.until(lambda d: "Session ended" in text_of(d, "#status"))
        wait.until(lambda d: d.find_element(By.ID, "viewer").is_displayed())
        wait.until(lambda d: heard(d, "#viewer-lines"))
        stored = labels(driver, "#viewer-lines li .lang")
        assert stored and set(stored) == {"es"}, stored
        assert text_of(driver, "#errors") == ""

        # A new session clears the panel's label until the server names a language again.
        driver.find_element(By.ID, "src-microphone").click()  # no source: refused at once
        driver.find_element(By.ID, "start").click()
        wait.until(lambda d: "Choose at least one source" in text_of(d, "#errors"))
        assert text_of(driver, "#panel-microphone .panel-lang") == ""
        assert not driver.find_elements(By.CSS_SELECTOR, "#panel-microphone .finals li")
    finally:
        driver.quit()


async def test_page_shows_spanish_and_its_language_by_default(
    audio_dir: Path, manifest: dict, tmp_path: Path
) -> None:
    utterance = next(u for u in manifest["utterances_es"] if u["file"] == UTTERANCE_ES)
    keywords = [w for w in normalize(utterance["text"]) if len(w) > 4]
    store = f"sqlite:///{tmp_path / 'transcripts.db'}"
    # the production default model (TEST_DEFAULTS pins tiny.en), no DEFAULT_LANGUAGE: auto
    settings = {"WHISPER_MODEL": Settings().WHISPER_MODEL, "TRANSCRIPT_STORE": store}
    async with running_server(**settings) as srv:
        assert srv.state.settings.DEFAULT_LANGUAGE == "auto"
        with trio.fail_after(240):
            await trio.to_thread.run_sync(
                drive_spanish, srv.http, audio_dir / UTTERANCE_ES, keywords
            )
