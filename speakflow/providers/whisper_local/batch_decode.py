"""One CTranslate2 ``encode`` + ``generate`` over a batch of utterances: the model call.

Greedy decoding of one sequence is latency-bound; a batch of 8 decodes in
about 2.5x the time of one, so the streaming path decodes utterances of many
streams together. This module is only the mechanics of that call (mel
features, the window, language detection, prompts with the previous final
as context); what to do with a doubtful answer (cut a loop, redo over the
full window) is the engine's policy (:mod:`.engine`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...audio import SAMPLE_RATE
from .decode_types import Decoded, DecodeJob
from .text_guards import compression_ratio
from .windows import FULL_FRAMES, short_window, with_context

#: decoding stops after this many tokens per second of audio (+ slack): speech
#: needs ~4-7 (Spanish has more tokens per word); a loop on noise would run to
#: Whisper's 224 tokens, seconds of model time for nothing
MAX_TOKENS_PER_SECOND = 12
MAX_TOKENS_SLACK = 10
#: language detections kept per decode (for the per-stream vote)
DETECTION_TOP = 5


class BatchDecoder:
    """A loaded faster-whisper model, with the tokenizers its languages need."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._tokenizers: dict[str | None, Any] = {}
        self._suppress: list[int] = []

    def tokenizer(self, language: str | None) -> Any:
        tok = self._tokenizers.get(language)
        if tok is None:
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens

            model = self.model
            tok = Tokenizer(
                model.hf_tokenizer,
                model.model.is_multilingual,
                task="transcribe",
                language=language if model.model.is_multilingual else "en",
            )
            self._tokenizers[language] = tok
            if not self._suppress:
                self._suppress = list(get_suppressed_tokens(tok, [-1]))
        return tok

    def decode(
        self, jobs: Sequence[DecodeJob], full_window: bool, max_tokens: int | None
    ) -> tuple[list[Decoded], int]:
        """Every job decoded once, and the window (encoder frames) they were decoded over."""
        model = self.model
        import ctranslate2

        feats = [model.feature_extractor(with_context(job)) for job in jobs]
        longest = max(f.shape[-1] for f in feats)
        frames = FULL_FRAMES if full_window else short_window(longest)
        batch = np.zeros((len(jobs), feats[0].shape[0], frames), dtype=np.float32)
        for i, f in enumerate(feats):
            n = min(frames, f.shape[-1])
            batch[i, :, :n] = f[:, :n]
        encoded = model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)

        languages, detections = self.languages(jobs, encoded)
        tokenizers = [self.tokenizer(lang) for lang in languages]
        prefixes = [
            tok.encode(" " + job.context[1].strip()) if job.context is not None else []
            for tok, job in zip(tokenizers, jobs, strict=True)
        ]
        prompts = [
            [*tok.sot_sequence, tok.no_timestamps, *prefix]
            for tok, prefix in zip(tokenizers, prefixes, strict=True)
        ]
        if max_tokens is None:
            seconds = max(len(job.audio) for job in jobs) / SAMPLE_RATE
            max_tokens = int(MAX_TOKENS_PER_SECOND * seconds) + MAX_TOKENS_SLACK
        results = model.model.generate(
            encoded,
            prompts,
            beam_size=1,
            max_length=min(model.max_length, max(len(p) for p in prompts) + max_tokens),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )
        out: list[Decoded] = []
        for tok, lang, probs, prefix, result in zip(
            tokenizers, languages, detections, prefixes, results, strict=True
        ):
            tokens = result.sequences_ids[0]
            if prefix and tokens[: len(prefix)] == prefix:
                tokens = tokens[len(prefix) :]  # the context's own words
            text = tok.decode(tokens).strip()
            out.append(
                Decoded(
                    text=text,
                    no_speech_prob=float(result.no_speech_prob),
                    avg_logprob=float(result.scores[0]) * len(tokens) / (len(tokens) + 1),
                    compression_ratio=compression_ratio(text),
                    language=lang,
                    fallback=full_window,
                    language_probs=probs,
                )
            )
        return out, frames

    def languages(
        self, jobs: Sequence[DecodeJob], encoded: Any
    ) -> tuple[list[str], list[tuple[tuple[str, float], ...]]]:
        """Each job's decoding language and the model's detection on its audio.

        Detection is one decoder step over the encoder output already computed,
        so it is asked for only where a job has no language or asks for a check.
        """
        model = self.model
        if not model.model.is_multilingual:
            return ["en"] * len(jobs), [()] * len(jobs)
        languages: list[str] = []
        detections: list[tuple[tuple[str, float], ...]] = [()] * len(jobs)
        if any(job.language is None or job.switch_prob is not None for job in jobs):
            detected = model.model.detect_language(encoded)
            detections = [
                tuple((token[2:-2], float(prob)) for token, prob in d[:DETECTION_TOP])
                for d in detected
            ]
        for job, probs in zip(jobs, detections, strict=True):
            if job.language is None:
                languages.append(probs[0][0])
                continue
            best, prob = probs[0] if probs else (job.language, 0.0)
            switch = job.switch_prob is not None and prob >= job.switch_prob
            languages.append(best if switch else job.language)
        return languages, detections
