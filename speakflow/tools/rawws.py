"""A deliberately small WebSocket client for the load generator.

The benchmark must not be what limits the measurement, so its clients send
frames that are built once: the audio of every chunk is deflated ahead of time
and each send only splices an 8-byte tag in front of it. Three things make
that possible and are all within RFC 6455 / RFC 7692:

* Client frames must be masked, but the mask key is ours to choose; with the
  key ``00 00 00 00`` the masked payload equals the plain one, so a frame is a
  header plus bytes we already have.
* A permessage-deflate message is any deflate data ending in a sync flush. We
  start it with a *stored* block holding the tag (5 bytes of header, the 8
  raw bytes) followed by the chunk's body deflated on its own: the receiver's
  inflater reads the tag, then the body, and back-references never reach
  before the message, which is valid whether or not context takeover was
  negotiated.
* Small text frames (the ``audio_chunk`` metadata) go uncompressed, exactly
  like the desktop's Node ``ws`` (threshold 1 KiB).

Server messages (transcripts, possibly compressed) are parsed here too, and
pings are answered.
"""

from __future__ import annotations

import base64
import contextlib
import os
import struct
import zlib
from dataclasses import dataclass

import trio

from .ws import split_url

TAG_BYTES = 8
_ZERO_MASK = b"\x00\x00\x00\x00"
_SYNC_TAIL = b"\x00\x00\xff\xff"
#: A non-final stored deflate block of exactly TAG_BYTES bytes: header byte
#: (BFINAL=0, BTYPE=00, padded), LEN, NLEN.
TAG_BLOCK_HEADER = b"\x00" + struct.pack("<HH", TAG_BYTES, 0xFFFF ^ TAG_BYTES)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class HandshakeFailed(Exception):
    pass


def frame_header(opcode: int, length: int, *, compressed: bool = False) -> bytes:
    """Header of a final, client (zero-masked) frame carrying ``length`` payload bytes."""
    b0 = 0x80 | opcode | (0x40 if compressed else 0)
    if length < 126:
        return bytes((b0, 0x80 | length)) + _ZERO_MASK
    if length < 65536:
        return struct.pack("!BBH", b0, 0x80 | 126, length) + _ZERO_MASK
    return struct.pack("!BBQ", b0, 0x80 | 127, length) + _ZERO_MASK


def text_frame(text: str) -> bytes:
    data = text.encode()
    return frame_header(OP_TEXT, len(data)) + data


def deflate_body(body: bytes, window_bits: int = 15) -> bytes:
    """``body`` deflated on its own, sync-flushed, without the trailing 00 00 ff ff."""
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits)
    out = c.compress(body) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(_SYNC_TAIL)
    return out[: -len(_SYNC_TAIL)]


@dataclass(frozen=True, slots=True)
class ChunkTemplate:
    """One chunk of audio, ready to send with any tag in its first 8 bytes.

    ``head`` is the binary frame's header (plus, when compressed, the stored
    block's header); the frame is ``head + tag + tail``.
    """

    head: bytes
    tail: bytes
    size: int  # bytes of PCM the server will see (the ``size`` field)

    @classmethod
    def build(cls, pcm: bytes, *, deflate: bool) -> ChunkTemplate:
        if len(pcm) <= TAG_BYTES or len(pcm) % 2:
            raise ValueError("a chunk needs an even number of bytes, more than the tag")
        body = pcm[TAG_BYTES:]
        if deflate:
            tail = deflate_body(body)
            payload_len = len(TAG_BLOCK_HEADER) + TAG_BYTES + len(tail)
            head = frame_header(OP_BINARY, payload_len, compressed=True) + TAG_BLOCK_HEADER
        else:
            tail = body
            head = frame_header(OP_BINARY, len(pcm))
        return cls(head, tail, len(pcm))

    def frame(self, tag: bytes) -> bytes:
        return b"".join((self.head, tag, self.tail))


def unframe_for_test(frame: bytes) -> tuple[int, bool, bytes]:
    """(opcode, compressed, decoded payload) of one client frame: the server's view."""
    b0, b1 = frame[0], frame[1]
    n = b1 & 0x7F
    pos = 2
    if n == 126:
        n, pos = struct.unpack_from("!H", frame, 2)[0], 4
    elif n == 127:
        n, pos = struct.unpack_from("!Q", frame, 2)[0], 10
    mask = frame[pos : pos + 4] if b1 & 0x80 else b"\x00" * 4
    pos += 4 if b1 & 0x80 else 0
    payload = bytes(x ^ mask[i % 4] for i, x in enumerate(frame[pos : pos + n]))
    compressed = bool(b0 & 0x40)
    if compressed:
        payload = zlib.decompressobj(-15).decompress(payload + _SYNC_TAIL)
    return b0 & 0x0F, compressed, payload


class RawWebSocket:
    """One client connection: handshake, raw sends, and a parser for what comes back."""

    def __init__(
        self,
        stream: trio.SocketStream,
        deflate: bool,
        inflate_bits: int,
        reset_inflate: bool,
        leftover: bytes,
    ) -> None:
        self.stream = stream
        self.deflate = deflate
        self._inflate_bits = inflate_bits
        self._reset_inflate = reset_inflate
        self._inflater = zlib.decompressobj(-inflate_bits) if deflate else None
        self._buf = bytearray(leftover)
        self._parts: list[bytes] = []
        self._part_op = 0
        self._part_compressed = False
        self._send_lock = trio.Lock()
        self._closed = False
        self.close_code: int | None = None
        self.close_reason = ""

    @classmethod
    async def connect(
        cls, url: str, headers: list[tuple[str, str]], *, deflate: bool
    ) -> RawWebSocket:
        """Open and upgrade a connection (callers bound the time with ``trio.fail_after``)."""
        host, port, resource, tls = split_url(url)
        if tls:
            raise HandshakeFailed("the load generator speaks ws:// only")
        stream = await trio.open_tcp_stream(host, port)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            lines = [
                f"GET {resource} HTTP/1.1",
                f"Host: {host}:{port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
            ]
            if deflate:
                lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
            lines += [f"{k}: {v}" for k, v in headers]
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
            response = bytearray()
            while b"\r\n\r\n" not in response:
                data = await stream.receive_some(4096)
                if not data:
                    raise HandshakeFailed("connection closed during the handshake")
                response += data
                if len(response) > 65536:
                    raise HandshakeFailed("handshake response too large")
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        head, _, rest = bytes(response).partition(b"\r\n\r\n")
        status, *header_lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in f"{status} ":
            await trio.aclose_forcefully(stream)
            raise HandshakeFailed(f"handshake refused: {status}")
        ext = ""
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-extensions":
                ext = value.strip()
        negotiated = deflate and ext.startswith("permessage-deflate")
        bits, reset = 15, False
        if negotiated:
            for param in ext.split(";")[1:]:
                k, _, v = param.strip().partition("=")
                if k == "server_max_window_bits" and v:
                    bits = int(v)
                elif k == "server_no_context_takeover":
                    reset = True
                elif k == "client_max_window_bits" and v and int(v) < 15:
                    await trio.aclose_forcefully(stream)
                    raise HandshakeFailed(
                        f"server wants client_max_window_bits={v}; the "
                        "generator's frames are built for 15"
                    )
        return cls(stream, negotiated, bits, reset, rest)

    async def send(self, data: bytes) -> None:
        async with self._send_lock:  # the reader answers pings on the same socket
            await self.stream.send_all(data)

    async def close(self, code: int = 1000) -> None:
        with (
            trio.move_on_after(1),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await self.send(frame_header(OP_CLOSE, 2) + struct.pack("!H", code))
        await trio.aclose_forcefully(self.stream)

    async def messages(self) -> list[bytes | str] | None:
        """Wait for data; return the complete messages in it (None at end of stream).

        Pings are answered here; a close frame ends the stream.
        """
        while True:
            out = await self._parse()
            if out:
                return out
            if self._closed:
                return None
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._closed = True
                return None
            if not data:
                self._closed = True
                return None
            self._buf += data

    async def _parse(self) -> list[bytes | str]:
        buf = self._buf
        out: list[bytes | str] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            hdr = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                hdr = 10
            if b1 & 0x80:  # servers must not mask; accept it anyway
                hdr += 4
            if end - pos < hdr + n:
                break
            payload = bytes(buf[pos + hdr : pos + hdr + n])
            if b1 & 0x80:
                mask = buf[pos + hdr - 4 : pos + hdr]
                payload = bytes(x ^ mask[i % 4] for i, x in enumerate(payload))
            pos += hdr + n
            op = b0 & 0x0F
            if op >= 0x8:
                if op == OP_PING:
                    await self.send(frame_header(OP_PONG, len(payload)) + payload)
                elif op == OP_CLOSE:
                    if len(payload) >= 2:
                        self.close_code = struct.unpack_from("!H", payload)[0]
                        self.close_reason = payload[2:].decode(errors="replace")
                    self._closed = True
                    del buf[:pos]
                    return out
                continue
            if op != OP_CONT:
                self._part_op = op
                self._part_compressed = bool(b0 & 0x40)
            self._parts.append(payload)
            if not b0 & 0x80:
                continue
            data = b"".join(self._parts)
            self._parts.clear()
            if self._part_compressed and self._inflater is not None:
                data = self._inflater.decompress(data + _SYNC_TAIL)
                if self._reset_inflate:
                    self._inflater = zlib.decompressobj(-self._inflate_bits)
            out.append(data.decode() if self._part_op == OP_TEXT else data)
        del buf[:pos]
        return out
