"""Settings: environment variables (and an optional ``.env``), validated at startup.

Why msgspec: the same library decodes the wire messages, and its ``convert``
with ``strict=False`` turns the environment's strings into typed values with
error paths we can rewrite into one line naming the variable. A bad setting
must stop startup, never surface later inside a session.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from dotenv import dotenv_values

from .errors import ConfigError
from .postprocess.basic import DEFAULT_FILLER_WORDS, DEFAULT_SILENCE_DBFS

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]

#: Names whose values never appear in logs, reprs or error messages.
SECRET_FIELDS = frozenset(
    {
        "DEEPGRAM_API_KEY",
        "ASSEMBLYAI_API_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "OPENAI_API_KEY",
        "AUTH_JWT_SECRET",
        "TRANSCRIPT_WEBHOOK_SECRET",  # store: transcript record
    }
)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Every setting, with its default. ``.env.example`` documents each one."""

    SPEECH_PROVIDER: str = "whisper_local"
    ALLOW_PROVIDER_OVERRIDE: bool = False
    #: language when the session names none: auto detects it (per session, see
    #: whisper_local.language); an explicit code (en, es, ...) pins it
    DEFAULT_LANGUAGE: str = "auto"

    HOST: str = "127.0.0.1"
    PORT: Port = 8000
    LOG_LEVEL: str = "INFO"
    LOG_FORMAT: str = "json"
    CORS_ORIGINS: str = ""
    WS_PING_INTERVAL: PositiveFloat = 20.0
    WS_MAX_MESSAGE_BYTES: PositiveInt = 1_048_576
    #: accept a client's permessage-deflate offer (inflation bounded: speakflow/_deflate.py);
    #: off: frames arrive uncompressed: less server CPU, more bandwidth (desktop: either way)
    WS_DEFLATE: bool = True
    #: reverse proxies whose X-Forwarded-For/-Proto/-Host are believed (speakflow.proxy);
    #: comma-separated addresses or networks, ``*`` for any peer, empty: never
    FORWARDED_ALLOW_IPS: str = ""
    #: proxies in front of us that each append to X-Forwarded-For (nginx alone: 1)
    FORWARDED_TRUSTED_HOPS: PositiveInt = 1

    PROVIDER_CONNECT_TIMEOUT: PositiveFloat = 10.0
    PROVIDER_RESPONSE_TIMEOUT: PositiveFloat = 30.0

    # Resilience (speakflow.resilience)
    SPEECH_FALLBACK_PROVIDERS: str = ""
    RETRY_INITIAL_S: PositiveFloat = 0.5
    RETRY_MAX_S: PositiveFloat = 10.0
    RETRY_ATTEMPTS: PositiveInt = 5
    RETRY_HEALTHY_S: PositiveFloat = 60.0
    PRIMARY_RETRY_S: PositiveFloat = 300.0
    #: above MAX_AUDIO_LEAD_S, so a client's replay burst never pushes out audio still owed
    REPLAY_BUFFER_S: PositiveFloat = 100.0
    #: how long a dropped client's session can be resumed
    RESUME_WINDOW_S: PositiveFloat = 120.0
    #: SIGTERM: time allowed to flush every session before sockets close
    SHUTDOWN_TIMEOUT_S: PositiveFloat = 20.0

    # Scale-out (speakflow.shared_state, speakflow.supervisor; docs/scaling.md)
    #: Redis/Valkey shared by every instance of a cluster (redis://, rediss://, unix://);
    #: empty: this process alone (serve --workers N > 1 then starts an embedded Valkey)
    REDIS_URL: str = ""
    #: key prefix in Redis, so several clusters can share one server
    REDIS_PREFIX: str = "speakflow:"
    #: bound on every Redis call; past it the instance falls back to its own state
    REDIS_TIMEOUT_S: PositiveFloat = 0.5
    #: this instance's name in the cluster (health, logs); empty: the host name.
    #: The process adds -<pid>-<random>: a restarted instance is a new owner
    INSTANCE_ID: str = ""
    #: heartbeat period; an instance silent for 4 periods counts as dead
    INSTANCE_HEARTBEAT_S: PositiveFloat = 0.5

    MAX_CHUNK_BYTES: PositiveInt = 64_000
    #: audio (seconds, whatever the chunk size) a slow provider may fall behind by
    AUDIO_QUEUE_S: PositiveFloat = 60.0
    OUTBOUND_QUEUE_MESSAGES: PositiveInt = 1024
    MAX_SESSIONS_PER_USER: NonNegativeInt = 4
    MAX_SESSIONS: NonNegativeInt = 0

    # Security and abuse limits (speakflow.auth, speakflow.limits). 0 = off.
    AUTH_MODE: str = "header"
    AUTH_JWT_SECRET: str = ""
    AUTH_JWT_PUBLIC_KEY_FILE: str = ""
    AUTH_JWKS_FILE: str = ""
    AUTH_JWT_AUDIENCE: str = ""
    AUTH_JWT_ISSUER: str = ""
    AUTH_JWT_ALGORITHMS: str = ""
    AUTH_LEEWAY_S: NonNegativeFloat = 30.0
    IDLE_TIMEOUT_S: NonNegativeFloat = 300.0
    MAX_SESSION_S: NonNegativeFloat = 14_400.0
    MAX_AUDIO_LEAD_S: NonNegativeFloat = 90.0

    #: echo (speakflow.echo): clean the microphone with the system source as far-end
    #: reference: off, auto (once both sources are present), on (also waits for it)
    ECHO_CANCELLATION: Literal["off", "auto", "on"] = "auto"

    #: base (multilingual, the default), tiny.en (English only, cheapest), small, or a
    #: CTranslate2 model directory
    WHISPER_MODEL: str = "base"
    #: where base/small are joined from their packages (default $XDG_CACHE_HOME/speakflow/models)
    WHISPER_CACHE_DIR: str = ""
    WHISPER_DEVICE: str = "cpu"
    WHISPER_COMPUTE_TYPE: str = "int8"
    WHISPER_CPU_THREADS: NonNegativeInt = 0
    #: trailing silence that ends an utterance (its final)
    WHISPER_ENDPOINT_MS: PositiveInt = 400
    #: a shorter silence at which the final's decode starts early (0: off)
    WHISPER_PAUSE_MS: NonNegativeInt = 150
    WHISPER_PARTIAL_INTERVAL_MS: PositiveInt = 500
    #: past this an utterance ends at the next pause; at the max it is cut at a quiet spot
    WHISPER_SOFT_MAX_UTTERANCE_S: NonNegativeFloat = 10.0
    WHISPER_MAX_UTTERANCE_S: Annotated[float, msgspec.Meta(gt=0, le=28)] = 20.0
    WHISPER_VAD_THRESHOLD: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.5
    #: utterances of all streams decoded together in one model call
    WHISPER_MAX_BATCH: PositiveInt = 8
    #: encoder window: auto (30 s for a lone final, utterance + 2 s when busy), full, short
    WHISPER_WINDOW: str = "auto"
    #: auto: the 30 s window only while one takes at most this long on this machine
    WHISPER_FULL_WINDOW_BUDGET_MS: PositiveInt = 350
    #: streams admitted at once (0: estimated from the model's measured speed)
    WHISPER_MAX_STREAMS: NonNegativeInt = 0

    DEEPGRAM_API_KEY: str = ""
    DEEPGRAM_URL: str = "wss://api.deepgram.com/v1/listen"
    DEEPGRAM_MODEL: str = "nova-3"
    DEEPGRAM_LANGUAGE: str = ""
    #: silence (ms) that ends an utterance; 0 sends endpointing=false
    DEEPGRAM_ENDPOINTING_MS: NonNegativeInt = 500
    #: gap in words (ms, >= 1000) for an UtteranceEnd message; 0 leaves it off
    DEEPGRAM_UTTERANCE_END_MS: NonNegativeInt = 1500
    #: a KeepAlive goes out when no audio was sent for this long (Deepgram: 3-5 s)
    DEEPGRAM_KEEPALIVE_S: PositiveFloat = 4.0

    ASSEMBLYAI_API_KEY: str = ""
    ASSEMBLYAI_URL: str = "wss://streaming.assemblyai.com/v3/ws"
    #: universal-streaming-english becomes universal-streaming-multilingual for other languages
    ASSEMBLYAI_SPEECH_MODEL: str = "universal-streaming-english"
    #: punctuated, cased finals (each turn's second, formatted message)
    ASSEMBLYAI_FORMAT_TURNS: bool = True
    #: turn detection: confidence that a turn ended, and the silences (ms) that end it
    ASSEMBLYAI_END_OF_TURN_CONFIDENCE: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.4
    ASSEMBLYAI_MIN_TURN_SILENCE_MS: PositiveInt = 400
    ASSEMBLYAI_MAX_TURN_SILENCE_MS: PositiveInt = 1280
    #: how far audio may be sent ahead of real time (AssemblyAI closes 3007 past real time)
    ASSEMBLYAI_MAX_LEAD_S: PositiveFloat = 1.0
    AWS_REGION: str = "us-east-1"
    AWS_ACCESS_KEY_ID: str = ""
    AWS_SECRET_ACCESS_KEY: str = ""
    AWS_SESSION_TOKEN: str = ""
    #: default wss://transcribestreaming.<AWS_REGION>.amazonaws.com:8443
    AWS_TRANSCRIBE_ENDPOINT: str = ""
    #: when the session chose no language; empty: DEFAULT_LANGUAGE as AWS's code (en -> en-US)
    AWS_TRANSCRIBE_LANGUAGE: str = ""
    #: partial-results stabilization: low, medium, high, or off
    AWS_TRANSCRIBE_STABILITY: str = "medium"
    #: a silent source gets a little silence after this long without audio (AWS: 15 s limit)
    AWS_TRANSCRIBE_KEEPALIVE_S: PositiveFloat = 5.0
    OPENAI_API_KEY: str = ""

    # Post-processing of finals (speakflow.postprocess): none | basic | langchain.
    TRANSCRIPT_PROCESSOR: str = "none"
    FILLER_WORDS: str = DEFAULT_FILLER_WORDS
    SILENCE_DBFS: Annotated[float, msgspec.Meta(lt=0)] = DEFAULT_SILENCE_DBFS
    LLM_MODEL: str = "gpt-4o-mini"
    LLM_BASE_URL: str = ""
    LLM_TIMEOUT: PositiveFloat = 5.0
    LLM_MAX_CONCURRENCY: PositiveInt = 16

    # Transcript record (speakflow.store). Empty TRANSCRIPT_STORE: the SQLite file
    # transcripts.db in SPEAKFLOW_DATA_DIR (default $XDG_DATA_HOME/speakflow, else
    # ~/.local/share/speakflow); sqlite:///PATH; postgresql://...; off: nothing is kept
    TRANSCRIPT_STORE: str = ""
    SPEAKFLOW_DATA_DIR: str = ""
    #: sessions older than this many days are deleted (0: kept until deleted by their user)
    TRANSCRIPT_RETENTION_DAYS: NonNegativeInt = 0
    #: POSTed the session's metadata and merged transcript when a session ends (empty: off)
    TRANSCRIPT_WEBHOOK_URL: str = ""
    #: HMAC-SHA256 key of the webhook's X-SpeakFlow-Signature header
    TRANSCRIPT_WEBHOOK_SECRET: str = ""
    #: how the merged transcript names each source's speaker
    TRANSCRIPT_LABEL_MICROPHONE: str = "You"
    TRANSCRIPT_LABEL_SYSTEM: str = "Meeting"

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.safe_items())
        return f"Settings({fields})"

    def safe_items(self) -> list[tuple[str, Any]]:
        """(name, value) pairs with secrets masked: for logs and debugging."""
        out: list[tuple[str, Any]] = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name in SECRET_FIELDS and value:
                value = "***"
            out.append((name, value))
        return out

    @property
    def fallback_providers(self) -> list[str]:
        return [x.strip() for x in self.SPEECH_FALLBACK_PROVIDERS.split(",") if x.strip()]

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.CORS_ORIGINS.split(",") if o.strip()]

    @property
    def forwarded_allow_ips(self) -> list[str]:
        return [a.strip() for a in self.FORWARDED_ALLOW_IPS.split(",") if a.strip()]

    def language_for(self, provider_setting: str) -> str:
        """A per-provider language setting, falling back to DEFAULT_LANGUAGE."""
        return provider_setting or self.DEFAULT_LANGUAGE


_PATH_RE = re.compile(r"at `\$\.(\w+)`")


def _explain(err: msgspec.ValidationError, raw: Mapping[str, str]) -> str:
    text = str(err)
    match = _PATH_RE.search(text)
    if not match:
        return f"invalid settings: {text}"
    name = match.group(1)
    reason = _PATH_RE.sub("", text).strip().rstrip("-").strip()
    shown = "***" if name in SECRET_FIELDS else repr(raw.get(name, ""))
    return f"{name}: {reason[0].lower() + reason[1:]} (got {shown})"


#: settings that were replaced: old name -> what to set now
RENAMED = {
    "AUDIO_QUEUE_CHUNKS": "AUDIO_QUEUE_S (seconds of audio a slow provider may fall "
    "behind by; 60 = the old default of 120 desktop chunks)",
}


def _read_env_file(path: Path) -> dict[str, str]:
    """The NAME=value pairs of a dotenv file. A line that is not one stops startup:
    python-dotenv only warns and skips it, so its setting would silently not apply.
    The line's text is not shown (it may hold a key)."""
    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read this settings file: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte {err.start}); save it as UTF-8"
        ) from None
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            original = binding.original
            line = original.line + len(original.string) - len(original.string.lstrip("\n"))
            raise ConfigError(f"{path} line {line}: expected NAME=value; fix or remove that line")
    values = dotenv_values(stream=io.StringIO(text))
    return {k: v for k, v in values.items() if v is not None}


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> Settings:
    """Build Settings from a ``.env`` file overlaid by the environment.

    The process environment wins over ``.env`` so an operator can override one
    value without editing the file.
    """
    env = dict(os.environ if environ is None else environ)
    raw: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        raw.update(_read_env_file(Path(env_file)))
    raw.update(env)
    for old, new in RENAMED.items():
        if old in raw:  # silently ignoring it would change a deployment's behaviour
            raise ConfigError(f"{old} is no longer read: set {new} instead")
    known = {k: v for k, v in raw.items() if k in Settings.__struct_fields__}
    try:
        settings = msgspec.convert(known, Settings, strict=False)
    except msgspec.ValidationError as err:
        raise ConfigError(_explain(err, known)) from None
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    from .auth import check_settings as check_auth
    from .postprocess import check_settings as check_processor
    from .providers.registry import PROVIDERS
    from .proxy import check_settings as check_proxy
    from .store.config import check_settings as check_store

    if settings.LOG_LEVEL.upper() not in LOG_LEVELS:
        raise ConfigError(
            f"LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)} (got {settings.LOG_LEVEL!r})"
        )
    if settings.LOG_FORMAT not in ("json", "console"):
        raise ConfigError(f"LOG_FORMAT: expected json or console (got {settings.LOG_FORMAT!r})")
    spec = PROVIDERS.get(settings.SPEECH_PROVIDER)
    if spec is None:
        raise ConfigError(
            f"SPEECH_PROVIDER: unknown provider {settings.SPEECH_PROVIDER!r}; "
            f"valid: {', '.join(sorted(PROVIDERS))}"
        )
    spec.check(settings)
    check_auth(settings)
    for name in settings.fallback_providers:
        fallback = PROVIDERS.get(name)
        if fallback is None:
            raise ConfigError(
                f"SPEECH_FALLBACK_PROVIDERS: unknown provider {name!r}; "
                f"valid: {', '.join(sorted(PROVIDERS))}"
            )
        fallback.check(settings)
    check_processor(settings)
    check_proxy(settings)
    from .shared_state import check_settings as check_shared_state  # scale-out

    check_shared_state(settings)
    check_store(settings)
    _check_languages(settings)
    _check_whisper_device(settings)
    _check_cors(settings)


#: an Origin as browsers send it: scheme://host[:port], no path (a trailing / is tolerated)
_ORIGIN_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s]+/?", re.IGNORECASE)


def _check_cors(settings: Settings) -> None:
    """An entry that can never equal a browser's Origin header (a bare host, a path)
    would pass startup and then refuse that site's every connection."""
    for origin in settings.cors_origins:
        if origin not in ("*", "null") and not _ORIGIN_RE.fullmatch(origin):
            raise ConfigError(
                f"CORS_ORIGINS: {origin[:80]!r} is not an origin; write scheme://host[:port] "
                "with no path, e.g. https://app.example.com, or * for any"
            )


def _check_whisper_device(settings: Settings) -> None:
    """WHISPER_DEVICE=cuda on a machine without CUDA: one line now, not a failed
    model load later (CTranslate2 counts devices without loading anything)."""
    uses_whisper = "whisper_local" in (settings.SPEECH_PROVIDER, *settings.fallback_providers)
    if not uses_whisper or settings.WHISPER_DEVICE != "cuda":
        return
    import ctranslate2

    if ctranslate2.get_cuda_device_count() == 0:
        raise ConfigError(
            "WHISPER_DEVICE=cuda: CTranslate2 finds no CUDA device (or driver) on this machine; "
            "set WHISPER_DEVICE=cpu, or auto to use CUDA only where there is one"
        )


def _check_languages(settings: Settings) -> None:
    """DEFAULT_LANGUAGE (and the per-provider language settings) must be one the
    configured providers can use: otherwise every stream without its own
    language fails after a startup that looked fine."""
    from . import languages

    problem = languages.setting_problem("DEFAULT_LANGUAGE", settings.DEFAULT_LANGUAGE, _any)
    for name in (settings.SPEECH_PROVIDER, *settings.fallback_providers):
        problem = problem or _language_problem(settings, name)
    if problem:
        raise ConfigError(problem)


def _any(code: str) -> None:
    """DEFAULT_LANGUAGE's own rule, whatever the provider: a tag or auto."""


def _language_problem(settings: Settings, provider: str) -> str | None:
    """The provider's start_session rule applied to the language it would use by default."""
    from . import languages
    from .providers import assemblyai, aws_transcribe, deepgram

    def chosen(own: str) -> tuple[str, str]:
        value = getattr(settings, own)
        return (own, value) if value else ("DEFAULT_LANGUAGE", settings.DEFAULT_LANGUAGE)

    if provider == "whisper_local":
        return languages.whisper_problem(
            "DEFAULT_LANGUAGE", settings.DEFAULT_LANGUAGE, settings.WHISPER_MODEL
        )
    if provider == "assemblyai":
        if settings.ASSEMBLYAI_SPEECH_MODEL not in assemblyai.SPEECH_MODELS:
            return None  # a model we have no list for: AssemblyAI judges
        return languages.setting_problem(
            "DEFAULT_LANGUAGE", settings.DEFAULT_LANGUAGE, assemblyai.check_language
        )
    if provider == "deepgram":
        return languages.setting_problem(*chosen("DEEPGRAM_LANGUAGE"), deepgram.check_language)
    if provider == "aws_transcribe":
        return languages.setting_problem(
            *chosen("AWS_TRANSCRIBE_LANGUAGE"), aws_transcribe.check_language
        )
    return None
