"""Silero VAD, called the way the streaming policy needs it: row by row, with context.

faster-whisper loads the Silero session with the model
(:meth:`~.engine.WhisperEngine.load`); this is how it is called, apart from
the decode path it shares nothing with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: samples Silero judges at once (32 ms at 16 kHz)
VAD_WINDOW = 512
#: samples of left context each window carries
VAD_CONTEXT = 64


def speech_probs(session: Any, windows: np.ndarray) -> np.ndarray:
    """Silero speech probability per row of (N, 64 + 512) float32 samples.

    Rows carry their own 64-sample left context, so a stream can call this
    chunk by chunk with the same result as one call over the whole audio.
    """
    if windows.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    h = np.zeros((1, 1, 128), dtype=np.float32)
    c = np.zeros((1, 1, 128), dtype=np.float32)
    out, _, _ = session.run(None, {"input": windows, "h": h, "c": c})
    probs: np.ndarray = np.asarray(out, dtype=np.float32).reshape(-1)
    return probs
