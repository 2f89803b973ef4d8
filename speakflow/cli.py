"""``speakflow`` command line: serve, and the tools (emulate, stream, bench, transcript)."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio

from . import errors
from ._patches.gc_tuning import tune_for_latency
from .config import Settings
from .errors import ConfigError
from .hosting import hypercorn_config, read_hypercorn_file

log = logging.getLogger("speakflow")


def _setup_logging(settings: Settings) -> None:
    from .config import SECRET_FIELDS
    from .observability.logs import setup_logging

    secrets = [str(getattr(settings, name)) for name in sorted(SECRET_FIELDS)]
    setup_logging(settings.LOG_LEVEL, settings.LOG_FORMAT, secrets)


async def _serve(
    settings: Settings,
    host: str | None,
    port: int | None,
    config_file: str | None = None,
    listen_fd: int | None = None,
) -> None:
    from hypercorn.trio import serve

    from .app import create_app, start_provider

    config = hypercorn_config(settings, host, port, config_file)
    knobs = _bind_knobs(host, port, config_file)
    if listen_fd is not None:  # scale-out: a worker of `serve --workers N` (speakflow.supervisor)
        # the supervisor's socket: nothing to probe (a restarted worker's probe of the
        # port its siblings hold with SO_REUSEPORT failed as "already in use")
        config.bind = [f"fd://{listen_fd}"]
    check_binds(config, knobs)
    app = create_app(settings)
    # Before Hypercorn starts: it logs "Running on" even when the app's lifespan
    # start-up fails (it carries on "without Lifespan support"), so a model that
    # cannot load must fail here, before any line claims the server is ready.
    await start_provider(app.state.speakflow)
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
                # a worker of --workers N: the whole server stops, drain; an instance of
                # a cluster (REDIS_URL) alone: a rolling restart, hand sessions off
                await state.drain(settings.SHUTDOWN_TIMEOUT_S, hand_off=listen_fd is None)
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        try:
            binds = await nursery.start(
                partial(serve, app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
            )
        except (OSError, BaseExceptionGroup) as err:
            # the address was taken between check_binds and Hypercorn's own bind
            taken = _bind_os_error(err)
            if taken is None:
                raise
            raise ConfigError(bind_error(taken, config.bind, knobs)) from None
        tune_for_latency()  # no collector pauses across all connections (see _patches/gc_tuning.py)
        for url in binds:
            log.info("speakflow listening on %s (provider %s)", url, settings.SPEECH_PROVIDER)
            log.info(
                "streaming endpoint: %s/v1/stt/stream, docs: %s/docs",
                url.replace("http", "ws", 1),
                url,
            )


#: errors of bind(): an address that is taken, not ours, not allowed, or unresolvable
_BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def _bind_knobs(host: str | None, port: int | None, config_file: str | None) -> tuple[str, str]:
    """What the operator changes to move the server: (for the port, for the address)."""
    if config_file and host is None and port is None and "bind" in read_hypercorn_file(config_file):
        return f"bind in {config_file}", f"bind in {config_file}"
    return "--port/PORT", "--host/HOST"


def bind_error(err: OSError, binds: Sequence[str], knobs: tuple[str, str]) -> str:
    """One line for a failed bind that names the setting to change."""
    port_knob, host_knob = knobs
    where = ", ".join(binds)
    if err.errno == errno.EADDRINUSE:
        return (
            f"{port_knob}: {where} is already in use (another speakflow or another program "
            f"listens there); stop it or choose another port with {port_knob}"
        )
    if err.errno == errno.EACCES:
        return (
            f"{port_knob}: not allowed to listen on {where} (ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE); use a port above 1023, behind nginx for 80 and 443"
        )
    return (
        f"{host_knob}: cannot listen on {where}: {err.strerror or err}; use an address of "
        "this machine (127.0.0.1, or 0.0.0.0 for all)"
    )


def check_binds(config: Any, knobs: tuple[str, str]) -> None:
    """Bind every address once and let go, before the model loads.

    An address in use (or not on this machine) is then one line naming what
    to change, at once, instead of Hypercorn's tracebacks after the model has
    loaded. Hypercorn binds again right after start-up (SO_REUSEADDR, so the
    closed probe does not block it). Inherited descriptors (fd://) are not
    probed: closing them would lose them.
    """
    if any(bind.startswith("fd://") for bind in (*config.bind, *config.insecure_bind)):
        return
    try:
        sockets = config.create_sockets()
    except OSError as err:
        raise ConfigError(bind_error(err, config.bind, knobs)) from None
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets):
        sock.close()


def _bind_os_error(err: BaseException | None) -> OSError | None:
    """The bind failure inside ``err``, in task groups or its causes (Hypercorn's)."""
    return errors.find(
        err, OSError, lambda e: isinstance(e, socket.gaierror) or e.errno in _BIND_ERRNOS
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from ._patches import install_all
    from .startup import load_settings  # read, then every component's check

    try:
        settings = load_settings(env_file=args.env_file)
        install_all()  # third-party patches, version-checked (speakflow._patches)
    except ConfigError as err:
        print(f"speakflow: configuration error: {err}", file=sys.stderr)
        return 2
    _setup_logging(settings)
    log.debug("settings", extra={"event": "settings", "fields": dict(settings.safe_items())})
    # >>> scale-out (speakflow.supervisor): --workers N > 1 supervises N of these processes
    from .supervisor import parse_workers, run_supervisor

    try:
        workers = parse_workers(args.workers)
        if workers > 1:
            return run_supervisor(settings, args, workers)
    except ConfigError as err:
        print(f"speakflow: configuration error: {err}", file=sys.stderr)
        return 2
    # <<< scale-out
    try:
        trio.run(_serve, settings, args.host, args.port, args.config, args.listen_fd)
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


def _config_error(err: BaseException | None) -> ConfigError | None:
    """The ConfigError inside ``err``: Hypercorn reports a failed lifespan start-up as
    its own error raised while handling ours, inside task groups."""
    return errors.find(err, ConfigError)


def _port(text: str) -> int:
    """--port as PORT is checked: 0-65535 (Hypercorn would fail with a traceback)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535 (got {text!r})")
    return value


def build_parser(serve_only: bool = False) -> argparse.ArgumentParser:
    """The ``speakflow`` parser; ``serve_only`` leaves the other commands out, so that
    a serving process never imports the tools (``speakflow.tools``) to register them."""
    parser = argparse.ArgumentParser(prog="speakflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the stream server")
    serve.add_argument("--host", default=None, help="address to bind (default HOST, 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=None, help="port (default PORT, 8000)")
    serve.add_argument("--env-file", default=".env", help="dotenv file to read (default .env)")
    serve.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="Hypercorn TOML file (e.g. deploy/hypercorn.toml); its keys win over settings",
    )
    from .supervisor import add_arguments as add_scaleout_arguments

    add_scaleout_arguments(serve)  # --workers (and the hidden --listen-fd of its children)
    serve.set_defaults(func=_cmd_serve)
    if not serve_only:
        from .commands import COMMANDS

        for load in COMMANDS:
            load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(serve_only=given[:1] == ["serve"]).parse_args(given)
    code: int = args.func(args)
    return code
