"""JSON log lines carry context; secrets are redacted on every path."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import trio

from speakflow.observability.logs import JsonFormatter, redact

from ..conftest import REPO


def capture() -> tuple[logging.Handler, io.StringIO]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    return handler, buf


async def test_lines_are_json_with_context_fields(server) -> None:
    handler, buf = capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with trio.fail_after(20):
            async with server.client("carol") as c:
                await c.start("ctx-1", user="carol")
                await c.expect("session_started")
                await c.chunk("ctx-1", "microphone", b"\x00\x00" * 8000)
                await c.stop("ctx-1")
                await c.until("session_ended")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    events = {entry.get("event"): entry for entry in lines}
    assert {"connection.open", "session.start", "session.stop", "session.end"} <= set(events)
    start = events["session.start"]
    assert start["user_id"] == "carol" and start["session_id"] == "ctx-1"
    assert start["provider"] == "whisper_local"
    assert events["session.end"]["session_id"] == "ctx-1"
    for entry in lines:
        assert {"ts", "level", "logger", "msg"} <= set(entry)


def test_redaction_patterns() -> None:
    redact.add(["dg-secret-value-123"])
    cases = {
        "Authorization: Token abcdef0123456789": "abcdef0123456789",
        "wss://streaming.example/v3/ws?sample_rate=16000&token=tok_abcdef": "tok_abcdef",
        "connect failed: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl": "eyJhbGci",
        "GET /stream?X-Amz-Signature=0123abcd&X-Amz-Credential=AKIAEXAMPLE%2F": "AKIAEXAMPLE",
        "vendor said: bad key dg-secret-value-123": "dg-secret-value-123",
        "openai key sk-proj-abcdefghijklmnop": "sk-proj-abcdefghijklmnop",
    }
    for text, secret in cases.items():
        out = redact(text)
        assert secret not in out, out
        assert "***" in out


def test_exception_text_is_redacted() -> None:
    handler, buf = capture()
    logger = logging.getLogger("speakflow.test.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise RuntimeError("upgrade refused for wss://h/x?token=leaky-token-value")
        except RuntimeError:
            logger.exception("vendor failed with Authorization: Bearer abcdefghijklmnop")
    finally:
        logger.removeHandler(handler)
    entry = json.loads(buf.getvalue())
    assert "leaky-token-value" not in entry["exc"] and "abcdefghijklmnop" not in entry["msg"]


def test_settings_dump_and_startup_error_hide_secrets(tmp_path) -> None:
    """The real CLI: the debug settings dump and a config error never print a key."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DEEPGRAM_API_KEY": "dg-live-secret-999",
        "OPENAI_API_KEY": "sk-live-secret-999",
        "LOG_LEVEL": "DEBUG",
        "PROVIDER_CONNECT_TIMEOUT": "nope",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "speakflow", "serve", "--env-file", "/nonexistent"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "PROVIDER_CONNECT_TIMEOUT" in proc.stderr
    assert "secret-999" not in proc.stderr + proc.stdout

    code = (
        "import logging, sys\n"
        "from speakflow.cli import _setup_logging\n"
        "from speakflow.config import load_settings\n"
        "s = load_settings(env_file=None)\n"
        "_setup_logging(s)\n"
        "logging.getLogger('speakflow').debug('settings', extra={'event': 'settings',"
        " 'fields': dict(s.safe_items())})\n"
        "logging.getLogger('x').warning('raw %s', s.DEEPGRAM_API_KEY)\n"
    )
    env.pop("PROVIDER_CONNECT_TIMEOUT")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stderr.splitlines()]
    dump = next(x for x in lines if x.get("event") == "settings")
    assert dump["DEEPGRAM_API_KEY"] == "***"
    assert "secret-999" not in proc.stderr  # even a raw value passed to a log call
