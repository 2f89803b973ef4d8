"""A text-level safety net: a microphone final that repeats a system final of the
same moment is marked ``echo: true`` (a protocol extension), never dropped.

The canceller removes the echo from the audio; this catches what still gets
through (a reference that arrived too late, a canceller still converging)
for clients that want to hide it. It only ever adds a flag: a user who
really repeats a remote sentence keeps their words, merely flagged.

Pure code: transcripts in, a decision out. "The same moment" is judged on
the client's clock (each final's ``timestamp`` is the client ms of its end):
the microphone final must end within ``WINDOW_MS`` of a system final's end
(the echo lags by the room's delay, the two sources finalize separately),
and at least ``SIMILARITY`` of its words must appear, in order, in that
system final. Short finals (under ``MIN_WORDS``) are never marked: "yes" or
"okay" from the user while a remote says it too is ordinary conversation.
"""

from __future__ import annotations

from collections import deque

from ..wer import common_in_order, normalize

WINDOW_MS = 2500
SIMILARITY = 0.6
MIN_WORDS = 3
#: system finals remembered (a few remote sentences)
KEEP = 16


class EchoGuard:
    """Remembers recent system finals; says whether a microphone final repeats one."""

    def __init__(self) -> None:
        self._system: deque[tuple[int, int, list[str]]] = deque(maxlen=KEEP)
        self.marked = 0

    def system_final(self, text: str, start_ms: int, end_ms: int) -> None:
        words = normalize(text)
        if words:
            self._system.append((start_ms, end_ms, words))

    def is_echo(self, text: str, start_ms: int, end_ms: int) -> bool:
        """True if this microphone final repeats a system final of the same moment."""
        words = normalize(text)
        if len(words) < MIN_WORDS:
            return False
        for sys_start, sys_end, sys_words in self._system:
            if end_ms < sys_start - WINDOW_MS or start_ms > sys_end + WINDOW_MS:
                continue
            if common_in_order(words, sys_words) >= SIMILARITY * len(words):
                self.marked += 1
                return True
        return False
