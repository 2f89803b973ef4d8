"""``speakflow`` command line: serve (and, as they land, emulate, stream, bench)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import tomllib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from ._gc import tune_for_latency
from .config import Settings, load_settings
from .errors import ConfigError

log = logging.getLogger("speakflow")

#: Modules that add subcommands: each has ``register(subparsers)`` which adds
#: its parser and sets ``func`` to a callable taking the parsed args and
#: returning an exit status. Keeps this file free of every tool's options.
_SUBCOMMAND_MODULES: list[str] = [
    "speakflow.client.cli",
    "speakflow.client.compare",
    "speakflow.emulation.cli",
    "speakflow.providers.whisper_local.bench",
    "speakflow.store.cli",  # speakflow transcript (issue 19)
]


def _setup_logging(settings: Settings) -> None:
    from .config import SECRET_FIELDS
    from .observability.logs import setup_logging

    secrets = [str(getattr(settings, name)) for name in sorted(SECRET_FIELDS)]
    setup_logging(settings.LOG_LEVEL, settings.LOG_FORMAT, secrets)


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

    from . import _wsmask
    from ._hypercorn import install_fixes

    install_fixes()  # one client's bad frames must never end the server (see _hypercorn.py)
    _wsmask.install()  # masking was the top function of the relay's profile (see _wsmask.py)
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
    if host is not None or port is not None or "bind" not in given:
        host = settings.HOST if host is None else host
        port = settings.PORT if port is None else port
        config.bind = [f"{host}:{port}"] if ":" not in host else [f"[{host}]:{port}"]
    return config


async def _serve(
    settings: Settings, host: str | None, port: int | None, config_file: str | None = None
) -> None:
    from hypercorn.trio import serve

    from .app import create_app

    app = create_app(settings)
    config = hypercorn_config(settings, host, port, config_file)
    log.info(
        "hypercorn: bind %s, websocket_ping_interval %s s, websocket_max_message_size %s, "
        "graceful_timeout %s s%s",
        " ".join(config.bind),
        config.websocket_ping_interval,
        config.websocket_max_message_size,
        config.graceful_timeout,
        f" (from {config_file})" if config_file else "",
    )

    state = app.state.speakflow

    async def shutdown_trigger() -> None:
        """First SIGTERM/SIGINT: drain (finals, session_ended, close 1001), then let
        Hypercorn stop. A second signal exits at once."""
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                break

            async def second_signal() -> None:
                async for signum in signals:
                    log.warning("received %s again, exiting now", signal.Signals(signum).name)
                    os._exit(1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(second_signal)
                await state.drain(settings.SHUTDOWN_TIMEOUT_S)
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
        )
        tune_for_latency()  # no collector pauses across all connections (see _gc.py)
        for url in binds:
            log.info("speakflow listening on %s (provider %s)", url, settings.SPEECH_PROVIDER)
            log.info(
                "streaming endpoint: %s/v1/stt/stream, docs: %s/docs",
                url.replace("http", "ws", 1),
                url,
            )


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(env_file=args.env_file)
    except ConfigError as err:
        print(f"speakflow: configuration error: {err}", file=sys.stderr)
        return 2
    _setup_logging(settings)
    log.debug("settings", extra={"event": "settings", "fields": dict(settings.safe_items())})
    try:
        trio.run(_serve, settings, args.host, args.port, args.config)
    except KeyboardInterrupt:
        pass
    except (ConfigError, BaseExceptionGroup) as err:
        # a provider's start-up (model load) fails inside Hypercorn's lifespan task group
        found = _config_error(err)
        if found is None:
            raise
        print(f"speakflow: configuration error: {found}", file=sys.stderr)
        return 2
    return 0


def _config_error(err: BaseException | None, depth: int = 0) -> ConfigError | None:
    """The ConfigError inside ``err``: Hypercorn reports a failed lifespan start-up as
    its own error raised while handling ours, inside task groups."""
    if err is None or depth > 10:
        return None
    if isinstance(err, ConfigError):
        return err
    if isinstance(err, BaseExceptionGroup):
        for inner in err.exceptions:
            found = _config_error(inner, depth + 1)
            if found is not None:
                return found
    return _config_error(err.__cause__ or err.__context__, depth + 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speakflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the stream server")
    serve.add_argument("--host", default=None, help="address to bind (default HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default PORT, 8000)")
    serve.add_argument("--env-file", default=".env", help="dotenv file to read (default .env)")
    serve.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="Hypercorn TOML file (e.g. deploy/hypercorn.toml); its keys win over settings",
    )
    serve.set_defaults(func=_cmd_serve)
    for module in _SUBCOMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


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

    from .app import create_app

    app = create_app(settings)
    config = hypercorn_config(settings, host, port)
    config.graceful_timeout = graceful_timeout
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, app, config, shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]
        )
        try:
            yield app, binds[0]
        finally:
            shutdown.set()
