"""Where the transcript record lives: TRANSCRIPT_STORE and friends, checked at startup.

Kept apart from ``speakflow.config`` so the settings module only declares the
fields; everything the store derives from them (the SQLite path, the
SQLAlchemy URL) is computed here, once, from the same values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import Settings, StoreSettings

DB_FILE = "transcripts.db"


def data_dir(settings: Settings | StoreSettings) -> Path:
    """SPEAKFLOW_DATA_DIR, else $XDG_DATA_HOME/speakflow, else ~/.local/share/speakflow."""
    if settings.SPEAKFLOW_DATA_DIR:
        return Path(settings.SPEAKFLOW_DATA_DIR).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "speakflow"


def store_url(settings: Settings | StoreSettings) -> str | None:
    """The SQLAlchemy URL of the store, or None when TRANSCRIPT_STORE=off."""
    value = settings.TRANSCRIPT_STORE.strip()
    if value.lower() == "off":
        return None
    if not value:
        return f"sqlite:///{data_dir(settings) / DB_FILE}"
    scheme = urlsplit(value).scheme.lower()
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    if scheme in ("postgresql+psycopg", "sqlite"):
        return value
    raise ConfigError(
        "TRANSCRIPT_STORE: expected empty (SQLite in the data directory), sqlite:///PATH, "
        f"postgresql://USER@HOST/DB or off (got {value[:60]!r})"
    )


def describe(url: str) -> str:
    """The URL for a log line: no password."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def check_settings(settings: StoreSettings) -> None:
    """Startup check: a usable TRANSCRIPT_STORE, and a webhook only with a store."""
    url = store_url(settings)
    hook = settings.TRANSCRIPT_WEBHOOK_URL.strip()
    if hook:
        if url is None:
            raise ConfigError(
                "TRANSCRIPT_WEBHOOK_URL: needs the transcript store; unset "
                "TRANSCRIPT_STORE=off or the webhook"
            )
        if urlsplit(hook).scheme not in ("http", "https"):
            raise ConfigError(
                f"TRANSCRIPT_WEBHOOK_URL: expected an http(s) URL (got {hook[:60]!r})"
            )
        if not settings.TRANSCRIPT_WEBHOOK_SECRET:
            raise ConfigError(
                "TRANSCRIPT_WEBHOOK_SECRET: required with TRANSCRIPT_WEBHOOK_URL (the receiver "
                "checks the signature with it)"
            )
