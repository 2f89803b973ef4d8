"""The echo scenarios ``speakflow bench-echo`` streams, and the one it builds.

Four come from the shared corpus (``manifest.json``: ``echo`` and
``meetings``); ``echo_hard_a`` is synthesised here from ``meeting_a`` by
:func:`add_echo` (a loudspeaker into a synthetic room). Building inputs is
apart from measuring them (:mod:`.bench_echo`) so each reads on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..wav import load_wav


@dataclass(frozen=True)
class Scenario:
    name: str
    microphone: bytes
    system: bytes
    mic_reference: str
    #: (start, end) seconds of each microphone turn
    mic_turns: tuple[tuple[float, float], ...]
    system_reference: str
    system_sentences: tuple[str, ...]
    #: the system source's timestamps are this far off the microphone's
    system_offset_ms: int = 0
    #: the system source sends nothing before this (joins late)
    system_start_s: float = 0.0
    note: str = ""


def load_scenarios(audio_dir: Path, names: list[str] | None = None) -> list[Scenario]:
    manifest = json.loads((audio_dir / "manifest.json").read_text())
    items = {x["name"]: x for x in manifest["echo"] + manifest["meetings"]}
    out: list[Scenario] = []
    for name in names or ["echo_a", "echo_loud_a", "doubletalk_a", "meeting_a", "echo_hard_a"]:
        if name == "echo_hard_a":
            out.append(hard_variant(_scenario(audio_dir, items["meeting_a"])))
        elif name in items:
            out.append(_scenario(audio_dir, items[name]))
        else:
            raise SystemExit(f"bench-echo: no scenario {name!r}; known: {', '.join(items)}")
    return out


def _scenario(audio_dir: Path, item: dict[str, Any]) -> Scenario:
    turns = item["turns"]
    system = [t["text"] for t in turns if t["source"] == "system"]
    return Scenario(
        name=item["name"],
        microphone=load_wav(audio_dir / item["files"]["microphone"]),
        system=load_wav(audio_dir / item["files"]["system"]),
        mic_reference=" ".join(t["text"] for t in turns if t["source"] == "microphone"),
        mic_turns=tuple((t["start_s"], t["end_s"]) for t in turns if t["source"] == "microphone"),
        system_reference=" ".join(system),
        system_sentences=tuple(system),
        note=item.get("kind", "headphones (no echo)"),
    )


def add_echo(
    microphone: bytes,
    system: bytes,
    *,
    delay_ms: float = 250,
    rt60_s: float = 0.45,
    gain_db: float = 3.0,
    drive: float = 2.0,
    noise_dbfs: float = -48.0,
    seed: int = 7,
) -> bytes:
    """The microphone of a user on speakers: ``system`` played through a soft-clipping
    loudspeaker into a synthetic room (exponentially decaying noise, ``rt60_s``),
    ``delay_ms`` late, ``gain_db`` relative to the far end, plus white noise."""
    rng = np.random.default_rng(seed)
    far = np.frombuffer(system, dtype="<i2").astype(np.float64) / 32768
    near = np.frombuffer(microphone, dtype="<i2").astype(np.float64) / 32768
    speaker = np.tanh(drive * far) / np.tanh(drive)
    n = int(rt60_s * 16000)
    room = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)  # -60 dB at rt60
    room[0] += 4.0  # the direct path
    room /= np.sqrt(np.sum(room**2))
    echo = np.convolve(speaker, room)[: len(far)]
    echo *= 10 ** (gain_db / 20) * np.sqrt(np.mean(far**2) / max(np.mean(echo**2), 1e-12))
    lag = int(delay_ms * 16)
    out = np.zeros(max(len(near), len(far)))
    out[: len(near)] += near
    out[lag : lag + len(echo)] += echo[: len(out) - lag]
    out += rng.standard_normal(len(out)) * 10 ** (noise_dbfs / 20)
    return (np.clip(out, -1, 1) * 32767).astype("<i2").tobytes()


def hard_variant(meeting: Scenario) -> Scenario:
    return replace(
        meeting,
        name="echo_hard_a",
        microphone=add_echo(meeting.microphone, meeting.system),
        system_offset_ms=-80,
        system_start_s=2.0,
        note="250 ms echo, 0.45 s room, +3 dB, noise -48 dBFS, system 2 s late, clock -80 ms",
    )
