"""SPEECH_PROVIDER name -> how to check and build that provider, from its own section.

Adding a vendor is one package plus one entry here. Each entry holds objects,
not import strings (a moved class then fails at import, not in the first
session): the provider package's import-light ``__init__`` supplies the
checks, and a small loader function imports the backend's module only when
that provider is built, so a deployment of one vendor never imports the
others' SDKs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .. import languages
from ..config import ProviderSection, Settings
from ..errors import ConfigError
from . import assemblyai, aws_transcribe, deepgram, whisper_local

if TYPE_CHECKING:
    from ..config import (
        AssemblyAISettings,
        AwsTranscribeSettings,
        DeepgramSettings,
        WhisperLocalSettings,
    )
    from .base import ProviderBackend

S = TypeVar("S", bound=ProviderSection)


@dataclass(frozen=True)
class ProviderSpec(Generic[S]):
    name: str
    #: the provider's part of the settings (``Settings.deepgram``, ...)
    section: Callable[[Settings], S]
    #: imports the backend's module and returns its class (or any factory of a section)
    load: Callable[[], Callable[[S], ProviderBackend]]
    #: the provider's startup checks of its section, beyond ``required``
    check: Callable[[S], None]
    #: why the language the section would use by default is unusable, or None
    language_problem: Callable[[S], str | None]
    #: settings of the section that must be non-empty when this provider is selected
    required: tuple[str, ...] = ()
    #: a check that asks the machine (a device), run after the language checks
    device_check: Callable[[S], None] | None = None

    def check_section(self, settings: Settings) -> None:
        section = self.section(settings)
        for name in self.required:
            if not getattr(section, name):
                raise ConfigError(
                    f"{name}: required when SPEECH_PROVIDER={self.name} (it is empty or unset)"
                )
        self.check(section)

    def backend(self, settings: Settings) -> ProviderBackend:
        return self.load()(self.section(settings))


def _whisper_local() -> Callable[[WhisperLocalSettings], ProviderBackend]:
    from .whisper_local.provider import WhisperLocalBackend

    return WhisperLocalBackend


def _deepgram() -> Callable[[DeepgramSettings], ProviderBackend]:
    from .deepgram.client import DeepgramBackend

    return DeepgramBackend


def _assemblyai() -> Callable[[AssemblyAISettings], ProviderBackend]:
    from .assemblyai.client import AssemblyAIBackend

    return AssemblyAIBackend


def _aws_transcribe() -> Callable[[AwsTranscribeSettings], ProviderBackend]:
    from .aws_transcribe.client import AwsTranscribeBackend

    return AwsTranscribeBackend


PROVIDERS: dict[str, ProviderSpec[Any]] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            "whisper_local",
            lambda s: s.whisper_local,
            _whisper_local,
            whisper_local.check_settings,
            whisper_local.language_problem,
            device_check=whisper_local.check_device,
        ),
        ProviderSpec(
            "deepgram",
            lambda s: s.deepgram,
            _deepgram,
            deepgram.check_settings,
            deepgram.language_problem,
            required=("DEEPGRAM_API_KEY",),
        ),
        ProviderSpec(
            "assemblyai",
            lambda s: s.assemblyai,
            _assemblyai,
            assemblyai.check_settings,
            assemblyai.language_problem,
            required=("ASSEMBLYAI_API_KEY",),
        ),
        # Credentials may come from boto3's chain (profiles, roles), so no key is
        # required here; the backend's start() fails clearly when none resolve.
        ProviderSpec(
            "aws_transcribe",
            lambda s: s.aws_transcribe,
            _aws_transcribe,
            aws_transcribe.check_settings,
            aws_transcribe.language_problem,
        ),
    )
}


# ------------------------------------------------------------------ startup checks
# (composed with the other components' in speakflow.startup)


def check_primary(settings: Settings) -> None:
    """SPEECH_PROVIDER names a provider, and its section passes its checks."""
    spec = PROVIDERS.get(settings.SPEECH_PROVIDER)
    if spec is None:
        raise ConfigError(
            f"SPEECH_PROVIDER: unknown provider {settings.SPEECH_PROVIDER!r}; "
            f"valid: {', '.join(sorted(PROVIDERS))}"
        )
    spec.check_section(settings)


def check_fallbacks(settings: Settings) -> None:
    """Each of SPEECH_FALLBACK_PROVIDERS names a provider whose section passes."""
    for name in settings.speech.fallback_providers:
        fallback = PROVIDERS.get(name)
        if fallback is None:
            raise ConfigError(
                f"SPEECH_FALLBACK_PROVIDERS: unknown provider {name!r}; "
                f"valid: {', '.join(sorted(PROVIDERS))}"
            )
        fallback.check_section(settings)


def check_languages(settings: Settings) -> None:
    """DEFAULT_LANGUAGE (and the per-provider language settings) must be one the
    configured providers can use: otherwise every stream without its own
    language fails after a startup that looked fine."""
    problem = languages.default_problem(settings.DEFAULT_LANGUAGE)
    for name in settings.speech.providers:
        spec = PROVIDERS[name]
        problem = problem or spec.language_problem(spec.section(settings))
    if problem:
        raise ConfigError(problem)


def check_devices(settings: Settings) -> None:
    """The checks that ask the machine (WHISPER_DEVICE=cuda: is there one?)."""
    for name in dict.fromkeys(settings.speech.providers):
        spec = PROVIDERS[name]
        if spec.device_check is not None:
            spec.device_check(spec.section(settings))
