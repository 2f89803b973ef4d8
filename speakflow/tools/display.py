"""What ``speakflow stream`` shows: finals as they come, a live line, the summary."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from typing import Any, TextIO

LABELS = {"microphone": "mic", "system": "sys"}


class Display:
    """Where output goes.

    Finals (or, with ``--json``, every server message) go to stdout. The live
    line (progress and each source's partial, overwritten in place) goes to
    stdout when it is a terminal and the output is text, else to stderr when
    that is a terminal, else nowhere. Notes (errors) go to stderr.
    """

    def __init__(self, json_mode: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.json = json_mode
        self.out = out
        self.err = err
        self.tty: TextIO | None = None
        if not json_mode and out.isatty():
            self.tty = out
        elif err.isatty():
            self.tty = err
        self._status = ""

    @property
    def live(self) -> bool:
        return self.tty is not None

    def raw(self, text: str) -> None:
        if self.json:
            self._write(self.out, text if "\n" not in text else json.dumps(json.loads(text)))

    def final(self, source: str, msg: dict[str, Any]) -> None:
        if not self.json:
            span = f"{clock(msg.get('start_time', 0.0))}-{clock(msg.get('end_time', 0.0))}"
            # the language the server transcribed in (detected when none was asked for)
            lang = f" {msg['language']}" if msg.get("language") else ""
            self._write(
                self.out, f"[{LABELS.get(source, source)} {span}{lang}] {msg.get('text', '')}"
            )

    def note(self, text: str) -> None:
        self._write(self.err, text)

    def status(self, text: str) -> None:
        if self.tty is None:
            return
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self._status = text[-width:] if len(text) > width else text
        self.tty.write("\r\x1b[K" + self._status)
        self.tty.flush()

    def clear(self) -> None:
        if self.tty is not None:
            self.tty.write("\r\x1b[K")
            self.tty.flush()
            self._status = ""

    def _write(self, stream: TextIO, line: str) -> None:
        """A whole line, with the live line lifted off and put back if they share a screen."""
        shared = (
            self.tty is not None
            and self._status
            and (stream is self.tty or (stream.isatty() and self.tty.isatty()))
        )
        if shared:
            assert self.tty is not None
            self.tty.write("\r\x1b[K")
            self.tty.flush()
        stream.write(line + "\n")
        stream.flush()
        if shared:
            assert self.tty is not None
            self.tty.write(self._status)
            self.tty.flush()


def clock(seconds: float) -> str:
    m, s = divmod(max(0.0, float(seconds)), 60)
    return f"{int(m):02d}:{s:04.1f}"


def summary_text(summary: dict[str, Any], speed: float) -> str:
    """The summary as the text output ends with (``--json`` prints the dict itself)."""
    lines = ["", "-- summary " + "-" * 40]
    sent = summary["send_s"]
    lines.append(
        f"session {summary['session_id']} on {summary['provider'] or '?'}: "
        f"{summary['audio_s']:.1f} s of audio"
        + (f" sent in {sent:.1f} s" if sent is not None else "")
        + (f" (speed {speed:g})" if speed else " (as fast as possible)")
    )
    for name, s in summary["sources"].items():
        lat = s["final_latency_s"]
        first = s["first_partial_s"]
        lines.append(
            f"{name}: {s['chunks_sent']} chunks, {s['finals']} finals, {s['words']} words"
            + (f" in {'/'.join(s['languages'])}" if s["languages"] else "")
            + "; "
            f"first partial after {'-' if first is None else f'{first:.2f} s'}"
        )
        if lat:
            lines.append(
                f"  final latency after each pause (s): {', '.join(f'{x:.2f}' for x in lat)}"
                f"  (median {statistics.median(lat):.2f}, max {max(lat):.2f})"
            )
    errs = summary["errors"]
    lines.append(
        "errors: "
        + ("none" if not errs else "; ".join(f"{e['code']}: {e['message']}" for e in errs))
    )
    if "failure" in summary:
        lines.append(f"failed: {summary['failure']}")
    return "\n".join(lines)
