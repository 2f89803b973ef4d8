"""Settings: defaults, coercion, one-line errors naming the variable, secrets masked."""

from __future__ import annotations

import pytest

from speakflow.config import load_settings
from speakflow.errors import ConfigError


def test_defaults_need_nothing() -> None:
    s = load_settings(environ={}, env_file=None)
    assert s.SPEECH_PROVIDER == "whisper_local"
    assert s.PROVIDER_CONNECT_TIMEOUT == 10 and s.PROVIDER_RESPONSE_TIMEOUT == 30


def test_values_are_coerced_from_strings() -> None:
    s = load_settings(
        environ={
            "PORT": "9000",
            "ALLOW_PROVIDER_OVERRIDE": "true",
            "CORS_ORIGINS": "https://a.example, https://b.example",
        },
        env_file=None,
    )
    assert s.PORT == 9000 and s.ALLOW_PROVIDER_OVERRIDE is True
    assert s.cors_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PROVIDER_CONNECT_TIMEOUT": "soon"}, "PROVIDER_CONNECT_TIMEOUT"),
        ({"PROVIDER_RESPONSE_TIMEOUT": "0"}, "PROVIDER_RESPONSE_TIMEOUT"),
        ({"PORT": "70000"}, "PORT"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"SPEECH_PROVIDER": "nope"}, "SPEECH_PROVIDER"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env, env_file=None)
    message = str(info.value)
    assert message.startswith(name + ":")
    assert "\n" not in message


def test_unknown_provider_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match="whisper_local"):
        load_settings(environ={"SPEECH_PROVIDER": "nope"}, env_file=None)


def test_dotenv_is_read_and_environment_wins(tmp_path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9100\nLOG_LEVEL=DEBUG\n")
    s = load_settings(environ={"PORT": "9200"}, env_file=env_file)
    assert s.PORT == 9200 and s.LOG_LEVEL == "DEBUG"


def test_secrets_never_in_repr() -> None:
    s = load_settings(
        environ={"DEEPGRAM_API_KEY": "sekrit-123", "OPENAI_API_KEY": "sk-abc"}, env_file=None
    )
    assert "sekrit-123" not in repr(s) and "sk-abc" not in repr(s)
    assert dict(s.safe_items())["DEEPGRAM_API_KEY"] == "***"


def test_bad_whisper_model_dir(tmp_path) -> None:
    # checked while settings load (the registry's check), before the server starts
    with pytest.raises(ConfigError, match=r"^WHISPER_MODEL:"):
        load_settings(environ={"WHISPER_MODEL": str(tmp_path)}, env_file=None)


def test_a_replaced_setting_is_a_startup_error_naming_its_successor(tmp_path) -> None:
    with pytest.raises(
        ConfigError, match=r"AUDIO_QUEUE_CHUNKS is no longer read: set AUDIO_QUEUE_S"
    ):
        load_settings({"AUDIO_QUEUE_CHUNKS": "120"}, env_file=None)
    env_file = tmp_path / ".env"
    env_file.write_text("AUDIO_QUEUE_CHUNKS=120\n")
    with pytest.raises(ConfigError, match="AUDIO_QUEUE_S"):
        load_settings({}, env_file=env_file)
