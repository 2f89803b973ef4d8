"""WAV files in, protocol audio out: 16 kHz, mono, PCM16 little-endian.

The one WAV reader: the reference client, the benchmarks and the tests read
files through :func:`load_wav`. It accepts what people have lying around:
any sample rate, any channel count, 8/16/24/32-bit integer PCM or 32/64-bit
float (plain or ``WAVE_FORMAT_EXTENSIBLE``). Channels are averaged, the rate
is converted with a windowed-sinc polyphase filter (numpy only), and anything
else (ADPCM, mu-law, MP3-in-WAV, a file that is not RIFF/WAVE) is refused with
one line that says what the file is and how to convert it.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .audio import SAMPLE_RATE

_PCM = 0x0001
_FLOAT = 0x0003
_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0055: "MP3",
}
_HOW_TO = "convert it first, e.g. `sox in.wav -b 16 -r 16000 -c 1 out.wav`"


class WavError(ValueError):
    """The file cannot be read as audio; the message names the file and the reason."""


def load_wav(path: str | Path) -> bytes:
    """Read ``path`` and return its audio as 16 kHz mono PCM16 LE bytes."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise WavError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        samples, rate = decode_wav(data)
    except WavError as err:
        raise WavError(f"{path}: {err}") from None
    return to_pcm16(resample(samples, rate, SAMPLE_RATE))


def decode_wav(data: bytes) -> tuple[npt.NDArray[np.float64], int]:
    """Parse a RIFF/WAVE file: (mono samples as float64 in [-1, 1], sample rate)."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise WavError("not a WAV file (no RIFF/WAVE header)")
    fmt: bytes | None = None
    audio: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt = body
        elif cid == b"data":
            audio = body  # a truncated last chunk (still being written) is read as-is
            if fmt is not None:
                break
        pos += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16:
        raise WavError("no valid 'fmt ' chunk")
    if audio is None:
        raise WavError("no 'data' chunk")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE:
        if len(fmt) < 40:
            raise WavError("WAVE_FORMAT_EXTENSIBLE header is truncated")
        tag = struct.unpack_from("<H", fmt, 24)[0]  # first two bytes of the subformat GUID
    if tag not in (_PCM, _FLOAT):
        name = _FORMAT_NAMES.get(tag, "unknown")
        raise WavError(
            f"unsupported WAV encoding {name} (format tag 0x{tag:04x}); only integer PCM "
            f"and float are read: {_HOW_TO}"
        )
    if channels < 1 or rate < 1:
        raise WavError(f"invalid header: {channels} channel(s) at {rate} Hz")
    width = bits // 8
    if (
        bits % 8
        or (tag == _PCM and width not in (1, 2, 3, 4))
        or (tag == _FLOAT and width not in (4, 8))
    ):
        kind = "integer PCM" if tag == _PCM else "float"
        raise WavError(f"unsupported sample size: {bits}-bit {kind}; {_HOW_TO}")
    if block_align != width * channels:
        raise WavError(f"invalid header: block align {block_align} for {channels} x {bits} bits")
    frames = len(audio) // block_align
    raw = np.frombuffer(audio, dtype=np.uint8, count=frames * block_align)
    x = _to_float(raw, tag, width).reshape(frames, channels)
    mono = x.mean(axis=1) if channels > 1 else x[:, 0]
    return mono, rate


def _to_float(raw: npt.NDArray[np.uint8], tag: int, width: int) -> npt.NDArray[np.float64]:
    if tag == _FLOAT:
        return raw.view("<f4" if width == 4 else "<f8").astype(np.float64)
    if width == 1:  # 8-bit WAV is unsigned
        return (raw.astype(np.float64) - 128.0) / 128.0
    if width == 3:  # sign-extend 24-bit little-endian into int32
        b = raw.reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v & 0x800000, v - 0x1000000, v)
        return v.astype(np.float64) / float(1 << 23)
    dtype = "<i2" if width == 2 else "<i4"
    return raw.view(dtype).astype(np.float64) / float(1 << (8 * width - 1))


def resample(
    x: npt.NDArray[np.float64], rate: int, target: int = SAMPLE_RATE, zero_crossings: int = 16
) -> npt.NDArray[np.float64]:
    """Rational-ratio resampling with a Kaiser-windowed sinc, polyphase, in blocks.

    The low-pass cuts at 0.9 of the lower Nyquist frequency so that nothing
    above the target's Nyquist folds back into the speech band.
    """
    if rate == target or len(x) == 0:
        return np.asarray(x, dtype=np.float64)
    g = math.gcd(rate, target)
    up, down = target // g, rate // g
    step = max(up, down)
    cutoff = 0.9 / step  # fraction of the upsampled Nyquist
    half = zero_crossings * step
    n = np.arange(-half, half + 1, dtype=np.float64)
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(len(n), 8.0) * up
    taps_per_phase = -(-len(h) // up)
    h = np.concatenate([h, np.zeros(taps_per_phase * up - len(h))])
    # poly[r, q] = h[r + q*up]: the taps that meet input samples for output phase r.
    poly = h.reshape(taps_per_phase, up).T
    out_len = -(-len(x) * up // down)
    # y[m] = sum_q poly[r, q] * x[base - q], with r = (m*down + half) % up and
    # base = (m*down + half) // up; pad x so every index is in range.
    pad_left = taps_per_phase
    xp = np.concatenate([np.zeros(pad_left), x, np.zeros(taps_per_phase + 1)])
    y = np.empty(out_len)
    q = np.arange(taps_per_phase)
    block = max(1, (1 << 20) // taps_per_phase)
    for start in range(0, out_len, block):
        m = np.arange(start, min(out_len, start + block), dtype=np.int64)
        pos = m * down + half
        r, base = pos % up, pos // up
        idx = base[:, None] - q[None, :] + pad_left
        idx = np.clip(idx, 0, len(xp) - 1)
        y[start : start + len(m)] = np.einsum("ij,ij->i", xp[idx], poly[r])
    return y


def to_pcm16(x: npt.NDArray[np.float64]) -> bytes:
    """Float samples in [-1, 1] to PCM16 LE bytes, clipping what exceeds the range."""
    return bytes(np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2").tobytes())


def from_pcm16(pcm: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
