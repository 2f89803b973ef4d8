"""Hypercorn for SpeakFlow: its configuration from our settings, and the app
run in-process.

Apart from the command line so that the supervisor (``serve --workers``) and
the tools (``compare``, ``bench-echo``) can build a server the way ``serve``
does without importing the command line, which imports them.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from .config import Settings
from .errors import ConfigError


def read_hypercorn_file(path: str) -> dict[str, Any]:
    """The keys a Hypercorn TOML file sets, checked: known names, trio worker, one process.

    Hypercorn itself ignores a misspelt key; here it stops startup instead.
    """
    from hypercorn.config import Config

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as err:
        raise ConfigError(f"--config: cannot read {path!r}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"--config: {path!r} is not valid TOML: {err}") from None
    unknown = sorted(key for key in data if not hasattr(Config, key))
    if unknown:
        raise ConfigError(f"--config: {path!r}: unknown Hypercorn setting {', '.join(unknown)}")
    if data.get("worker_class", "trio") != "trio":
        raise ConfigError(
            f'--config: worker_class must be "trio" (got {data["worker_class"]!r}): '
            "speakflow runs on Trio"
        )
    if data.get("workers", 1) != 1:
        raise ConfigError(
            f"--config: workers must be 1 (got {data['workers']!r}): `speakflow serve` is one "
            "process; run several instances behind the proxy instead (README, Deploy)"
        )
    return data


def hypercorn_config(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    config_file: str | None = None,
) -> Any:
    """Hypercorn's Config for ``speakflow serve``.

    Precedence, strongest first: ``host``/``port`` (``--host``/``--port``);
    the ``--config`` file, for each key it sets; settings (environment,
    ``.env``, defaults) for the keys it leaves out: ``bind`` (HOST, PORT),
    ``websocket_ping_interval`` (WS_PING_INTERVAL), ``websocket_max_message_size``
    (WS_MAX_MESSAGE_BYTES), ``graceful_timeout`` (PROVIDER_RESPONSE_TIMEOUT);
    Hypercorn's defaults. The file wins over settings so that a deployment's
    record of its server knobs is not silently overridden by a copied
    ``.env``. Always the trio worker; no access log unless the file asks.
    """
    from hypercorn.config import Config

    given = read_hypercorn_file(config_file) if config_file else {}
    config = Config.from_toml(config_file) if config_file else Config()
    config.worker_class = "trio"
    if "accesslog" not in given:
        config.accesslog = None
    if "errorlog" not in given:
        # Hypercorn's own lines go through our handler (JSON, redaction), once.
        config.errorlog = logging.getLogger("hypercorn.error")
    derived = {
        "websocket_ping_interval": settings.WS_PING_INTERVAL,
        "websocket_max_message_size": settings.WS_MAX_MESSAGE_BYTES,
        "graceful_timeout": settings.PROVIDER_RESPONSE_TIMEOUT,
    }
    for key, value in derived.items():
        if key not in given:
            setattr(config, key, value)
    config.speakflow_ws_deflate = settings.WS_DEFLATE  # type: ignore[attr-defined]  # _patches/hypercorn_fixes.py
    if host is not None or port is not None or "bind" not in given:
        host = settings.HOST if host is None else host
        port = settings.PORT if port is None else port
        config.bind = [f"{host}:{port}"] if ":" not in host else [f"[{host}]:{port}"]
    return config


@asynccontextmanager
async def running_app(
    settings: Settings, host: str = "127.0.0.1", port: int = 0, graceful_timeout: float = 1.0
) -> AsyncIterator[tuple[Any, str]]:
    """The app under Hypercorn's trio worker inside the caller's task tree.

    Yields (app, base http URL); for tests and tools that need a real server
    next to their own code (``compare``, the test suite). Configured as
    ``serve`` configures it.
    """
    from hypercorn.trio import serve

    from .app import create_app, start_provider

    app = create_app(settings)
    config = hypercorn_config(settings, host, port)
    config.graceful_timeout = graceful_timeout
    await start_provider(app.state.speakflow)  # a failure raises here, as in `serve`
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, app, config, shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]
        )
        try:
            yield app, binds[0]
        finally:
            shutdown.set()
