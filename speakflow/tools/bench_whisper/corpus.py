"""bench-whisper's workload: each stream's audio and what was said in it, when."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...audio import BYTES_PER_SAMPLE, SAMPLE_RATE
from ...wav import load_wav


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Track:
    """One stream's audio and what was said in it, on its own timeline."""

    name: str
    pcm: bytes
    turns: tuple[Turn, ...]
    #: files that make it up, for the offline baseline: (file, offset s, reference)
    files: tuple[tuple[str, float, str], ...]

    @property
    def duration(self) -> float:
        return len(self.pcm) / BYTES_PER_SAMPLE / SAMPLE_RATE

    def repeated(self, times: int) -> Track:
        if times <= 1:
            return self
        d = self.duration
        turns = tuple(
            Turn(t.start + k * d, t.end + k * d, t.text) for k in range(times) for t in self.turns
        )
        return Track(self.name, self.pcm * times, turns, self.files * times)


def find_audio_dir(given: Path | None) -> Path:
    candidates = [given] if given else []
    here = Path.cwd()
    candidates += [here / "shared" / "audio", here.parent / "shared" / "audio"]
    repo = Path(__file__).resolve().parents[3]
    candidates += [repo.parent / "shared" / "audio", repo / "shared" / "audio"]
    for c in candidates:
        if c is not None and (c / "manifest.json").is_file():
            return c
    raise SystemExit(
        "bench-whisper: speech corpus not found (manifest.json); pass --audio-dir shared/audio"
    )


#: manifest keys of each corpus language: (meetings, utterances)
CORPORA = {"en": ("meetings", "utterances"), "es": ("meetings_es", "utterances_es")}


def meeting_tracks(
    audio_dir: Path, manifest: dict[str, Any], corpus: str = "en"
) -> dict[str, Track]:
    meeting = manifest[CORPORA[corpus][0]][0]
    out = {}
    for source, file_name in meeting["files"].items():
        turns = tuple(
            Turn(t["start_s"], t["end_s"], t["text"])
            for t in meeting["turns"]
            if t["source"] == source
        )
        ref = " ".join(t.text for t in turns)
        out[source] = Track(
            source, load_wav(audio_dir / file_name), turns, ((file_name, 0.0, ref),)
        )
    return out


def utterance_track(audio_dir: Path, manifest: dict[str, Any], corpus: str = "en") -> Track:
    """The corpus sentences back to back (each file has 0.3 s of silence before, 0.7 s after)."""
    pcm = b""
    turns = []
    files = []
    for utt in manifest[CORPORA[corpus][1]]:
        data = load_wav(audio_dir / utt["file"])
        offset = len(pcm) / BYTES_PER_SAMPLE / SAMPLE_RATE
        duration = len(data) / BYTES_PER_SAMPLE / SAMPLE_RATE
        turns.append(Turn(offset + 0.3, offset + duration - 0.7, utt["text"]))
        files.append((utt["file"], offset, utt["text"]))
        pcm += data
    return Track("microphone", pcm, tuple(turns), tuple(files))
