"""AssemblyAI's messages: the names, what the shell sends, and what each text frame decodes to.

Pure (no sockets, no clocks) so unit tests drive it with literal frames. The
other modules of this package read these types: :mod:`.turns` maps
:class:`Turn` onto transcripts, :mod:`.failures` reads :class:`Error`.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from .._closing import CloseSequence

NAME = "assemblyai"
#: How the vendor is named in messages a person reads.
VENDOR = "AssemblyAI"

TERMINATE = '{"type":"Terminate"}'
FORCE_ENDPOINT = '{"type":"ForceEndpoint"}'
KEEPALIVE = '{"type":"KeepAlive"}'


class AaiWord(msgspec.Struct):
    text: str = ""
    start: int = 0  # ms on this connection
    end: int = 0
    confidence: float | None = None
    word_is_final: bool = False


class Begin(msgspec.Struct, tag="Begin", tag_field="type"):
    id: str = ""
    expires_at: int | float | str | None = None


class Turn(msgspec.Struct, tag="Turn", tag_field="type"):
    turn_order: int = 0
    turn_is_formatted: bool = False
    end_of_turn: bool = False
    transcript: str = ""
    end_of_turn_confidence: float = 0.0
    words: list[AaiWord] = msgspec.field(default_factory=list)
    language_code: str | None = None
    language_confidence: float | None = None


class Termination(msgspec.Struct, tag="Termination", tag_field="type"):
    audio_duration_seconds: float | None = None
    session_duration_seconds: float | None = None


class Error(msgspec.Struct, tag="Error", tag_field="type"):
    error_code: int | None = None
    error: str = ""


class SpeechStarted(msgspec.Struct, tag="SpeechStarted", tag_field="type"):
    timestamp: int = 0


class VendorWarning(msgspec.Struct, tag="Warning", tag_field="type"):
    warning_code: int | None = None
    warning: str = ""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message this codec does not model (Heartbeat, a newer type, not JSON): logged."""

    type: str
    raw: str


Known = Begin | Turn | Termination | Error | SpeechStarted | VendorWarning
Message = Known | Unknown

_decoder = msgspec.json.Decoder(Known)


class _Envelope(msgspec.Struct):
    type: str = ""
    error: str | None = None


_envelope = msgspec.json.Decoder(_Envelope)


def decode(text: str | bytes) -> Message:
    try:
        message: Known = _decoder.decode(text)
        return message
    except msgspec.DecodeError:
        pass
    try:
        envelope = _envelope.decode(text)
    except msgspec.DecodeError:
        envelope = _Envelope()
    raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
    if not envelope.type and envelope.error:  # older servers: {"error": "..."} alone
        return Error(None, envelope.error)
    return Unknown(envelope.type, raw[:500])


#: The end of a session: ForceEndpoint ends the open turn now, Terminate asks
#: for its end, then Termination (the last message), then close 1000.
#: Termination also ends a session idle past ``inactivity_timeout``, unasked.
CLOSE = CloseSequence(
    NAME,
    VENDOR,
    (FORCE_ENDPOINT, TERMINATE),
    last=Termination,
    unasked=True,
    late="sent no Termination within %g s of Terminate; the last finals may be missing",
)
