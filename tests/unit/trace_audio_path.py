"""Count the speakflow module crossings of one audio chunk and its transcript.

``PYTHONPATH=. uv run python tests/unit/trace_audio_path.py`` from a source tree's
root (the same script on an older tree counts its crossings the same way): a real
server (deepgram provider against the emulator's echo engine, ECHO_CANCELLATION=auto
as in production, TRANSCRIPT_STORE=off), one session warmed up, then one chunk
traced from the reader to the vendor socket and its final back to the client's
socket. Prints each crossing with its task; the reader's task (``_handle``) and the
provider's sender (``run``) carry the chunk, the provider's ``_reader`` the transcript.
A crossing: the first call of a Python frame whose module (speakflow.*, the
emulator excluded) differs from its caller's module.
"""

import dis
import sys
from collections import Counter

import trio

from tests.conftest import running_server
from tests.emulation.support import running_deepgram

edges: list[tuple[str, str, str]] = []
seen: set[int] = set()
keep: list[object] = []


_first: dict[object, int] = {}


def first_resume(code) -> int:
    """Offset of the RESUME 0 that starts the function (later RESUMEs follow awaits)."""
    off = _first.get(code)
    if off is None:
        off = next((i.offset for i in dis.get_instructions(code) if i.opname == "RESUME"), 0)
        _first[code] = off
    return off


def mod(frame) -> str:
    return frame.f_globals.get("__name__", "?")


def ours(name: str) -> bool:
    return name.startswith("speakflow") and not name.startswith("speakflow.emulation")


def prof(frame, ev, arg):
    if ev != "call":
        return
    if id(frame) in seen or frame.f_lasti > first_resume(frame.f_code):
        return  # a coroutine resumed: not a new call
    seen.add(id(frame))
    keep.append(frame)
    back = frame.f_back
    if back is None:
        return
    callee, caller = mod(frame), mod(back)
    infra = ("speakflow._hypercorn", "speakflow._deflate", "speakflow._wsmask")
    if caller.startswith(infra) or callee.startswith(infra):
        return
    if ours(callee) and ours(caller) and callee != caller:
        try:
            task = trio.lowlevel.current_task().name
        except RuntimeError:
            task = "?"
        edges.append(
            (
                task.rsplit(".", 1)[-1],
                f"{caller}.{back.f_code.co_name}",
                f"{callee}.{frame.f_code.co_qualname}",
            )
        )


async def main() -> None:
    async with (
        running_deepgram("echo") as dg,
        running_server(
            SPEECH_PROVIDER="deepgram",
            DEEPGRAM_API_KEY="test-key",
            DEEPGRAM_URL=dg.url,
            ECHO_CANCELLATION="auto",
        ) as srv,
        srv.client() as c,
    ):
        await c.start("s")
        await c.expect("session_started")
        ts = 1_717_000_000_000
        pcm = b"\x01\x02" * 1600  # 100 ms
        for i in range(20):
            await c.chunk("s", "microphone", pcm, ts + i * 100)
            await trio.sleep(0.02)
        await trio.sleep(1.0)
        with trio.move_on_after(0.5):
            while True:
                await c.recv()
        sys.setprofile(prof)
        await c.chunk("s", "microphone", pcm, ts + 2000)
        while True:
            m = await c.recv()
            if m["type"] == "transcript" and m["is_final"]:
                break
        await trio.sleep(0.2)
        sys.setprofile(None)
        await c.stop("s")
        await c.until("session_ended")
    for task, a, b in edges:
        print(f"{task:28s} {a:60s} -> {b}")
    print(Counter(task for task, _, _ in edges))
    print("total", len(edges))


trio.run(main)
