"""Deepgram's live messages (Results, Metadata) built from the engine's hypotheses.

The JSON shapes are the part of the emulator a Deepgram client reads field by
field; they are pure functions of a hypothesis and the connection's identity,
kept apart from the read loop (:mod:`speakflow.emulation.deepgram`) so the
wire shape reads in one place.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from .engines import Hypothesis
from .vendor import plain_word

MODEL_VERSION = "2025-01-01.0"


def model_info(model: str) -> tuple[str, dict[str, str]]:
    """(model uuid, model_info) for a model name: stable across runs, as Deepgram's are."""
    model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"speakflow-emulator/deepgram/{model}"))
    arch = model.split("-general")[0]
    return model_uuid, {"name": f"general-{arch}", "version": MODEL_VERSION, "arch": arch}


@dataclass(frozen=True, slots=True)
class ListenMessages:
    """What every message of one connection repeats: its request and model identity."""

    request_id: str
    model_uuid: str
    model_info: dict[str, str]
    #: ``punctuate`` or ``smart_format``: words and transcript as the engine wrote them
    formatted: bool
    #: ``language=multi`` (nova-3): results name the language they heard
    multi: bool

    def hypothesis(
        self,
        hyp: Hypothesis,
        since: float,
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
    ) -> dict[str, object]:
        """A Results message for ``hyp``; ``since``: where the previous final ended."""
        start = min(since, hyp.start)
        words = []
        for w in hyp.words:
            plain = plain_word(w.text)
            if not plain:
                continue
            word: dict[str, object] = {
                "word": plain,
                "start": w.start,
                "end": w.end,
                "confidence": w.confidence,
            }
            if self.formatted:
                word["punctuated_word"] = w.text
            words.append(word)
        transcript = hyp.text if self.formatted else " ".join(str(w["word"]) for w in words)
        return self.results(
            transcript,
            words,
            hyp.confidence,
            start,
            max(hyp.end, start),
            is_final=is_final,
            speech_final=speech_final,
            from_finalize=from_finalize,
            # nova-3 multi names the languages it heard; a fixed language does not
            languages=[hyp.language] if self.multi and hyp.language else None,
        )

    def results(
        self,
        transcript: str,
        words: list[dict[str, object]] | tuple[()],
        confidence: float,
        start: float,
        end: float,
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
        languages: list[str] | None = None,
    ) -> dict[str, object]:
        alternative: dict[str, object] = {
            "transcript": transcript,
            "confidence": confidence,
            "words": list(words),
        }
        if languages:
            alternative["languages"] = languages
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(end - start, 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {"alternatives": [alternative]},
            "metadata": {
                "request_id": self.request_id,
                "model_info": self.model_info,
                "model_uuid": self.model_uuid,
            },
            "from_finalize": from_finalize,
        }

    def metadata(
        self, *, sha256: str, created: str, duration: float, channels: int
    ) -> dict[str, object]:
        """The Metadata message that ends a stream (CloseStream or the empty frame)."""
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": sha256,
            "created": created,
            "duration": round(duration, 3),
            "channels": channels,
            "models": [self.model_uuid],
            "model_info": {self.model_uuid: self.model_info},
        }
