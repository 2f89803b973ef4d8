"""permessage-deflate for the server with inflation bounded per message and per connection.

wsproto's ``PerMessageDeflate`` inflates whatever payload one read delivers
in one ``decompress`` call, with no output cap: a 64 KiB read of a crafted
frame (zeros deflated: 1032 bytes out per byte in) becomes 67 MB and 0.2-0.3 s
of CPU on the event loop every session shares, before Hypercorn's
``websocket_max_message_size`` check ever sees the bytes. Capping each
message alone is not enough either: a stream of legal messages, each 1 MiB
of zeros deflated to 1 KiB, costs the same CPU per byte received.

:class:`BoundedDeflate` is the same extension with two bounds by design:

* **Per message**: each ``decompress`` call gets ``max_length`` = what is left
  of ``max_message`` plus one byte, so no message is ever inflated beyond
  ``max_message + 1`` bytes. Going over marks the extension ``overflowed``;
  from then on nothing of the connection is inflated (payloads come back
  empty) and the server closes it with 1009 (``speakflow/_patches/hypercorn_fixes.py``).
* **Per connection**: a credit of inflated bytes, earned at ``RATIO`` bytes per
  compressed byte received plus ``RATE`` bytes per second, held up to
  ``BURST``. Inflation spends it; a connection in debt is not read again until
  time has paid the debt back (:meth:`BoundedDeflate.wait_s`), so a flood of
  compressible data is slowed to ``RATE`` by TCP back-pressure instead of
  taking the event loop. Honest traffic never waits: speech PCM deflates
  1.2-3.3 to 1, a dual-source stream of digital silence (about 500 to 1) is
  64 KB/s, far under ``RATE``, and the desktop's replay after a reconnect (at
  most 120 chunks, 1.92 MB) fits in ``BURST``.
"""

from __future__ import annotations

import time
import zlib

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

#: inflated bytes a connection earns per compressed byte it sends
RATIO = 16
#: inflated bytes a connection earns per second, whatever it sends
RATE = 1 << 20
#: most credit a connection can hold (at least two whole messages)
BURST = 4 << 20
#: Hypercorn's default ``websocket_max_message_size``, until the server sets its own
DEFAULT_MAX_MESSAGE = 1 << 20
_SYNC_TAIL = b"\x00\x00\xff\xff"


class BoundedDeflate(PerMessageDeflate):
    """wsproto's server-side permessage-deflate with bounded inflation (module doc)."""

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        super().__init__()
        self.max_message = max_message
        #: a message went over ``max_message``: nothing more is inflated
        self.overflowed = False
        self.inflated = 0  # bytes, over the connection's life (metrics, tests)
        self._message = 0  # bytes inflated so far of the current message
        self._burst = max(BURST, 2 * max_message)
        self._credit = float(self._burst)
        self._credit_at = time.monotonic()

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if self.overflowed:  # frames are only skipped now: no inflater for them
            return RsvBits(True, False, False)
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if self.overflowed:
            return b""
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        self._earn(len(data))
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin:
            return None
        data_frame = self._inbound_is_compressible  # a control frame may sit inside a message
        compressed = self._inbound_compressed and data_frame
        self._inbound_compressed = None  # as wsproto does
        if self.overflowed or not compressed:
            if data_frame:
                self._message = 0
            return None
        out = self._inflate(_SYNC_TAIL)
        self._message = 0
        if self.client_no_context_takeover:
            self._decompressor = None
        return out

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        assert self._decompressor is not None
        room = self.max_message - self._message
        try:
            # at most one byte over the limit, however much ``data`` holds
            out = self._decompressor.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._credit -= len(out)
        self.inflated += len(out)
        if len(out) > room:
            self.stop()
            return b""
        self._message += len(out)
        return out

    def stop(self) -> None:
        """Inflate nothing more on this connection (it is being closed with 1009)."""
        self.overflowed = True
        self._decompressor = None  # its window and unconsumed input are freed now

    def _earn(self, compressed: int) -> None:
        now = time.monotonic()
        earned = RATIO * compressed + RATE * (now - self._credit_at)
        self._credit = min(self._burst, self._credit + earned)
        self._credit_at = now

    def wait_s(self) -> float:
        """Seconds until this connection's inflation credit is back to zero (0: none owed)."""
        if self._credit >= 0:
            return 0.0
        self._earn(0)
        return max(0.0, -self._credit / RATE)
