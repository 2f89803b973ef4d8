"""The one audio format every part speaks: 16 kHz, mono, PCM16 little-endian.

The wire protocol accepts only this (``audio_config`` in docs/protocol.md),
so the server, its providers, the emulators and the tools all count samples
at this rate; it is defined here once so that none of them can drift. WAV
files of any other shape are converted into it by :mod:`speakflow.wav`.
"""

from __future__ import annotations

SAMPLE_RATE = 16000
BYTES_PER_SAMPLE = 2
