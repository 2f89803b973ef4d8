"""The browser page keeps its unacknowledged audio and resumes after a lost connection.

Real Chromium (as tests/browser/test_page.py) plays a corpus WAV as its
microphone to two cluster instances on one Valkey, with the Deepgram emulator's
echo engine behind both: every 500 ms chunk the page sends comes back as one
final ending at that chunk's end. The page reaches the servers through a TCP
proxy in this test. Mid-stream the proxy first swallows what the server sends
for a second (finals and acks written to the socket that never arrive, as on a
dying network), then cuts every connection (the page sees 1006), refuses new
ones for a second (the page's audio piles up) and then sends them to the other
instance. The page must reconnect, resume the session there, replay what no
``ack`` covered and say which finals it has (``finals_through``): its
transcript then holds one final per chunk, every chunk, none twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from speakflow.shared_state.embedded import EmbeddedValkey

from ..cluster import test_in_process as in_process
from .test_page import CHROMEDRIVER, CHROMIUM, UTTERANCE, chrome, text_of

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None, reason="needs chromium and chromium-driver"
)

webdriver = pytest.importorskip("selenium.webdriver")

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

#: finals before the cut, and after it
BEFORE, AFTER = 6, 6
#: how long the proxy swallows the server's bytes before the cut, and refuses after it
HOLD_S, DOWN_S = 1.0, 1.0


class CuttingProxy:
    """Forwards TCP to one backend port; :meth:`cut` swallows what the backend sends
    for a while, drops every open connection, refuses new ones for a while and
    then sends them to another port."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.port = 0
        self.cuts = 0
        self.swallowed = 0
        self.refused = 0
        self.holding = False
        self.down_until = 0.0
        self._open: set[trio.CancelScope] = set()

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if trio.current_time() < self.down_until:
                self.refused += 1
                return
            upstream = await trio.open_tcp_stream("127.0.0.1", self.backend)
            async with upstream, trio.open_nursery() as nursery:
                self._open.add(nursery.cancel_scope)
                nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope, False)
                nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope, True)
            self._open.discard(nursery.cancel_scope)

    async def _pump(
        self, src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope, down: bool
    ) -> None:
        try:
            async for data in src:
                if down and self.holding:
                    self.swallowed += len(data)  # written by the server, never arrives
                    continue
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()  # one side ended: so does the other

    async def cut(self, backend: int) -> None:
        self.holding = True
        await trio.sleep(HOLD_S)
        self.cuts += 1
        self.backend = backend
        self.down_until = trio.current_time() + DOWN_S
        for scope in list(self._open):
            scope.cancel()
        self.holding = False


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def shown_ends(driver: Any) -> list[float]:
    ends = driver.execute_script(
        "return [...document.querySelectorAll('#panel-microphone .finals li')]"
        ".map((li) => Number(li.dataset.end));"
    )
    return [float(e) for e in ends]


def drive(
    base: str, fake_audio: Path, cut: Callable[[], None], on_b: Callable[[], bool]
) -> list[float]:
    driver = chrome(fake_audio)
    try:
        wait = WebDriverWait(driver, 30, poll_frequency=0.2)
        driver.get(base + "/")
        wait.until(lambda d: "Ready" in text_of(d, "#status"))
        user = driver.find_element(By.ID, "user-id")
        user.clear()
        user.send_keys("browser-resume")
        driver.find_element(By.ID, "start").click()
        try:
            wait.until(lambda d: len(shown_ends(d)) >= BEFORE)
            before = len(shown_ends(driver))
            cut()
            wait.until(lambda d: "Reconnecting" in text_of(d, "#status"))
            wait.until(lambda d: "Listening" in text_of(d, "#status"))
            wait.until(lambda d: len(shown_ends(d)) >= before + AFTER)
            assert on_b(), "the session goes on on the other instance"
        except TimeoutException:
            raise AssertionError(
                f"finals {shown_ends(driver)}, status {text_of(driver, '#status')!r}, "
                f"errors {text_of(driver, '#errors')!r}, console {driver.get_log('browser')}"
            ) from None
        assert text_of(driver, "#errors") == ""
        driver.find_element(By.ID, "stop").click()
        wait.until(lambda d: "Session ended" in text_of(d, "#status"))
        assert text_of(driver, "#errors") == ""
        captured = int(driver.find_element(By.ID, "panel-microphone").get_attribute("data-chunks"))
        ends = shown_ends(driver)
        assert len(ends) == captured, (captured, ends)  # a final for every chunk captured
        return ends
    finally:
        driver.quit()


async def test_page_resumes_after_a_cut_every_final_once(
    valkey: EmbeddedValkey, audio_dir: Path
) -> None:
    async with in_process.two_instances(valkey, MAX_AUDIO_LEAD_S=0) as (a, b):
        proxy = CuttingProxy(port_of(a.http))
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                await nursery.start(proxy.serve)

                def cut() -> None:
                    trio.from_thread.run(proxy.cut, port_of(b.http))

                def on_b() -> bool:
                    return trio.from_thread.run_sync(lambda: any(b.state.sessions.values()))

                base = f"http://127.0.0.1:{proxy.port}"
                wav = audio_dir / UTTERANCE
                ends = await trio.to_thread.run_sync(drive, base, wav, cut, on_b)
                nursery.cancel_scope.cancel()
    assert proxy.cuts == 1 and proxy.swallowed > 0 and proxy.refused > 0
    assert len(ends) >= BEFORE + AFTER
    # one final per 500 ms chunk: every chunk's, in order, none twice
    assert ends == [round(0.5 * k, 3) for k in range(1, len(ends) + 1)], ends
