"""WAV in, 16 kHz mono PCM16 out: formats, rates, channels, and clear refusals."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from speakflow.wav import WavError, decode_wav, from_pcm16, load_wav, resample


def riff(
    fmt_tag: int,
    channels: int,
    rate: int,
    bits: int,
    data: bytes,
    extensible_sub: int | None = None,
) -> bytes:
    width = bits // 8
    block = width * channels
    fmt = struct.pack(
        "<HHIIHH",
        0xFFFE if extensible_sub is not None else fmt_tag,
        channels,
        rate,
        rate * block,
        block,
        bits,
    )
    if extensible_sub is not None:
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", extensible_sub) + bytes(14)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"LIST" + struct.pack("<I", 4) + b"INFO"  # an extra chunk to skip
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def tone(rate: int, seconds: float = 1.0, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def dominant_freq(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def write(tmp_path: Path, data: bytes, name: str = "a.wav") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_protocol_format_passes_through_unchanged(tmp_path, audio_dir):
    src = audio_dir / "utt_00_slt.wav"
    with wave.open(str(src)) as w:
        frames = w.readframes(w.getnframes())
    assert load_wav(src) == frames


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_rates_are_converted_to_16k_keeping_pitch_and_level(tmp_path, rate):
    x = tone(rate)
    pcm = np.round(x * 32767).astype("<i2").tobytes()
    out = from_pcm16(load_wav(write(tmp_path, riff(1, 1, rate, 16, pcm))))
    assert abs(len(out) - 16000) <= 1
    assert abs(dominant_freq(out, 16000) - 440) < 2
    assert abs(np.abs(out[2000:-2000]).max() - 0.5) < 0.01


def test_content_above_the_new_nyquist_is_filtered_not_folded():
    x = tone(48000, freq=11000)  # would alias to 5 kHz
    y = resample(x, 48000)
    assert np.abs(y[1000:-1000]).max() < 0.01


def test_stereo_is_averaged_to_mono(tmp_path):
    left = tone(16000)
    frames = np.stack([left, np.zeros_like(left)], axis=1)
    pcm = np.round(frames * 32767).astype("<i2").tobytes()
    out = from_pcm16(load_wav(write(tmp_path, riff(1, 2, 16000, 16, pcm))))
    assert len(out) == 16000
    assert abs(np.abs(out).max() - 0.25) < 0.01


@pytest.mark.parametrize(
    ("tag", "bits", "encode"),
    [
        (1, 8, lambda x: np.round(x * 127 + 128).astype(np.uint8).tobytes()),
        (
            1,
            24,
            lambda x: b"".join(
                int(v).to_bytes(3, "little", signed=True) for v in np.round(x * (2**23 - 1))
            ),
        ),
        (1, 32, lambda x: np.round(x * (2**31 - 1)).astype("<i4").tobytes()),
        (3, 32, lambda x: x.astype("<f4").tobytes()),
        (3, 64, lambda x: x.astype("<f8").tobytes()),
    ],
)
def test_sample_formats(tmp_path, tag, bits, encode):
    x = tone(16000, seconds=0.25)
    out = from_pcm16(load_wav(write(tmp_path, riff(tag, 1, 16000, bits, encode(x)))))
    assert np.abs(out - x).max() < 0.01


def test_wave_format_extensible(tmp_path):
    x = tone(32000, seconds=0.5)
    pcm = np.round(x * 32767).astype("<i2").tobytes()
    samples, rate = decode_wav(riff(1, 1, 32000, 16, pcm, extensible_sub=1))
    assert rate == 32000 and len(samples) == 16000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"ID3\x03 not a wav at all", "not a WAV file"),
        (riff(0x11, 1, 16000, 4, bytes(100)), "IMA ADPCM"),
        (riff(7, 1, 8000, 8, bytes(100)), "mu-law"),
        (riff(1, 1, 16000, 12, bytes(100)), "12-bit"),
        (b"RIFF\x04\x00\x00\x00WAVE", "fmt"),
    ],
)
def test_unsupported_files_get_a_clear_error(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(WavError) as err:
        load_wav(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(WavError, match="cannot read"):
        load_wav(tmp_path / "nope.wav")
