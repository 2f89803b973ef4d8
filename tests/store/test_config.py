"""TRANSCRIPT_STORE and friends: where the record goes, and one-line startup errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from speakflow.errors import ConfigError
from speakflow.store.config import store_url

from ..conftest import make_settings

DB = "sqlite:///unused.db"


def test_default_is_sqlite_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert store_url(make_settings(TRANSCRIPT_STORE="")) == (
        f"sqlite:///{tmp_path / 'xdg' / 'speakflow' / 'transcripts.db'}"
    )
    settings = make_settings(TRANSCRIPT_STORE="", SPEAKFLOW_DATA_DIR=str(tmp_path / "d"))
    assert store_url(settings) == f"sqlite:///{tmp_path / 'd' / 'transcripts.db'}"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store_url(make_settings(TRANSCRIPT_STORE="")) == (
        f"sqlite:///{tmp_path / 'home' / '.local' / 'share' / 'speakflow' / 'transcripts.db'}"
    )


def test_urls() -> None:
    assert store_url(make_settings(TRANSCRIPT_STORE="off")) is None
    assert store_url(make_settings(TRANSCRIPT_STORE="postgresql://u:p@h/db")) == (
        "postgresql+psycopg://u:p@h/db"
    )


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"TRANSCRIPT_STORE": "mysql://x"}, "TRANSCRIPT_STORE"),
        (
            {"TRANSCRIPT_WEBHOOK_URL": "http://h/x", "TRANSCRIPT_STORE": DB},
            "TRANSCRIPT_WEBHOOK_SECRET",
        ),
        (
            {
                "TRANSCRIPT_WEBHOOK_URL": "ftp://h",
                "TRANSCRIPT_WEBHOOK_SECRET": "s",
                "TRANSCRIPT_STORE": DB,
            },
            "TRANSCRIPT_WEBHOOK_URL",
        ),
        (
            {
                "TRANSCRIPT_WEBHOOK_URL": "http://h",
                "TRANSCRIPT_WEBHOOK_SECRET": "s",
                "TRANSCRIPT_STORE": "off",
            },
            "TRANSCRIPT_WEBHOOK_URL",
        ),
        ({"TRANSCRIPT_RETENTION_DAYS": "-1"}, "TRANSCRIPT_RETENTION_DAYS"),
    ],
)
def test_bad_settings_stop_startup_naming_the_setting(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_settings(**env)
    assert str(err.value).startswith(names), err.value
