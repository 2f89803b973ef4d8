"""Protocol fuzzing against a live server while an honest session transcribes.

Hypothesis generates sequences of random and mutated frames (bad JSON, wrong
types, huge numbers, unicode, binary in odd places, interleavings of valid
and invalid messages, other users' session ids, now and then a message over
WS_MAX_MESSAGE_BYTES) and each sequence is sent on its own connection. Every
connection must get only well-formed server messages, never an
``internal_error``, and must still answer a probe afterwards, unless it was
closed with 1009 for an oversize message. Meanwhile one honest desktop-shaped
session streams real speech at real time on the same server and must
transcribe it correctly (WER <= 0.15), and nothing may be logged at ERROR.

Hypothesis tests are synchronous, so the server (and the honest session)
run in a background thread under their own ``trio.run``, and each example
drives its connection with a short ``trio.run`` of its own. The run is
derandomized (the same frames on every CI run) and sized to stay well under
a minute on two cores; ``SPEAKFLOW_FUZZ_EXAMPLES=2000 SPEAKFLOW_FUZZ_RANDOM=1``
fuzzes harder, with fresh randomness.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, open_websocket_url

from speakflow.protocol import decode_server
from speakflow.tools.ws import open_ws
from speakflow.wer import wer

from ..client import TestClient, assert_ended_last, read_wav
from ..conftest import running_server

MAX_MESSAGE = 200_000
HONEST_USER, HONEST_SID = "honest", "honest-session"
FUZZ_USER, FUZZ_SID = "fuzzer", "fz"
PROBE_SID = "__probe__"
EXAMPLES = int(os.environ.get("SPEAKFLOW_FUZZ_EXAMPLES", "600"))
RANDOM = bool(os.environ.get("SPEAKFLOW_FUZZ_RANDOM"))
HONEST_LIMIT_S = 120 + EXAMPLES * 0.1  # the honest session talks until the fuzzer is done

# ---------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Text:
    data: str


@dataclass(frozen=True)
class Binary:
    data: bytes


Frame = Text | Binary

EDGE_INTS = [0, -1, 1, 2, 3, 16_000, 16_001, 64_000, 64_002, 2**31, 2**53 + 1, 2**63 - 1]
EDGE_INTS += [2**63, 2**64, -(2**63) - 1, 10**40, -(10**40)]
ints = st.sampled_from(EDGE_INTS) | st.integers()
session_ids = st.sampled_from([FUZZ_SID, HONEST_SID, "", "x" * 129, "\u0000", "会议-🎙"]) | st.text(
    max_size=40
)
users = st.sampled_from([FUZZ_USER, HONEST_USER, "", "FUZZER", " fuzzer"]) | st.text(max_size=20)
sources = st.sampled_from(["microphone", "system", "camera", "", "Microphone"]) | st.text(
    max_size=12
)
junk = st.recursive(
    st.none() | st.booleans() | st.floats() | ints | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
audio_configs = (
    st.fixed_dictionaries(
        {},
        optional={
            "sample_rate": st.sampled_from([16_000, 8_000, 44_100]) | ints,
            "channels": st.sampled_from([1, 2]) | ints,
            "encoding": st.sampled_from(["pcm16le", "linear16", "opus"]) | st.text(max_size=10),
        },
    )
    | junk
)

start_msgs = st.fixed_dictionaries(
    {
        "type": st.just("start_session"),
        "session_id": session_ids,
        "user_id": users,
        "sources": st.lists(sources, max_size=3) | junk,
    },
    optional={
        "audio_config": audio_configs,
        "language": st.sampled_from(["en", "es", "xx"]) | st.text(max_size=8) | junk,
        "provider": st.text(max_size=12) | junk,
    },
)
chunk_msgs = st.fixed_dictionaries(
    {
        "type": st.just("audio_chunk"),
        "session_id": session_ids,
        "source": sources,
        "timestamp": ints,
        "size": ints,
    }
)
stop_msgs = st.fixed_dictionaries({"type": st.just("stop_session"), "session_id": session_ids})
messages = start_msgs | chunk_msgs | stop_msgs


@st.composite
def mutated(draw: Callable[..., Any]) -> dict[str, Any]:
    """A message with one field dropped, retyped, or added, or its type changed."""
    msg = dict(draw(messages))
    how = draw(st.sampled_from(["drop", "retype", "add", "type", "none"]))
    key = draw(st.sampled_from(sorted(msg)))
    if how == "drop":
        del msg[key]
    elif how == "retype":
        msg[key] = draw(junk)
    elif how == "add":
        msg[draw(st.text(max_size=10))] = draw(junk)
    elif how == "type":
        msg["type"] = draw(st.sampled_from(["START_SESSION", "audio", "", "error"]) | junk)
    return msg


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)  # NaN/Infinity stay in: invalid JSON on purpose


valid_start = st.just(
    Text(
        _dumps(
            {
                "type": "start_session",
                "session_id": FUZZ_SID,
                "user_id": FUZZ_USER,
                "sources": ["microphone"],
                "audio_config": {"sample_rate": 16000, "channels": 1, "encoding": "pcm16le"},
            }
        )
    )
)


@st.composite
def chunk_pair(draw: Callable[..., Any]) -> list[Frame]:
    """Metadata plus a binary frame; usually for the fuzzer's own session, sometimes not."""
    size = draw(st.sampled_from([2, 320, 16_000, 64_000]) | st.integers(0, 70_000))
    meta = {
        "type": "audio_chunk",
        "session_id": draw(st.sampled_from([FUZZ_SID, FUZZ_SID, HONEST_SID]) | session_ids),
        "source": draw(st.sampled_from(["microphone", "system"]) | sources),
        "timestamp": draw(ints),
        "size": size if draw(st.integers(0, 4)) else draw(ints),
    }
    payload = draw(st.binary(min_size=min(size, 64), max_size=64))
    pcm = (payload * (size // max(len(payload), 1) + 1))[:size] if payload else b"\x00" * size
    return [Text(_dumps(meta)), Binary(pcm)]


raw_text = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [
            "",
            "null",
            "[]",
            "{}",
            '"start_session"',
            "[" * 5000 + "]" * 5000,
            '{"a":' * 3000 + "1" + "}" * 3000,
            "1" * 5000,
            '{"type": "audio_chunk", "size": 1e999999}',
            '{"type": "stop_session", "session_id": "\\ud800"}',
            '{"type": "stop_session", "session_id": "a", "session_id": "b"}',
            "\x00\x01\x02",
            "\ufeff{}",
        ]
    ),
    messages.map(lambda m: _dumps(m)[: max(1, len(_dumps(m)) // 2)]),  # truncated JSON
)
raw_binary = st.one_of(
    st.binary(max_size=2_000),
    messages.map(lambda m: _dumps(m).encode()),  # a message in a binary frame
    st.sampled_from([0, 1, 2, 15_999, 16_000, 64_000, 64_002]).map(lambda n: b"\x00" * n),
)

valid_stop = st.just(Text(_dumps({"type": "stop_session", "session_id": FUZZ_SID})))

single_frames: st.SearchStrategy[list[Frame]] = st.one_of(
    chunk_pair(),
    messages.map(lambda m: [Text(_dumps(m))]),
    mutated().map(lambda m: [Text(_dumps(m))]),
    chunk_pair(),  # twice: audio is most of real traffic
    raw_text.map(lambda t: [Text(t)]),
    raw_binary.map(lambda b: [Binary(b)]),
    valid_start.map(lambda f: [f]),
    valid_stop.map(lambda f: [f]),
)


@st.composite
def sequences(draw: Callable[..., Any]) -> list[Frame]:
    """Usually inside a session of the fuzzer's own, so audio and stop paths are reached."""
    groups = draw(st.lists(single_frames, min_size=1, max_size=16))
    if draw(st.sampled_from([True, True, False])):
        groups.insert(0, [draw(valid_start)])
    frames = [f for group in groups for f in group]
    if draw(st.sampled_from([False] * 19 + [True])):  # now and then, a message over the limit
        where = draw(st.integers(0, len(frames)))
        big: Frame = (
            Binary(b"\x00" * (MAX_MESSAGE + 1))
            if draw(st.booleans())
            else Text("x" * (MAX_MESSAGE + 1))
        )
        frames.insert(where, big)
    return frames


# ---------------------------------------------------------------- one example


@dataclass
class Stats:
    examples: int = 0
    frames: int = 0
    errors: int = 0
    closes_1009: int = 0
    types: dict[str, int] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)


async def drive(url: str, frames: list[Frame], stats: Stats, deflate: bool = False) -> None:
    """Send ``frames`` on a fresh connection, then a probe; check every reply."""
    received: list[dict[str, Any]] = []
    probe_answered = trio.Event()
    closed: list[int] = []
    oversize = any(len(f.data) > MAX_MESSAGE for f in frames)

    async def reader(ws: Any) -> None:
        try:
            while True:
                raw = await ws.get_message()
                assert isinstance(raw, str), "server sent a binary frame"
                decode_server(raw)  # well-formed, in the published schema
                msg = json.loads(raw)
                received.append(msg)
                stats.types[msg["type"]] = stats.types.get(msg["type"], 0) + 1
                if msg["type"] == "error":
                    stats.codes[msg["code"]] = stats.codes.get(msg["code"], 0) + 1
                    assert msg["code"] != "internal_error", msg
                    if msg.get("session_id") == PROBE_SID:
                        probe_answered.set()
        except ConnectionClosed as err:
            closed.append(err.reason.code)
            probe_answered.set()

    with trio.fail_after(20):
        headers = [(b"X-User-Id", FUZZ_USER.encode())]
        async with (
            open_ws(url, headers, message_queue_size=10_000)
            if deflate
            else open_websocket_url(
                url, extra_headers=headers, message_queue_size=10_000, max_message_size=2**24
            ) as ws,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(reader, ws)
            try:
                for frame in frames:
                    await ws.send_message(frame.data)
                    stats.frames += 1
                probe = {"type": "stop_session", "session_id": PROBE_SID}
                await ws.send_message(json.dumps(probe))
                stats.frames += 1
            except ConnectionClosed:
                pass
            await probe_answered.wait()
            nursery.cancel_scope.cancel()
    stats.examples += 1
    stats.errors += sum(1 for m in received if m["type"] == "error")
    if closed:
        # The only close a client with a valid handshake can get: a message over the limit
        # (1009; or 1006 when this client, slowed by a loaded machine, did not answer that
        # close within the server's 1 s and the server dropped the socket, as it must).
        assert closed in ([1009], [1006]) and oversize, (closed, [len(f.data) for f in frames])
        stats.closes_1009 += 1
    else:
        assert received, "no reply at all, not even to the probe"


# ---------------------------------------------------------------- the honest session


@dataclass
class Honest:
    done: threading.Event = field(default_factory=threading.Event)  # set by the fuzzer
    reference: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    failure: BaseException | None = None


async def honest_session(
    url: str, utterances: list[tuple[str, bytes]], out: Honest, deflate: bool = False
) -> None:
    """The desktop's shape: 500 ms chunks at real time, utterance after utterance."""
    silence = b"\x00\x00" * 16_000
    async with TestClient.connect(url, HONEST_USER, deflate=deflate) as c:
        await c.start(HONEST_SID, user=HONEST_USER)
        await c.expect("session_started")
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                while True:
                    msg = await c.recv()
                    out.messages.append(msg)
                    if msg["type"] == "session_ended":
                        return

            nursery.start_soon(read)
            ts, i = 1_717_000_000_000, 0
            while True:  # keep talking while the fuzzer runs, and at least two utterances
                text, pcm = utterances[i % len(utterances)]
                i += 1
                out.reference.append(text)
                audio = pcm + silence
                await c.stream(HONEST_SID, "microphone", audio, pace=0.5, ts=ts)
                ts += len(audio) // 32
                if out.done.is_set() and i >= 2:
                    break
            await c.stop(HONEST_SID)
        out.messages += await c.past_end(HONEST_SID)


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
def test_fuzzed_frames_never_hurt_the_server_or_an_honest_session(
    audio_dir, manifest, caplog, deflate: bool
) -> None:
    caplog.set_level(logging.WARNING)
    utterances = [(u["text"], read_wav(audio_dir / u["file"])) for u in manifest["utterances"][:4]]
    honest = Honest()
    box: dict[str, Any] = {}
    ready = threading.Event()

    async def server_main() -> None:
        async with running_server(WS_MAX_MESSAGE_BYTES=MAX_MESSAGE) as srv:
            box["srv"] = srv
            ready.set()
            try:
                with trio.fail_after(HONEST_LIMIT_S):
                    await honest_session(srv.ws, utterances, honest, deflate)
                # every fuzzed connection is gone, and its session with it (a detached
                # record may wait for a resume, but nothing of it runs)
                with trio.fail_after(10):
                    await srv.state.wait_until(
                        lambda: (
                            not srv.state.connections
                            and all(
                                not s.attached and s.finished.is_set()
                                for s in srv.state.sessions.values()
                            )
                        )
                    )
                assert not srv.state.streams
            except BaseException as err:
                honest.failure = err
                raise

    thread = threading.Thread(target=trio.run, args=(server_main,), daemon=True)
    thread.start()
    assert ready.wait(60), "server did not start"
    url = box["srv"].ws
    stats = Stats()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(frames=sequences())
    def fuzz(frames: list[Frame]) -> None:
        assert honest.failure is None, honest.failure
        trio.run(drive, url, frames, stats, deflate)

    try:
        fuzz()
    finally:
        honest.done.set()
        thread.join(HONEST_LIMIT_S + 20)
    print(
        f"\nfuzzer: {stats.frames} frames in {stats.examples} connections; "
        f"{stats.errors} errors back, {stats.closes_1009} closes 1009; "
        f"messages {stats.types}; error codes {stats.codes}"
    )
    assert not thread.is_alive(), "honest session did not finish"
    assert honest.failure is None, honest.failure
    assert stats.examples >= EXAMPLES // 2 and stats.errors > 0 and stats.closes_1009 > 0
    errors = [m for m in honest.messages if m["type"] == "error"]
    assert not errors, errors
    assert_ended_last(honest.messages, HONEST_SID)
    finals = [m["text"] for m in honest.messages if m["type"] == "transcript" and m["is_final"]]
    hypothesis_text = " ".join(finals)
    assert wer(" ".join(honest.reference), hypothesis_text) <= 0.15, hypothesis_text
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not logged, [r.getMessage() for r in logged]
