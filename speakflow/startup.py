"""Startup validation: every component's check of its own section, composed here.

``speakflow.config`` only reads and types the settings (it imports nothing of
ours but the exceptions); each component owns the rules for its section as a
``check_settings`` next to the code that uses them. This module lists them in
the order startup runs them, so the first bad setting is the one line
``speakflow serve`` prints. The app factory (:func:`speakflow.app.create_app`)
runs the list for every server, however it was built; ``speakflow serve``
runs it once more before the event loop starts, where blocking checks (the
AWS credential chain) may run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from . import config
from .auth import check_settings as check_auth
from .config import Settings
from .postprocess import check_settings as check_processor
from .providers import registry
from .proxy import check_settings as check_proxy
from .shared_state import check_settings as check_shared_state
from .store.config import check_settings as check_store

Check = Callable[[Settings], None]

#: each takes the whole settings and hands its component that component's section
CHECKS: tuple[Check, ...] = (
    lambda s: config.check_logging(s.server),
    registry.check_primary,
    lambda s: check_auth(s.auth),
    registry.check_fallbacks,
    lambda s: check_processor(s.postprocess),
    lambda s: check_proxy(s.server),
    lambda s: check_shared_state(s.shared_state),
    lambda s: check_store(s.store),
    registry.check_languages,
    registry.check_devices,
    lambda s: config.check_cors(s.server),
)


def check_settings(settings: Settings) -> None:
    """Run every component's check; the first failure raises its one-line ConfigError."""
    for check in CHECKS:
        check(settings)


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> Settings:
    """:func:`speakflow.config.load_settings`, then :func:`check_settings`: the
    settings a server may start with."""
    settings = config.load_settings(environ, env_file)
    check_settings(settings)
    return settings
