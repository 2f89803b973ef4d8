"""The provider registry: objects, not import strings, and each backend built from its section."""

from __future__ import annotations

import pytest

from speakflow.config import ProviderSection
from speakflow.errors import ConfigError
from speakflow.providers.registry import PROVIDERS

from ..conftest import make_settings

ALL_CONFIGURED = {
    "DEEPGRAM_API_KEY": "dg-key",
    "ASSEMBLYAI_API_KEY": "aai-key",
    "AWS_ACCESS_KEY_ID": "id",
    "AWS_SECRET_ACCESS_KEY": "aws-key",
    "SPEECH_FALLBACK_PROVIDERS": "deepgram,assemblyai,aws_transcribe",
}


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_each_backend_is_built_from_its_own_section(name: str) -> None:
    settings = make_settings(**ALL_CONFIGURED)
    spec = PROVIDERS[name]
    section = spec.section(settings)
    assert isinstance(section, ProviderSection)
    assert type(section) is type(getattr(settings, name))  # Settings.<name> is its section
    backend = spec.backend(settings)  # builds, imports its module; connects to nothing
    assert backend.settings == section  # type: ignore[attr-defined]
    values = {getattr(section, field) for field in section.__struct_fields__}
    assert values & KEYS == OWN_KEYS[name]  # no other vendor's key reaches it


KEYS = {"dg-key", "aai-key", "aws-key"}
OWN_KEYS = {
    "whisper_local": set(),
    "deepgram": {"dg-key"},
    "assemblyai": {"aai-key"},
    "aws_transcribe": {"aws-key"},
}


def test_a_required_key_is_named_with_the_provider() -> None:
    with pytest.raises(ConfigError, match=r"^DEEPGRAM_API_KEY: required when SPEECH_PROVIDER="):
        make_settings(SPEECH_PROVIDER="deepgram")
