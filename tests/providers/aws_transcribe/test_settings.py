"""AWS settings at startup: what is checked, and credentials resolved or refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from speakflow.errors import ConfigError
from speakflow.providers.aws_transcribe import endpoint
from speakflow.startup import load_settings

from .support import isolate_aws_chain

KEYS = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"}


def load(**env: str):  # type: ignore[no-untyped-def]
    return load_settings(environ={"SPEECH_PROVIDER": "aws_transcribe", **env}, env_file=None)


@pytest.fixture
def no_aws_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_aws_chain(tmp_path, monkeypatch)


def test_defaults() -> None:
    s = load(**KEYS)
    assert endpoint(s) == "wss://transcribestreaming.us-east-1.amazonaws.com:8443"
    assert endpoint(load(**KEYS, AWS_REGION="eu-central-1")).startswith(
        "wss://transcribestreaming.eu-central-1."
    )
    assert (s.AWS_TRANSCRIBE_LANGUAGE, s.AWS_TRANSCRIBE_STABILITY) == ("", "medium")
    assert s.AWS_TRANSCRIBE_KEEPALIVE_S == 5.0
    assert "secret" not in repr(s)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"AWS_TRANSCRIBE_ENDPOINT": "https://x"}, "AWS_TRANSCRIBE_ENDPOINT: expected a ws://"),
        ({"AWS_TRANSCRIBE_STABILITY": "max"}, "AWS_TRANSCRIBE_STABILITY: expected off, low"),
        ({"AWS_TRANSCRIBE_KEEPALIVE_S": "15"}, "under AWS's 15 s idle limit"),
        ({"AWS_REGION": ""}, "AWS_REGION: required"),
        ({"AWS_SECRET_ACCESS_KEY": ""}, "set both or neither"),
    ],
)
def test_bad_settings_stop_startup(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load(**{**KEYS, **env})


def test_no_credentials_anywhere_is_one_clear_line(no_aws_chain: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load()
    assert str(info.value).startswith("AWS credentials: none found for SPEECH_PROVIDER=")
    with pytest.raises(ConfigError, match="AWS credentials: none found"):  # as a fallback too
        load_settings(environ={"SPEECH_FALLBACK_PROVIDERS": "aws_transcribe"}, env_file=None)


def test_credentials_from_a_profile_need_no_key_settings(
    no_aws_chain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (no_aws_chain / "credentials").write_text(
        "[meetings]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s\n"
    )
    monkeypatch.setenv("AWS_PROFILE", "meetings")
    assert load().AWS_ACCESS_KEY_ID == ""
