"""Settings: environment variables (and an optional ``.env``), read into typed sections.

The configuration floor: this module imports nothing of ours but the
exception module, so every component can import it without a cycle.

Size: over 400 lines because it is the whole environment contract (every
name, type and default) in one file, next to the sections that hand each
component its own part of it.

* :class:`Settings` is the flat contract: one field per environment variable.
* Its sections (:class:`ServerSettings`, :class:`SpeechSettings`,
  :class:`LimitsSettings`, :class:`AuthSettings`, :class:`SharedStateSettings`,
  :class:`EchoSettings`, :class:`PostprocessSettings`, :class:`StoreSettings`
  and one per provider) are frozen views that a component receives instead of
  all of them: ``settings.deepgram`` holds the Deepgram keys and nothing of
  AWS's. A section's fields keep the variables' names, so a setting is spelled
  the same in ``.env``, in error messages and in the code.
* :func:`load_settings` reads ``.env`` and the environment and checks types;
  the components' own checks run at startup (``speakflow.startup``), composed
  there so that this module never reaches up into them.

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
from typing import Annotated, Any, Literal, Self

import msgspec
from dotenv import dotenv_values

from .errors import ConfigError

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

#: speakflow.postprocess.basic: the words a basic processor drops by default
DEFAULT_FILLER_WORDS = "um,umm,uh,uhh,uhm,erm,hmm,hm,mm,mhm"
#: A final whose loudest 100 ms is quieter than this (dBFS) counts as near-silent.
DEFAULT_SILENCE_DBFS = -40.0


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
    #: silence that ends an utterance whose decode at the pause ends a sentence (0: off)
    WHISPER_SENTENCE_PAUSE_MS: NonNegativeInt = 250
    WHISPER_PARTIAL_INTERVAL_MS: PositiveInt = 500
    #: past this an utterance ends at the next pause; at the max it is cut at a quiet spot
    WHISPER_SOFT_MAX_UTTERANCE_S: NonNegativeFloat = 10.0
    WHISPER_MAX_UTTERANCE_S: Annotated[float, msgspec.Meta(gt=0, le=28)] = 20.0
    WHISPER_VAD_THRESHOLD: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.5
    #: utterances of all streams decoded together in one model call
    WHISPER_MAX_BATCH: PositiveInt = 8
    #: encoder window: auto (utterance + 2 s; 30 s for a lone final where that fits the
    #: budget below), full, short
    WHISPER_WINDOW: str = "auto"
    #: auto: the 30 s window only while one takes at most this long on this machine
    WHISPER_FULL_WINDOW_BUDGET_MS: PositiveInt = 150
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
        return _masked(self, self.__struct_fields__)

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

    # ------------------------------------------------------------------ sections

    @property
    def server(self) -> ServerSettings:
        return ServerSettings.of(self)

    @property
    def speech(self) -> SpeechSettings:
        return SpeechSettings.of(self)

    @property
    def limits(self) -> LimitsSettings:
        return LimitsSettings.of(self)

    @property
    def auth(self) -> AuthSettings:
        return AuthSettings.of(self)

    @property
    def shared_state(self) -> SharedStateSettings:
        return SharedStateSettings.of(self)

    @property
    def echo(self) -> EchoSettings:
        return EchoSettings.of(self)

    @property
    def postprocess(self) -> PostprocessSettings:
        return PostprocessSettings.of(self)

    @property
    def store(self) -> StoreSettings:
        return StoreSettings.of(self)

    @property
    def whisper_local(self) -> WhisperLocalSettings:
        return WhisperLocalSettings.of(self)

    @property
    def deepgram(self) -> DeepgramSettings:
        return DeepgramSettings.of(self)

    @property
    def assemblyai(self) -> AssemblyAISettings:
        return AssemblyAISettings.of(self)

    @property
    def aws_transcribe(self) -> AwsTranscribeSettings:
        return AwsTranscribeSettings.of(self)


class Section(msgspec.Struct, kw_only=True, frozen=True):
    """A component's part of :class:`Settings`, under the same names.

    Built from the flat settings (which hold the defaults and did the type
    checks), never from the environment directly, so a field cannot drift
    from its variable. ``tests/unit/test_config.py`` checks that every field
    is one of Settings' with the same type, and that every setting belongs
    to a section.
    """

    @classmethod
    def of(cls, settings: Settings) -> Self:
        return cls(**{name: getattr(settings, name) for name in cls.__struct_fields__})

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in _masked(self, self.__struct_fields__))
        return f"{type(self).__name__}({fields})"


class ServerSettings(Section, kw_only=True, frozen=True):
    """The HTTP/WebSocket server, its logs, and who may reach it (cli, app, proxy)."""

    HOST: str
    PORT: Port
    LOG_LEVEL: str
    LOG_FORMAT: str
    CORS_ORIGINS: str
    WS_PING_INTERVAL: PositiveFloat
    WS_MAX_MESSAGE_BYTES: PositiveInt
    WS_DEFLATE: bool
    FORWARDED_ALLOW_IPS: str
    FORWARDED_TRUSTED_HOPS: PositiveInt
    SHUTDOWN_TIMEOUT_S: PositiveFloat

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.CORS_ORIGINS.split(",") if o.strip()]

    @property
    def forwarded_allow_ips(self) -> list[str]:
        return [a.strip() for a in self.FORWARDED_ALLOW_IPS.split(",") if a.strip()]


class SpeechSettings(Section, kw_only=True, frozen=True):
    """Which provider transcribes, what replaces it when it fails, and how retries pace."""

    SPEECH_PROVIDER: str
    ALLOW_PROVIDER_OVERRIDE: bool
    DEFAULT_LANGUAGE: str
    PROVIDER_CONNECT_TIMEOUT: PositiveFloat
    PROVIDER_RESPONSE_TIMEOUT: PositiveFloat
    SPEECH_FALLBACK_PROVIDERS: str
    RETRY_INITIAL_S: PositiveFloat
    RETRY_MAX_S: PositiveFloat
    RETRY_ATTEMPTS: PositiveInt
    RETRY_HEALTHY_S: PositiveFloat
    PRIMARY_RETRY_S: PositiveFloat
    REPLAY_BUFFER_S: PositiveFloat

    @property
    def fallback_providers(self) -> list[str]:
        return [x.strip() for x in self.SPEECH_FALLBACK_PROVIDERS.split(",") if x.strip()]

    @property
    def providers(self) -> list[str]:
        """The primary and the fallbacks: every provider this server may start."""
        return [self.SPEECH_PROVIDER, *self.fallback_providers]


class LimitsSettings(Section, kw_only=True, frozen=True):
    """Per-session and per-server bounds (speakflow.limits, the session registry). 0 = off."""

    MAX_CHUNK_BYTES: PositiveInt
    AUDIO_QUEUE_S: PositiveFloat
    OUTBOUND_QUEUE_MESSAGES: PositiveInt
    MAX_SESSIONS_PER_USER: NonNegativeInt
    MAX_SESSIONS: NonNegativeInt
    IDLE_TIMEOUT_S: NonNegativeFloat
    MAX_SESSION_S: NonNegativeFloat
    MAX_AUDIO_LEAD_S: NonNegativeFloat
    RESUME_WINDOW_S: PositiveFloat


class AuthSettings(Section, kw_only=True, frozen=True):
    """Who the client is (speakflow.auth)."""

    AUTH_MODE: str
    AUTH_JWT_SECRET: str
    AUTH_JWT_PUBLIC_KEY_FILE: str
    AUTH_JWKS_FILE: str
    AUTH_JWT_AUDIENCE: str
    AUTH_JWT_ISSUER: str
    AUTH_JWT_ALGORITHMS: str
    AUTH_LEEWAY_S: NonNegativeFloat


class SharedStateSettings(Section, kw_only=True, frozen=True):
    """Scale-out: the Redis/Valkey a cluster shares (speakflow.shared_state, cluster)."""

    REDIS_URL: str
    REDIS_PREFIX: str
    REDIS_TIMEOUT_S: PositiveFloat
    INSTANCE_ID: str
    INSTANCE_HEARTBEAT_S: PositiveFloat


class EchoSettings(Section, kw_only=True, frozen=True):
    """Echo cancellation of the microphone against the system source (speakflow.echo)."""

    ECHO_CANCELLATION: Literal["off", "auto", "on"]


class PostprocessSettings(Section, kw_only=True, frozen=True):
    """Post-processing of finals (speakflow.postprocess)."""

    TRANSCRIPT_PROCESSOR: str
    FILLER_WORDS: str
    SILENCE_DBFS: Annotated[float, msgspec.Meta(lt=0)]
    LLM_MODEL: str
    LLM_BASE_URL: str
    LLM_TIMEOUT: PositiveFloat
    LLM_MAX_CONCURRENCY: PositiveInt
    OPENAI_API_KEY: str


class StoreSettings(Section, kw_only=True, frozen=True):
    """The transcript record and its webhook (speakflow.store)."""

    TRANSCRIPT_STORE: str
    SPEAKFLOW_DATA_DIR: str
    TRANSCRIPT_RETENTION_DAYS: NonNegativeInt
    TRANSCRIPT_WEBHOOK_URL: str
    TRANSCRIPT_WEBHOOK_SECRET: str
    TRANSCRIPT_LABEL_MICROPHONE: str
    TRANSCRIPT_LABEL_SYSTEM: str


class ProviderSection(Section, kw_only=True, frozen=True):
    """What every provider's section holds besides its own settings."""

    DEFAULT_LANGUAGE: str
    PROVIDER_CONNECT_TIMEOUT: PositiveFloat
    PROVIDER_RESPONSE_TIMEOUT: PositiveFloat

    def language_for(self, provider_setting: str) -> str:
        """A per-provider language setting, falling back to DEFAULT_LANGUAGE."""
        return provider_setting or self.DEFAULT_LANGUAGE


class WhisperLocalSettings(ProviderSection, kw_only=True, frozen=True):
    """faster-whisper in this process (speakflow.providers.whisper_local)."""

    #: a stream's audio queue is sized from it, as a vendor's is
    AUDIO_QUEUE_S: PositiveFloat
    WHISPER_MODEL: str
    WHISPER_CACHE_DIR: str
    WHISPER_DEVICE: str
    WHISPER_COMPUTE_TYPE: str
    WHISPER_CPU_THREADS: NonNegativeInt
    WHISPER_ENDPOINT_MS: PositiveInt
    WHISPER_PAUSE_MS: NonNegativeInt
    WHISPER_SENTENCE_PAUSE_MS: NonNegativeInt
    WHISPER_PARTIAL_INTERVAL_MS: PositiveInt
    WHISPER_SOFT_MAX_UTTERANCE_S: NonNegativeFloat
    WHISPER_MAX_UTTERANCE_S: Annotated[float, msgspec.Meta(gt=0, le=28)]
    WHISPER_VAD_THRESHOLD: Annotated[float, msgspec.Meta(gt=0, lt=1)]
    WHISPER_MAX_BATCH: PositiveInt
    WHISPER_WINDOW: str
    WHISPER_FULL_WINDOW_BUDGET_MS: PositiveInt
    WHISPER_MAX_STREAMS: NonNegativeInt


class DeepgramSettings(ProviderSection, kw_only=True, frozen=True):
    """Deepgram live streaming (speakflow.providers.deepgram)."""

    DEEPGRAM_API_KEY: str
    DEEPGRAM_URL: str
    DEEPGRAM_MODEL: str
    DEEPGRAM_LANGUAGE: str
    DEEPGRAM_ENDPOINTING_MS: NonNegativeInt
    DEEPGRAM_UTTERANCE_END_MS: NonNegativeInt
    DEEPGRAM_KEEPALIVE_S: PositiveFloat


class AssemblyAISettings(ProviderSection, kw_only=True, frozen=True):
    """AssemblyAI Universal Streaming (speakflow.providers.assemblyai)."""

    ASSEMBLYAI_API_KEY: str
    ASSEMBLYAI_URL: str
    ASSEMBLYAI_SPEECH_MODEL: str
    ASSEMBLYAI_FORMAT_TURNS: bool
    ASSEMBLYAI_END_OF_TURN_CONFIDENCE: Annotated[float, msgspec.Meta(ge=0, le=1)]
    ASSEMBLYAI_MIN_TURN_SILENCE_MS: PositiveInt
    ASSEMBLYAI_MAX_TURN_SILENCE_MS: PositiveInt
    ASSEMBLYAI_MAX_LEAD_S: PositiveFloat


class AwsTranscribeSettings(ProviderSection, kw_only=True, frozen=True):
    """AWS Transcribe streaming (speakflow.providers.aws_transcribe)."""

    AWS_REGION: str
    AWS_ACCESS_KEY_ID: str
    AWS_SECRET_ACCESS_KEY: str
    AWS_SESSION_TOKEN: str
    AWS_TRANSCRIBE_ENDPOINT: str
    AWS_TRANSCRIBE_LANGUAGE: str
    AWS_TRANSCRIBE_STABILITY: str
    AWS_TRANSCRIBE_KEEPALIVE_S: PositiveFloat


#: every section, by the name of Settings' property that builds it
SECTIONS: dict[str, type[Section]] = {
    "server": ServerSettings,
    "speech": SpeechSettings,
    "limits": LimitsSettings,
    "auth": AuthSettings,
    "shared_state": SharedStateSettings,
    "echo": EchoSettings,
    "postprocess": PostprocessSettings,
    "store": StoreSettings,
    "whisper_local": WhisperLocalSettings,
    "deepgram": DeepgramSettings,
    "assemblyai": AssemblyAISettings,
    "aws_transcribe": AwsTranscribeSettings,
}


def _masked(settings: object, names: tuple[str, ...]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name in names:
        value = getattr(settings, name)
        if name in SECRET_FIELDS and value:
            value = "***"
        out.append((name, value))
    return out


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
    value without editing the file. Checks names and types only: what each
    component requires of its section is checked at startup
    (:func:`speakflow.startup.check_settings`; :func:`speakflow.startup.load_settings`
    does both).
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
    return settings


def check_logging(server: ServerSettings) -> None:
    """LOG_LEVEL and LOG_FORMAT name something the logging setup knows."""
    if server.LOG_LEVEL.upper() not in LOG_LEVELS:
        raise ConfigError(
            f"LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)} (got {server.LOG_LEVEL!r})"
        )
    if server.LOG_FORMAT not in ("json", "console"):
        raise ConfigError(f"LOG_FORMAT: expected json or console (got {server.LOG_FORMAT!r})")


#: an Origin as browsers send it: scheme://host[:port], no path (a trailing / is tolerated)
_ORIGIN_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s]+/?", re.IGNORECASE)


def check_cors(server: ServerSettings) -> None:
    """An entry that can never equal a browser's Origin header (a bare host, a path)
    would pass startup and then refuse that site's every connection."""
    for origin in server.cors_origins:
        if origin not in ("*", "null") and not _ORIGIN_RE.fullmatch(origin):
            raise ConfigError(
                f"CORS_ORIGINS: {origin[:80]!r} is not an origin; write scheme://host[:port] "
                "with no path, e.g. https://app.example.com, or * for any"
            )
