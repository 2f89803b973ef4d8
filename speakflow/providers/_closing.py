"""How a vendor stream ends, as pure state shared by the vendor codecs.

Every vendor ends a stream the same way, with different words: once the
audio has ended we send our close messages (Deepgram ``Finalize`` then
``CloseStream``, AssemblyAI ``ForceEndpoint`` then ``Terminate``, AWS the
empty AudioEvent); the vendor sends its last finals, maybe one last message
(Deepgram ``Metadata``, AssemblyAI ``Termination``), then closes 1000. A
close before we asked is the vendor ending the stream on us.

Each codec states its words as a :class:`CloseSequence` (``codec.CLOSE``);
:class:`Closing` tracks one connection through it. No sockets, no clocks:
the shells (:class:`speakflow.providers._ws.CloseWatch`) send what
:meth:`Closing.end` returns, feed decoded messages and the close in, and
wait with their own timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CloseSequence:
    """One vendor's words for ending a stream."""

    #: the provider's name (logs, errors) and the vendor's, as a person reads it
    name: str
    vendor: str
    #: what we send once the audio has ended, in order
    messages: tuple[str | bytes, ...]
    #: the decoded message that is the vendor's last before its close; None:
    #: the close itself is the answer (AWS)
    last: type | None = None
    #: whether :attr:`last` counts when we did not ask for it (AssemblyAI's
    #: Termination also ends a session idle past ``inactivity_timeout``)
    unasked: bool = False
    #: for the log when the vendor has not finished in time (``%g``: the timeout)
    late: str = "did not finish within %g s of the end of the audio; last finals may be missing"


class Closing:
    """Where one connection is in its vendor's :class:`CloseSequence`."""

    def __init__(self, sequence: CloseSequence) -> None:
        self.sequence = sequence
        #: we sent (or are sending) our close messages: a 1000 close is the expected end
        self.closing = False
        #: the vendor's last message arrived: only its close is still to come
        self.answered = False
        #: the connection closed (or its reader stopped): nothing more will arrive
        self.closed = False

    def end(self) -> tuple[str | bytes, ...]:
        """The audio has ended: the messages to send, in order."""
        self.closing = True
        return self.sequence.messages

    def received(self, message: object) -> bool:
        """A decoded message from the vendor; True when it was the vendor's last."""
        last = self.sequence.last
        if last is None or not isinstance(message, last):
            return False
        if not (self.closing or self.sequence.unasked):
            return False  # not an answer to a close we did not send
        self.answered = True
        return True

    def connection_closed(self) -> None:
        self.closed = True

    @property
    def flushed(self) -> bool:
        """Whether the vendor has said all it will say (its last message, or its close)."""
        return self.answered or self.closed

    def late(self, timeout: float) -> str:
        """What the log says when the vendor has not finished within ``timeout``."""
        return f"{self.sequence.name} {self.sequence.late % timeout}"
