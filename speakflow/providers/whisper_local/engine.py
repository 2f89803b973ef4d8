"""The process-wide Whisper model and Silero VAD, and how the model is called.

One model per process: loading costs time and memory, and CTranslate2 already
uses every core for one call, so two calls at once only make both slower.

Two ways in:

* :meth:`WhisperEngine.transcribe`: faster-whisper's own whole-file path
  (30 s windows), the offline baseline of the benchmark.
* :meth:`WhisperEngine.decode_batch`: the streaming path, one CTranslate2
  ``encode`` + ``generate`` over a *batch* of utterances from many streams
  (:mod:`.scheduler` forms the batches; the provider and the vendor
  emulators' whisper engine both decode this way). Two measured facts shape it:

  - The encoder cost is proportional to the window it is given, and Whisper's
    30 s window is mostly padding for a 4 s utterance. CTranslate2 accepts a
    shorter mel input, so each batch is encoded over its longest utterance plus
    :data:`PAD_FRAMES` (2 s) of silence: ~8x less encoder work (tiny.en int8,
    2 cores: 0.26 s -> 0.03 s for one 4 s utterance). Whisper needs that
    trailing silence to end its text; with 1 s it sometimes repeated a
    sentence, with 2 s it matched the full window on the corpus.
  - Greedy decoding of one sequence is latency-bound; a batch of 8 decodes in
    about 2.5x the time of one.

  Anything that looks wrong after the short window (repetition, more words
  than the audio can hold, low confidence on non-silence) is decoded again
  over the full 30 s window: the offline result, so quality never drops below
  the offline ceiling for that utterance.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ...audio import SAMPLE_RATE
from ...errors import ConfigError
from .models import bundled_model_path, resolve_model

__all__ = [
    "DecodeJob",
    "Decoded",
    "Segment",
    "WhisperEngine",
    "bundled_model_path",
    "resolve_model",
    "shared_engine",
]

log = logging.getLogger(__name__)

VAD_WINDOW = 512
VAD_CONTEXT = 64
#: mel frames per second (hop 160 samples)
FRAMES_PER_SECOND = 100
FULL_FRAMES = 3000
#: silence after the audio in a short window (frames): Whisper ends its text on it
PAD_FRAMES = 200
#: windows are rounded up to this many frames so batches of similar lengths share a shape
ROUND_FRAMES = 100

# Whisper's own quality thresholds (faster-whisper's defaults).
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4
#: more words than this per second of audio (+ slack) is a hallucination or a loop
MAX_WORDS_PER_SECOND = 4.0
#: decoding stops after this many tokens per second of audio (+ slack): speech
#: needs ~4-7 (Spanish has more tokens per word); a loop on noise would run to
#: Whisper's 224 tokens, seconds of model time for nothing
MAX_TOKENS_PER_SECOND = 12
MAX_TOKENS_SLACK = 10
#: Context (seconds of silence between the previous utterance and this one).
#: Offline Whisper hears a whole 30 s window at once, so each sentence is
#: decoded in the light of the speech around it; a stream that decodes every
#: utterance on its own loses that, and on the multilingual models it cost
#: words ("La Pajía me precios esta lista ... del NICTOR" where offline, and the
#: same final decoded after the previous one, gives "La página de precios está
#: lista ... del director"). Finals are therefore decoded after the previous
#: final's audio, with its transcript forced as the start of the text.
CONTEXT_GAP = 0.3
#: language detections kept per decode (for the per-stream vote)
DETECTION_TOP = 5


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float


@dataclass(frozen=True, slots=True, eq=False)
class DecodeJob:
    """One utterance for :meth:`WhisperEngine.decode_batch`."""

    audio: np.ndarray  # float32, 16 kHz
    #: Whisper language code; None lets a multilingual model detect it
    language: str | None
    #: seconds of it the VAD judged speech (the hallucination guard's yardstick)
    speech_s: float = 0.0
    #: a final (or what will likely be one): worth the full window when alone
    final: bool = False
    #: decoded at a pause in case it becomes the final: no fallback decode for it
    #: (the provider checks it with :func:`suspicious` if it does become the final)
    tentative: bool = False
    #: the stream's previous final utterance (audio, transcript): decoded in front
    #: of this one with its transcript forced as the start of the text (see
    #: :data:`CONTEXT_GAP`); only what comes after it is returned
    context: tuple[np.ndarray, str] | None = None
    #: with ``language`` set: detect anyway, and decode in the detected language
    #: when it is another one at least this probable (see :mod:`.language`)
    switch_prob: float | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float
    language: str | None
    #: decoded over the full 30 s window (the offline result)
    fallback: bool = False
    #: the model's language detection on this audio, best first (top few; empty
    #: when the language was given and not checked)
    language_probs: tuple[tuple[str, float], ...] = ()

    @property
    def is_silence(self) -> bool:
        """Whisper's own "nothing was said" verdict."""
        return self.no_speech_prob > NO_SPEECH_THRESHOLD and self.avg_logprob < LOG_PROB_THRESHOLD

    @property
    def confidence(self) -> float:
        return float(min(1.0, max(0.0, np.exp(self.avg_logprob))))


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _key(token: str) -> str:
    return "".join(ch for ch in token.lower() if ch.isalnum())


def find_loop(words: Sequence[str]) -> int | None:
    """Where a loop's first repetition starts: a phrase of 2-8 words said three times
    in a row, or of 4+ words twice in a row (single words may repeat: "no, no")."""
    n = len(words)
    best: int | None = None
    for size in range(2, 9):
        need = 3 if size < 4 else 2
        for start in range(0, n - size * need + 1):
            phrase = words[start : start + size]
            if all(
                words[start + k * size : start + (k + 1) * size] == phrase for k in range(1, need)
            ):
                cut = start + size
                best = cut if best is None else min(best, cut)
                break
    return best


def has_loop(words: Sequence[str]) -> bool:
    return find_loop(words) is not None


def cut_loop(text: str) -> str | None:
    """``text`` up to where it starts repeating itself, or None when it does not.

    Whisper over a short window sometimes says the utterance again and again
    instead of ending; the first saying is the transcript.
    """
    tokens = text.split()
    cut = find_loop([_key(t) for t in tokens])
    return " ".join(tokens[:cut]) if cut is not None else None


def suspicious(decoded: Decoded, job: DecodeJob) -> bool:
    """Worth a second decode over the full window (quality safety net of the short window)."""
    if decoded.compression_ratio > COMPRESSION_RATIO_THRESHOLD:
        return True
    if decoded.avg_logprob < LOG_PROB_THRESHOLD and not decoded.is_silence:
        return True
    words = [_key(t) for t in decoded.text.split()]
    seconds = max(job.speech_s, len(job.audio) / SAMPLE_RATE * 0.5)
    if len(words) > MAX_WORDS_PER_SECOND * seconds + 2:
        return True
    return has_loop(words)


class WhisperEngine:
    """Owns the faster-whisper model and the Silero VAD session."""

    def __init__(
        self, model_path: Path, *, device: str, compute_type: str, cpu_threads: int
    ) -> None:
        self.model_path = model_path
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self._model: Any = None
        self._vad_session: Any = None
        self._load_lock = threading.Lock()
        self._tokenizers: dict[str | None, Any] = {}
        self._suppress: list[int] = []
        #: decodes redone over the full window (see :func:`suspicious`)
        self.fallbacks = 0
        #: short-window texts cut where they started repeating (see :func:`cut_loop`)
        self.loops_cut = 0
        #: suspicious finals not redone: their batch's budget was spent
        self.fallbacks_skipped = 0
        #: seconds a lone final's full-window decode may take (window "auto")
        self.full_window_budget = 0.35
        #: moving average of measured lone full-window decodes, seconds
        self.full_window_cost: float | None = None
        #: moving average of lone short-window finals, seconds per encoder frame
        self.short_frame_cost: float | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def multilingual(self) -> bool:
        return bool(self._require().model.is_multilingual)

    def load(self) -> None:
        """Blocking; call from a worker thread. Idempotent."""
        with self._load_lock:
            if self._model is not None:
                return
            from faster_whisper import WhisperModel
            from faster_whisper.vad import get_vad_model

            try:
                model = WhisperModel(
                    str(self.model_path),
                    device=self.device,
                    compute_type=self.compute_type,
                    cpu_threads=self.cpu_threads,
                )
            except (RuntimeError, ValueError, OSError) as err:
                raise ConfigError(
                    f"WHISPER_MODEL/WHISPER_DEVICE/WHISPER_COMPUTE_TYPE: cannot load "
                    f"{self.model_path} on {self.device} as {self.compute_type}: {err}"
                ) from None
            self._vad_session = get_vad_model().session
            self._model = model

    def _require(self) -> Any:
        if self._model is None:
            raise RuntimeError("Whisper model used before load()")
        return self._model

    def speech_probs(self, windows: np.ndarray) -> np.ndarray:
        """Silero speech probability per row of (N, 64 + 512) float32 samples.

        Rows carry their own 64-sample left context, so a stream can call this
        chunk by chunk with the same result as one call over the whole audio.
        """
        if windows.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        h = np.zeros((1, 1, 128), dtype=np.float32)
        c = np.zeros((1, 1, 128), dtype=np.float32)
        out, _, _ = self._vad_session.run(None, {"input": windows, "h": h, "c": c})
        probs: np.ndarray = np.asarray(out, dtype=np.float32).reshape(-1)
        return probs

    def transcribe(self, audio: np.ndarray, language: str | None) -> list[Segment]:
        """Blocking: faster-whisper's whole-file path, greedy (the offline baseline)."""
        model = self._require()
        segments, _info = model.transcribe(
            audio,
            language=language,
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return [
            Segment(s.text, s.no_speech_prob, s.avg_logprob, s.compression_ratio) for s in segments
        ]

    # ------------------------------------------------------------ streaming path

    def _tokenizer(self, language: str | None) -> Any:
        tok = self._tokenizers.get(language)
        if tok is None:
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens

            model = self._require()
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

    def decode_batch(
        self,
        jobs: Sequence[DecodeJob],
        *,
        window: str = "auto",
        busy: bool = False,
        full_window: bool = False,
        max_tokens: int | None = None,
    ) -> list[Decoded]:
        """Blocking: transcribe every job in one encode + one generate call.

        ``window``: ``full`` always uses Whisper's 30 s window (the offline
        result, ~8x the encoder work), ``short`` the utterance plus 2 s, and
        ``auto`` the full window for a final decoded alone while the model is
        not ``busy`` and a full-window decode is measured to fit
        ``full_window_budget`` (:meth:`_full_window_affordable`), short windows
        for partials and when work queues (many streams finished utterances at
        once). Suspicious short-window finals are decoded again over the full
        window (partials are not worth it: a final replaces them).
        """
        if not jobs:
            return []
        lone_final = len(jobs) == 1 and jobs[0].final
        if window == "full" or (
            window == "auto" and not busy and lone_final and self._full_window_affordable()
        ):
            full_window = True
        started = time.perf_counter()
        out = self._decode(jobs, full_window, max_tokens)
        cost = time.perf_counter() - started
        if lone_final and full_window:
            old = self.full_window_cost
            self.full_window_cost = cost if old is None else 0.7 * old + 0.3 * cost
        elif lone_final and not out[0].fallback:
            per_frame = cost / _short_frames(jobs[0])
            old = self.short_frame_cost
            self.short_frame_cost = per_frame if old is None else 0.7 * old + 0.3 * per_frame
        return out

    def _full_window_affordable(self) -> bool:
        """Is a lone final's full-window decode quick enough on this machine now?

        Measured (moving average of real decodes) against the budget. While
        over it, the full window is tried again once short-window finals,
        scaled to the full window's frames, predict it fits (a busy neighbour
        left): an overestimate, as the decoder's share does not grow with the
        window, so the retry comes only when it is likely to succeed.
        """
        cost = self.full_window_cost
        if cost is None or cost <= self.full_window_budget:
            return True
        per_frame = self.short_frame_cost
        return per_frame is not None and per_frame * FULL_FRAMES <= self.full_window_budget

    def _fallbacks_allowed(self) -> int:
        """Full-window redos one batch may add: as many as fit ``full_window_budget``,
        at least one. Audio the model cannot make sense of (a language an
        English-only model does not know, noise) makes every final of a batch
        suspicious, and redoing them all multiplied that batch's time, which
        every stream in it waited for."""
        cost = self.full_window_cost
        if not cost:
            return 1
        return max(1, int(self.full_window_budget / cost))

    def _decode(
        self, jobs: Sequence[DecodeJob], full_window: bool, max_tokens: int | None
    ) -> list[Decoded]:
        model = self._require()
        import ctranslate2

        feats = [model.feature_extractor(_with_context(job)) for job in jobs]
        longest = max(f.shape[-1] for f in feats)
        if full_window:
            frames = FULL_FRAMES
        else:
            frames = min(FULL_FRAMES, -(-(longest + PAD_FRAMES) // ROUND_FRAMES) * ROUND_FRAMES)
        batch = np.zeros((len(jobs), feats[0].shape[0], frames), dtype=np.float32)
        for i, f in enumerate(feats):
            n = min(frames, f.shape[-1])
            batch[i, :, :n] = f[:, :n]
        encoded = model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)

        languages, detections = self._languages(jobs, encoded)
        tokenizers = [self._tokenizer(lang) for lang in languages]
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
        if frames < FULL_FRAMES:
            for i, d in enumerate(out):
                cut = cut_loop(d.text)
                if cut is not None:
                    self.loops_cut += 1
                    out[i] = replace(d, text=cut, compression_ratio=compression_ratio(cut))
            again = [
                i
                for i, (d, job) in enumerate(zip(out, jobs, strict=True))
                if job.final and not job.tentative and suspicious(d, job)
            ]
            if again:
                allowed = self._fallbacks_allowed()
                if len(again) > allowed:  # the rest keep their short-window text
                    self.fallbacks_skipped += len(again) - allowed
                    again = again[:allowed]
                self.fallbacks += len(again)
                for i in again:
                    d = out[i]
                    log.debug(
                        "short-window decode redone over the full window: %r (logprob %.2f, "
                        "no_speech %.2f, compression %.2f, %.1f s speech, %d in batch)",
                        d.text[:120],
                        d.avg_logprob,
                        d.no_speech_prob,
                        d.compression_ratio,
                        jobs[i].speech_s,
                        len(jobs),
                    )
                redone = self._decode([jobs[i] for i in again], True, None)
                for i, d in zip(again, redone, strict=True):
                    out[i] = d
        # the context said again instead of continuing after it: decode alone
        echoed = [
            i
            for i, (d, job) in enumerate(zip(out, jobs, strict=True))
            if job.context is not None and _repeats(job.context[1], d.text)
        ]
        if echoed:
            alone = [replace(jobs[i], context=None) for i in echoed]
            for i, d in zip(echoed, self._decode(alone, full_window, max_tokens), strict=True):
                out[i] = d
        return out

    def _languages(
        self, jobs: Sequence[DecodeJob], encoded: Any
    ) -> tuple[list[str], list[tuple[tuple[str, float], ...]]]:
        """Each job's decoding language and the model's detection on its audio.

        Detection is one decoder step over the encoder output already computed,
        so it is asked for only where a job has no language or asks for a check.
        """
        model = self._require()
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


def _with_context(job: DecodeJob) -> np.ndarray:
    """The audio the model hears for ``job``: its context, a short pause, itself."""
    if job.context is None:
        return job.audio
    gap = np.zeros(int(CONTEXT_GAP * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate((job.context[0], gap, job.audio))


def _repeats(context: str, text: str) -> bool:
    """Does ``text`` start by saying ``context`` again (its first words)?"""
    said = [_key(w) for w in context.split()][:4]
    new = [_key(w) for w in text.split()][: len(said)]
    return bool(said) and new == said


def _short_frames(job: DecodeJob) -> int:
    """The encoder frames of ``job``'s short window (as :meth:`WhisperEngine._decode` pads)."""
    samples = len(_with_context(job))
    frames = samples // (SAMPLE_RATE // FRAMES_PER_SECOND) + PAD_FRAMES
    return min(FULL_FRAMES, -(-frames // ROUND_FRAMES) * ROUND_FRAMES)


_engines: dict[tuple[str, str, str, int], WhisperEngine] = {}


def shared_engine(
    model_path: Path, device: str, compute_type: str, cpu_threads: int
) -> WhisperEngine:
    """The one engine per model and device in this process (tests start many apps)."""
    key = (str(model_path), device, compute_type, cpu_threads)
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = WhisperEngine(
            model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
    return engine
