"""SPEECH_PROVIDER name -> how to build that provider.

Adding a vendor is one module plus one entry here. Factories import their
module lazily so a deployment of one vendor never imports the others' SDKs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Settings
from ..errors import ConfigError
from .base import ProviderBackend


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    #: "package.module:ClassName" of a ProviderBackend, called with the settings.
    target: str
    #: Settings that must be non-empty when this provider is selected.
    required: tuple[str, ...] = ()
    extra_check: Callable[[Settings], None] | None = None

    def check(self, settings: Settings) -> None:
        for name in self.required:
            if not getattr(settings, name):
                raise ConfigError(
                    f"{name}: required when SPEECH_PROVIDER={self.name} (it is empty or unset)"
                )
        if self.extra_check is not None:
            self.extra_check(settings)

    def backend(self, settings: Settings) -> ProviderBackend:
        module_name, _, attr = self.target.partition(":")
        module = importlib.import_module(module_name)
        factory: Callable[[Settings], ProviderBackend] = getattr(module, attr)
        return factory(settings)


def _check_whisper_local(settings: Settings) -> None:
    from .whisper_local import check_settings

    check_settings(settings)


def _check_deepgram(settings: Settings) -> None:
    from .deepgram import check_settings

    check_settings(settings)


def _check_assemblyai(settings: Settings) -> None:
    from .assemblyai import check_settings

    check_settings(settings)


def _check_aws_transcribe(settings: Settings) -> None:
    from .aws_transcribe import check_settings

    check_settings(settings)


PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            "whisper_local",
            "speakflow.providers.whisper_local.provider:WhisperLocalBackend",
            extra_check=_check_whisper_local,
        ),
        ProviderSpec(
            "deepgram",
            "speakflow.providers.deepgram.client:DeepgramBackend",
            required=("DEEPGRAM_API_KEY",),
            extra_check=_check_deepgram,
        ),
        ProviderSpec(
            "assemblyai",
            "speakflow.providers.assemblyai.client:AssemblyAIBackend",
            required=("ASSEMBLYAI_API_KEY",),
            extra_check=_check_assemblyai,
        ),
        # Credentials may come from boto3's chain (profiles, roles), so no key is
        # required here; the backend's start() fails clearly when none resolve.
        ProviderSpec(
            "aws_transcribe",
            "speakflow.providers.aws_transcribe.client:AwsTranscribeBackend",
            extra_check=_check_aws_transcribe,
        ),
    )
}
