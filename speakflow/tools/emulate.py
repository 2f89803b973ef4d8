"""``speakflow emulate <vendor>``: run a vendor emulator on loopback."""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import trio

from .._patches import wsmask as _wsmask
from .._patches.gc_tuning import tune_for_latency
from ..emulation import EMULATORS, ENGINES
from ..emulation.faults import KINDS, Faults, FaultSpecError

if TYPE_CHECKING:
    from ..emulation.engines import Engine
    from ..emulation.server import EmulatorServer, Vendor

log = logging.getLogger("speakflow.emulation")


def _fault(text: str) -> str:
    try:
        Faults().with_spec(text)
    except FaultSpecError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "emulate",
        help="run a vendor emulator (its real streaming wire protocol) on this machine",
        description="Serve a speech vendor's streaming API on loopback, speaking its real "
        "wire protocol, so clients can be developed and tested offline. Each connection is "
        "logged (query, bytes received, close code).",
    )
    parser.add_argument("vendor", choices=sorted(EMULATORS), help="which vendor to emulate")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free)")
    parser.add_argument(
        "--api-key", default=None, help="the key clients must present (default: test-key)"
    )
    parser.add_argument(
        "--access-key",
        default=None,
        help="aws_transcribe: the access key id URLs must be signed with "
        "(default: test-access-key)",
    )
    parser.add_argument(
        "--secret-key",
        default=None,
        help="aws_transcribe: the secret key URLs must be signed with (default: test-secret-key)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="whisper",
        help="whisper: transcribe with the local Whisper model (default); echo: no model, "
        "each audio frame answers one final with the hex of its first 8 bytes",
    )
    parser.add_argument(
        "--echo-final-every",
        type=_positive_int,
        default=1,
        metavar="N",
        help="echo: answer frames with growing partials and close every N-th as one final "
        "holding all N (default 1: every frame a final)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_fault,
        metavar="SPEC",
        help="inject a fault (repeatable): " + ", ".join(KINDS) + "; e.g. drop-after=5, "
        "refuse=2, stall-after=3, error-after=4, slow=200",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=None,
        metavar="S",
        help="close a connection that received nothing for S seconds (default: the vendor's "
        "limit, Deepgram 10, AWS 15; AssemblyAI none unless the client sets inactivity_timeout)",
    )
    parser.add_argument(
        "--max-session-s",
        type=_positive_float,
        default=None,
        metavar="S",
        help="assemblyai: end a session after S seconds with 3008 (default 10800, as the vendor)",
    )
    parser.add_argument(
        "--realtime-tolerance-s",
        type=_positive_float,
        default=None,
        metavar="S",
        help="assemblyai: close 3007 when the audio received runs more than S seconds ahead "
        "of real time (default 2)",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING")
    parser.set_defaults(func=_cmd_emulate)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_engine(name: str, echo_final_every: int = 1) -> Engine:
    """The engine by name; ``whisper`` reads WHISPER_* like the server does."""
    from ..emulation import create_engine

    if name != "whisper":
        return create_engine(name, echo_final_every=echo_final_every)
    env = os.environ
    return create_engine(
        "whisper",
        model=env.get("WHISPER_MODEL", ""),
        device=env.get("WHISPER_DEVICE", "cpu") or "cpu",
        compute_type=env.get("WHISPER_COMPUTE_TYPE", "int8") or "int8",
        cpu_threads=int(env.get("WHISPER_CPU_THREADS", "0") or 0),
        vad_threshold=float(env.get("WHISPER_VAD_THRESHOLD", "0.5") or 0.5),
        max_batch=int(env.get("WHISPER_MAX_BATCH", "8") or 8),
        window=env.get("WHISPER_WINDOW", "auto") or "auto",
    )


def build_vendor(
    vendor: str,
    engine: Engine,
    *,
    idle_timeout: float | None = None,
    **credentials: str | float | None,
) -> Vendor:
    """The vendor's emulator; ``credentials`` (api_key=, access_key=, ...) and options
    (max_session_s=, ...) left None take the vendor's defaults. One the vendor does not
    take is a ValueError."""
    factory = EMULATORS[vendor]()
    kwargs: dict[str, Any] = {k: v for k, v in credentials.items() if v is not None}
    if idle_timeout is not None:
        kwargs["idle_timeout"] = idle_timeout
    accepted = inspect.signature(factory).parameters
    for name in kwargs:
        if name not in accepted:
            raise ValueError(f"--{name.replace('_', '-')} does not apply to the {vendor} emulator")
    emulator: Vendor = factory(engine, **kwargs)
    return emulator


def _default_credentials(args: argparse.Namespace) -> str:
    """The banner's note on credentials the user did not set (test defaults)."""
    if args.vendor == "aws_transcribe":
        if args.access_key is None and args.secret_key is None:
            return ", access key test-access-key, secret key test-secret-key"
        return ""
    return ", api key test-key" if args.api_key is None else ""


async def _run(server: EmulatorServer, host: str, port: int, note: str) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, host, port)
        # It stands in for a vendor under load tests: its collector pauses and
        # masking cost would be charged to the relay (see _patches/gc_tuning.py and
        # _patches/wsmask.py).
        tune_for_latency()
        _wsmask.install()
        faults = server.faults.describe()
        print(
            f"{server.vendor.name} emulator listening on {server.url}"
            f" ({note}"
            f"{', faults ' + ' '.join(faults) if faults else ''})",
            flush=True,
        )
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


def _cmd_emulate(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # a line per decode
    faults = Faults.parse(args.fault)
    try:
        engine = build_engine(args.engine, args.echo_final_every)
    except Exception as err:  # a missing or broken model: one line, not a trace
        print(f"speakflow emulate: cannot load the {args.engine} engine: {err}", file=sys.stderr)
        return 2
    from ..emulation.server import EmulatorServer

    try:
        vendor = build_vendor(
            args.vendor,
            engine,
            idle_timeout=args.idle_timeout,
            api_key=args.api_key,
            access_key=args.access_key,
            secret_key=args.secret_key,
            max_session_s=args.max_session_s,
            realtime_tolerance_s=args.realtime_tolerance_s,
        )
    except ValueError as err:
        print(f"speakflow emulate: {err}", file=sys.stderr)
        return 2
    server = EmulatorServer(vendor, faults)
    note = f"engine {engine.name}" + _default_credentials(args)
    try:
        trio.run(_run, server, args.host, args.port, note)
    except KeyboardInterrupt:
        pass
    except OSError as err:
        print(
            f"speakflow emulate: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr
        )
        return 2
    return 0
