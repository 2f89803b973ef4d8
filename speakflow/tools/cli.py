"""``speakflow stream`` and ``speakflow bench``: options only; the work is elsewhere."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import bench_cluster


def _at_least(
    cast: Callable[[str], float], low: float, *, strict: bool = False, note: str = ""
) -> Callable[[str], Any]:
    """An argparse type: ``cast(text)``, which must be >= ``low`` (> with ``strict``)."""

    def parse(text: str) -> Any:
        value = cast(text)
        if not (value > low if strict else value >= low):  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low:g}{note}")
        return value

    parse.__name__ = cast.__name__  # argparse's "invalid int value" message names it
    return parse


_speed = _at_least(float, 0, note=" (0: as fast as possible)")
_positive_int = _at_least(int, 1)
_positive_float = _at_least(float, 0, strict=True)
_non_negative_float = _at_least(float, 0)


def register(sub: Any) -> None:
    from .stream import DEFAULT_URL

    stream = sub.add_parser(
        "stream",
        help="stream WAV files to a server like SpeakFlow Desktop and show the transcripts",
        description="Stream one WAV per source to a SpeakFlow server (protocol.md), showing "
        "partials and finals live and a summary at the end. WAV files of any rate and "
        "channel count are converted to 16 kHz mono PCM16.",
    )
    stream.add_argument("--mic", type=Path, metavar="WAV", help="audio of the microphone source")
    stream.add_argument(
        "--sample",
        choices=("en", "es"),
        help="stream a short clip shipped with SpeakFlow as the microphone (instead of --mic)",
    )
    stream.add_argument(
        "--system", type=Path, metavar="WAV", help="audio of the system source (optional)"
    )
    stream.add_argument(
        "--url", default=DEFAULT_URL, help=f"stream endpoint (default {DEFAULT_URL})"
    )
    stream.add_argument(
        "--user-id", default=None, help="X-User-Id header and user_id (default: your login name)"
    )
    stream.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        help="pace: 1 real time (default), N times real time, 0 as fast as possible",
    )
    stream.add_argument(
        "--json",
        action="store_true",
        help="print every server message as one JSON object per line, then a summary object",
    )
    stream.add_argument("--session-id", default="", help="session id (default: a new UUID)")
    stream.add_argument("--language", default=None, help="language extension, e.g. en, es")
    stream.add_argument("--token", default=None, help="send Authorization: Bearer TOKEN")
    stream.add_argument(
        "--reconnect",
        type=int,
        default=0,
        metavar="N",
        help="if the connection drops, resume the session up to N times, replaying "
        "unacknowledged audio (default 0)",
    )
    stream.add_argument(
        "--no-deflate",
        action="store_true",
        help="do not offer permessage-deflate (the desktop offers it)",
    )
    stream.set_defaults(func=_cmd_stream)

    bench = sub.add_parser(
        "bench",
        help="load test: many dual-source desktop clients, round trips, server CPU and memory",
        description="Simulate N desktop clients streaming two sources at real time and measure "
        "every chunk's round trip through the server and a Deepgram emulator in echo mode. "
        "With no --url, starts the emulator and a server as separate processes and reports "
        "their CPU and memory.",
    )
    bench.add_argument(
        "--sessions",
        type=_positive_int,
        default=10,
        help="concurrent sessions (start value with --find-capacity; default 10)",
    )
    bench.add_argument(
        "--duration",
        type=_positive_float,
        default=30.0,
        help="seconds of streaming per round (default 30)",
    )
    bench.add_argument(
        "--url",
        default=None,
        help="an already running server (its provider must echo, e.g. deepgram "
        "against `speakflow emulate deepgram --engine echo`); default: start one",
    )
    bench.add_argument(
        "--server-pid",
        type=int,
        default=None,
        help="with --url: the server's pid, to report its CPU and memory",
    )
    bench.add_argument(
        "--ramp",
        type=_non_negative_float,
        default=None,
        help="seconds over which sessions connect (default N/100, at least 1)",
    )
    bench.add_argument(
        "--warmup",
        type=_non_negative_float,
        default=2.0,
        help="seconds of streaming left out of the round-trip percentiles (default 2)",
    )
    bench.add_argument("--json", action="store_true", help="print the report as one JSON object")
    bench.add_argument(
        "--find-capacity",
        action="store_true",
        help="raise the session count until p99 passes --bound-ms or a chunk is "
        "lost; report the last count that held",
    )
    bench.add_argument(
        "--bound-ms",
        type=_positive_float,
        default=50.0,
        help="p99 round-trip bound in ms (default 50)",
    )
    bench.add_argument(
        "--max-sessions",
        type=_positive_int,
        default=2000,
        help="upper limit for --find-capacity (default 2000)",
    )
    bench.add_argument(
        "--no-deflate",
        action="store_true",
        help="do not offer permessage-deflate (the desktop offers it)",
    )
    bench.add_argument(
        "--audio-dir",
        type=Path,
        default=None,
        help="folder with meeting_a_microphone.wav / meeting_a_system.wav "
        "(default: shared/audio beside the repo; synthetic speech if absent)",
    )
    bench.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra setting for the server it starts (repeatable)",
    )
    bench.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="FILE",
        help="record the server with py-spy during the measured window: "
        "FILE.svg flame graph, FILE.json speedscope, else collapsed stacks",
    )
    bench.add_argument(  # store: issue 19's measurement
        "--compare-store",
        action="store_true",
        help="two rounds on fresh servers: TRANSCRIPT_STORE=off, then SQLite; CPU per "
        "session and round trip side by side",
    )
    bench.add_argument(
        "--final-every",
        type=int,
        default=1,
        metavar="N",
        help="the emulator closes an utterance every N chunks per source: chunks come back "
        "as growing partials, then one final (default 1: every chunk a final, the "
        "per-final costs' worst case; 6 is speech's cadence, a final every 3 s)",
    )
    bench.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the server and emulator logs (kept anyway on failure)",
    )
    bench_cluster.add_arguments(bench)  # scale-out: --workers, --compare-workers
    bench.set_defaults(func=_cmd_bench)


def _cmd_stream(args: argparse.Namespace) -> int:
    from ..samples import SAMPLES
    from .stream import StreamOptions, default_user_id, run_stream

    if (args.mic is None) == (args.sample is None):
        raise SystemExit("speakflow stream: give one of --mic WAV or --sample en|es")
    opts = StreamOptions(
        mic=args.mic if args.mic is not None else SAMPLES[args.sample],
        system=args.system,
        url=args.url,
        user_id=args.user_id or default_user_id(),
        speed=args.speed,
        json=args.json,
        session_id=args.session_id,
        language=args.language,
        token=args.token,
        deflate=not args.no_deflate,
        reconnect=args.reconnect,
    )
    return run_stream(opts)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .args import key_values
    from .bench import run_bench
    from .bench_traffic import BenchOptions

    try:
        env = key_values(args.server_env, "--server-env")
    except ValueError as err:
        raise SystemExit(f"speakflow bench: {err}") from None
    if args.final_every < 1:
        raise SystemExit("speakflow bench: --final-every must be at least 1")
    opts = BenchOptions(
        sessions=args.sessions,
        duration=args.duration,
        url=args.url,
        ramp=args.ramp,
        json=args.json,
        find_capacity=args.find_capacity,
        bound_ms=args.bound_ms,
        max_sessions=args.max_sessions,
        deflate=not args.no_deflate,
        warmup=args.warmup,
        server_pid=args.server_pid,
        audio_dir=args.audio_dir,
        server_env=env,
        profile=args.profile,
        keep_logs=args.keep_logs,
        final_every=args.final_every,
        compare_store=args.compare_store,
        **bench_cluster.options(args),
    )
    return run_bench(opts)
