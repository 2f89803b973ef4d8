"""``speakflow`` command line: serve (and, as they land, emulate, stream, bench)."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from functools import partial

import trio

from .config import Settings, load_settings
from .errors import ConfigError

log = logging.getLogger("speakflow")

#: Modules that add subcommands: each has ``register(subparsers)`` which adds
#: its parser and sets ``func`` to a callable taking the parsed args and
#: returning an exit status. Keeps this file free of every tool's options.
_SUBCOMMAND_MODULES: list[str] = [
    "speakflow.client.cli",
]


def _setup_logging(settings: Settings) -> None:
    from .config import SECRET_FIELDS
    from .observability.logs import setup_logging

    secrets = [str(getattr(settings, name)) for name in sorted(SECRET_FIELDS)]
    setup_logging(settings.LOG_LEVEL, settings.LOG_FORMAT, secrets)


def hypercorn_config(settings: Settings, host: str, port: int) -> object:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{port}"] if ":" not in host else [f"[{host}]:{port}"]
    config.worker_class = "trio"
    config.websocket_ping_interval = settings.WS_PING_INTERVAL
    config.websocket_max_message_size = settings.WS_MAX_MESSAGE_BYTES
    config.graceful_timeout = settings.PROVIDER_RESPONSE_TIMEOUT
    config.accesslog = None
    return config


async def _serve(settings: Settings, host: str, port: int) -> None:
    from hypercorn.trio import serve

    from .app import create_app

    app = create_app(settings)
    config = hypercorn_config(settings, host, port)

    async def shutdown_trigger() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                return

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
        )
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
    host = args.host or settings.HOST
    port = settings.PORT if args.port is None else args.port
    try:
        trio.run(_serve, settings, host, port)
    except ConfigError as err:
        print(f"speakflow: configuration error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speakflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the stream server")
    serve.add_argument("--host", default=None, help="address to bind (default HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default PORT, 8000)")
    serve.add_argument("--env-file", default=".env", help="dotenv file to read (default .env)")
    serve.set_defaults(func=_cmd_serve)
    for module in _SUBCOMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
