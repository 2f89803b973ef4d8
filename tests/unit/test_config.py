"""Settings: defaults, coercion, one-line errors naming the variable, secrets masked."""

from __future__ import annotations

import pytest

from speakflow.errors import ConfigError
from speakflow.startup import load_settings


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
    origins = "https://a.example/, http://localhost:5173, chrome-extension://abc, *"
    assert load_settings(environ={"CORS_ORIGINS": origins}, env_file=None).cors_origins
    assert s.cors_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PROVIDER_CONNECT_TIMEOUT": "soon"}, "PROVIDER_CONNECT_TIMEOUT"),
        ({"PROVIDER_RESPONSE_TIMEOUT": "0"}, "PROVIDER_RESPONSE_TIMEOUT"),
        ({"PORT": "70000"}, "PORT"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"SPEECH_PROVIDER": "nope"}, "SPEECH_PROVIDER"),
        ({"CORS_ORIGINS": "app.example.com"}, "CORS_ORIGINS"),
        ({"CORS_ORIGINS": "https://a.example, https://b.example/app"}, "CORS_ORIGINS"),
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
    # checked at startup (the registry's check), before the server starts
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


# ------------------------------------------------ languages a provider cannot use


def _refusal(**env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env, env_file=None)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("model", "language"),
    [
        ("tiny.en", "es"),
        ("tiny.en", "es-MX"),
        ("/models/base.en", "fr"),
        ("/models/whisper-small.en", "de"),
        ("/models/whisper-small.en/", "de"),
    ],
)
def test_an_english_only_model_with_another_default_language_is_refused(
    model: str, language: str, tmp_path
) -> None:
    if model.startswith("/"):  # a real model directory whose name ends in .en
        model_dir = tmp_path / model.strip("/").split("/")[-1]
        model_dir.mkdir()
        (model_dir / "model.bin").write_bytes(b"x")
        (model_dir / "config.json").write_text("{}")
        model = str(model_dir) + ("/" if model.endswith("/") else "")
    message = _refusal(WHISPER_MODEL=model, DEFAULT_LANGUAGE=language)
    assert message.startswith(f"DEFAULT_LANGUAGE={language} needs a multilingual model")
    assert "English-only: set WHISPER_MODEL=base" in message


def test_an_empty_model_is_judged_as_the_model_it_loads() -> None:
    """WHISPER_MODEL= means the default model: refused with Spanish exactly when that
    default is the English-only tiny.en."""
    from speakflow.providers.whisper_local.models import bundled_model_path, resolve_model

    env = {"WHISPER_MODEL": "", "DEFAULT_LANGUAGE": "es"}
    if resolve_model("") == bundled_model_path():
        assert "WHISPER_MODEL=tiny.en (the default) is English-only" in _refusal(**env)
    else:
        assert load_settings(environ=env, env_file=None).WHISPER_MODEL == ""


@pytest.mark.parametrize(
    ("model", "language"),
    [("tiny.en", "en"), ("tiny.en", "en-GB"), ("tiny.en", "auto"), ("", "EN"),
     ("base", "es"), ("base", "auto"), ("base", "yue"), ("base", "pt-BR")],
)  # fmt: skip
def test_languages_the_model_can_use_are_accepted(model: str, language: str) -> None:
    env = {"WHISPER_MODEL": model, "DEFAULT_LANGUAGE": language}
    settings = load_settings(environ=env, env_file=None)
    assert (model, language) == (settings.WHISPER_MODEL, settings.DEFAULT_LANGUAGE)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"SPEECH_PROVIDER": "deepgram", "DEEPGRAM_API_KEY": "k"},
        {"SPEECH_PROVIDER": "assemblyai", "ASSEMBLYAI_API_KEY": "k"},
        {"SPEECH_PROVIDER": "aws_transcribe", "AWS_ACCESS_KEY_ID": "a",
         "AWS_SECRET_ACCESS_KEY": "s"},
        {"WHISPER_MODEL": "base"},
    ],
)  # fmt: skip
def test_a_language_name_is_not_a_language_code(env: dict[str, str]) -> None:
    message = _refusal(**env, DEFAULT_LANGUAGE="spanish")
    assert message.startswith("DEFAULT_LANGUAGE: 'spanish' is not a language code")


@pytest.mark.parametrize(
    ("env", "start"),
    [
        ({"WHISPER_MODEL": "base", "DEFAULT_LANGUAGE": "xx"},
         "DEFAULT_LANGUAGE=xx: Whisper (base) does not know"),
        ({"WHISPER_MODEL": "base", "DEFAULT_LANGUAGE": ""}, "DEFAULT_LANGUAGE: '' is not"),
        ({"SPEECH_PROVIDER": "assemblyai", "ASSEMBLYAI_API_KEY": "k", "DEFAULT_LANGUAGE": "ja"},
         "DEFAULT_LANGUAGE=ja: AssemblyAI does not transcribe language 'ja'"),
        ({"SPEECH_PROVIDER": "deepgram", "DEEPGRAM_API_KEY": "k", "DEEPGRAM_LANGUAGE": "French"},
         "DEEPGRAM_LANGUAGE: 'French' is not"),
        ({"SPEECH_PROVIDER": "aws_transcribe", "AWS_ACCESS_KEY_ID": "a",
          "AWS_SECRET_ACCESS_KEY": "s", "AWS_TRANSCRIBE_LANGUAGE": "af"},
         "AWS_TRANSCRIBE_LANGUAGE=af: AWS Transcribe needs the full code"),
        # a fallback provider is held to the same rule as the primary
        ({"SPEECH_PROVIDER": "deepgram", "DEEPGRAM_API_KEY": "k",
          "SPEECH_FALLBACK_PROVIDERS": "whisper_local", "WHISPER_MODEL": "tiny.en",
          "DEFAULT_LANGUAGE": "es"}, "DEFAULT_LANGUAGE=es needs a multilingual model"),
    ],
)  # fmt: skip
def test_each_provider_refuses_a_default_language_it_cannot_use(
    env: dict[str, str], start: str
) -> None:
    assert _refusal(**env).startswith(start)


@pytest.mark.parametrize(
    "env",
    [
        {"SPEECH_PROVIDER": "deepgram", "DEEPGRAM_API_KEY": "k", "DEFAULT_LANGUAGE": "multi"},
        {"SPEECH_PROVIDER": "deepgram", "DEEPGRAM_API_KEY": "k", "DEFAULT_LANGUAGE": "es-419"},
        {"SPEECH_PROVIDER": "assemblyai", "ASSEMBLYAI_API_KEY": "k", "DEFAULT_LANGUAGE": "auto"},
        {"SPEECH_PROVIDER": "aws_transcribe", "AWS_ACCESS_KEY_ID": "a",
         "AWS_SECRET_ACCESS_KEY": "s", "DEFAULT_LANGUAGE": "auto",
         "AWS_TRANSCRIBE_LANGUAGE": "es-US"},
    ],
)  # fmt: skip
def test_cloud_providers_accept_their_codes(env: dict[str, str]) -> None:
    load_settings(environ=env, env_file=None)


def test_whisper_language_list_is_the_tokenizers() -> None:
    """The startup check keeps its own copy (importing faster_whisper is slow)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    from speakflow.languages import WHISPER_LANGUAGES

    assert frozenset(_LANGUAGE_CODES) == WHISPER_LANGUAGES


def test_cuda_without_a_cuda_device_is_refused() -> None:
    import ctranslate2

    env = {"WHISPER_DEVICE": "cuda"}
    if ctranslate2.get_cuda_device_count() > 0:  # a GPU machine: the setting is fine
        assert load_settings(environ=env, env_file=None).WHISPER_DEVICE == "cuda"
        return
    message = _refusal(**env)
    assert message.startswith("WHISPER_DEVICE=cuda: CTranslate2 finds no CUDA device")
    assert "set WHISPER_DEVICE=cpu" in message
    # not checked where local Whisper is not used
    load_settings(
        environ={**env, "SPEECH_PROVIDER": "deepgram", "DEEPGRAM_API_KEY": "k"}, env_file=None
    )


# ------------------------------------------------ the .env file itself


def test_a_dotenv_line_that_is_not_a_setting_is_refused(tmp_path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LOG_LEVEL=DEBUG\n\nOPENAI_API_KEY sk-secret\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, env_file=env_file)
    assert str(info.value) == f"{env_file} line 3: expected NAME=value; fix or remove that line"


def test_a_dotenv_file_that_is_not_utf8_is_refused(tmp_path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(b"PORT=9000\nLOG_LEVEL=\xff\n")
    with pytest.raises(ConfigError, match=r"not a UTF-8 text file \(byte 20\); save it as UTF-8"):
        load_settings(environ={}, env_file=env_file)


def test_dotenv_comments_exports_and_quotes_still_work(tmp_path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text('# comment\nexport PORT=9100\nCORS_ORIGINS="https://a.example"\nHOST=\n')
    s = load_settings(environ={}, env_file=env_file)
    assert (s.PORT, s.cors_origins, s.HOST) == (9100, ["https://a.example"], "")


def test_the_shipped_env_example_loads() -> None:
    """Copied to .env as it is, it must pass the stricter reading (every line NAME=value)."""
    from ..conftest import REPO

    load_settings(environ={}, env_file=REPO / ".env.example")


# ------------------------------------------------ sections


def test_every_setting_is_in_a_section_under_its_own_name_and_type() -> None:
    import msgspec

    from speakflow.config import SECTIONS, Settings

    flat = {f.name: f.type for f in msgspec.structs.fields(Settings)}
    placed: set[str] = set()
    for cls in SECTIONS.values():
        for field in msgspec.structs.fields(cls):
            assert flat.get(field.name) == field.type, (cls.__name__, field.name)
            placed.add(field.name)
    assert set(flat) - placed == set()
    settings = load_settings(environ={}, env_file=None)
    for name, cls in SECTIONS.items():
        assert type(getattr(settings, name)) is cls  # Settings.<name> builds that section


def test_a_component_gets_its_section_only() -> None:
    s = load_settings(
        environ={
            "SPEECH_PROVIDER": "deepgram",
            "DEEPGRAM_API_KEY": "dg-secret",
            "AWS_SECRET_ACCESS_KEY": "aws-secret",
            "AWS_ACCESS_KEY_ID": "id",
            "DEFAULT_LANGUAGE": "es",
            "MAX_SESSIONS": "7",
        },
        env_file=None,
    )
    deepgram = s.deepgram
    assert deepgram.DEEPGRAM_API_KEY == "dg-secret" and deepgram.language_for("") == "es"
    assert not hasattr(deepgram, "AWS_SECRET_ACCESS_KEY")
    assert "dg-secret" not in repr(deepgram) and "DEEPGRAM_API_KEY='***'" in repr(deepgram)
    assert s.limits.MAX_SESSIONS == 7 and s.speech.providers == ["deepgram"]
    assert s.server.cors_origins == s.cors_origins


def test_reading_settings_checks_types_and_startup_checks_the_components() -> None:
    """config.load_settings reads (types, one-line errors); a component's own rule is
    startup's (speakflow.startup), run by `serve` and by the app factory."""
    from speakflow import config
    from speakflow.app import create_app

    with pytest.raises(ConfigError, match=r"^PORT:"):
        config.load_settings(environ={"PORT": "x"}, env_file=None)
    unchecked = config.load_settings(environ={"SPEECH_PROVIDER": "nope"}, env_file=None)
    with pytest.raises(ConfigError, match=r"^SPEECH_PROVIDER: unknown provider 'nope'"):
        create_app(unchecked)
