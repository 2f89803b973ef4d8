"""WebSocket masking for wsproto with numpy: the same XOR, without the Python loop cost.

RFC 6455 masks every client-to-server frame with a 4-byte key. wsproto's
``XorMaskerSimple`` does it with four strided ``bytearray`` slices and
``translate`` calls, copying the payload about a dozen times. The relay pays
it twice per audio chunk: once unmasking the desktop's frame (Hypercorn uses
wsproto) and once masking the same audio towards the vendor (trio-websocket
uses wsproto too). In a py-spy profile at the capacity knee (``speakflow
bench --profile``) that was the single largest function: 6% of the server's
CPU. This masker is a drop-in for the class (same constructor, same
``process`` that continues the key rotation across calls, same ``bytearray``
result) and does the XOR as one vectorised numpy operation.

Installed process-wide by :func:`install` (the server through
:func:`speakflow._patches.install_all`, and the emulators, call it at startup)
only for the wsproto versions whose internals it was checked against: on
another, startup stops with a one-line ``PatchError`` (see ``versions.py``).
``tests/unit/test_wsmask.py`` compares it byte for byte with wsproto's own masker.
"""

from __future__ import annotations

import numpy as np
from wsproto import frame_protocol

from .versions import require_attrs, require_version

#: wsproto's own masker, kept for the comparison test whatever is installed
WSPROTO_MASKER = frame_protocol.XorMaskerSimple

CHECKED_VERSIONS = ("1.2.", "1.3.")
#: payloads shorter than this (JSON messages) take the big-int path
SMALL = 512


class NumpyXorMasker:
    """``wsproto.frame_protocol.XorMaskerSimple`` with a vectorised XOR."""

    __slots__ = ("_key",)

    def __init__(self, masking_key: bytes | bytearray) -> None:
        self._key = bytes(masking_key)

    def process(self, data: bytes | bytearray) -> bytearray:
        n = len(data)
        if not n:
            return bytearray()
        key = self._key
        turn = n % 4  # the next call goes on where this payload's key position ended
        self._key = key[turn:] + key[:turn]
        if n < SMALL:  # numpy's fixed cost loses to one big-int XOR on short messages
            mask = int.from_bytes(key * (n // 4 + 1), "little") & ((1 << (8 * n)) - 1)
            return bytearray((int.from_bytes(data, "little") ^ mask).to_bytes(n, "little"))
        out = bytearray(n)
        mask_bytes = np.frombuffer(key * (n // 4 + 1), dtype=np.uint8, count=n)
        np.bitwise_xor(
            np.frombuffer(data, dtype=np.uint8), mask_bytes, out=np.frombuffer(out, dtype=np.uint8)
        )
        return out


def install() -> bool:
    """Use :class:`NumpyXorMasker` in wsproto (idempotent); ``PatchError`` if it cannot apply."""
    if frame_protocol.XorMaskerSimple is NumpyXorMasker:  # type: ignore[comparison-overlap]
        return True
    found = require_version("wsproto", CHECKED_VERSIONS, "speakflow/_patches/wsmask.py")
    require_attrs("wsproto", found, frame_protocol, "XorMaskerSimple")
    frame_protocol.XorMaskerSimple = NumpyXorMasker  # type: ignore[misc,assignment]
    return True
