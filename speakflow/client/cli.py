"""``speakflow stream`` and ``speakflow bench``: options only; the work is elsewhere."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _speed(text: str) -> float:
    value = float(text)
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError("speed must be >= 0 (0: as fast as possible)")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def register(sub: Any) -> None:
    from .stream import DEFAULT_URL

    stream = sub.add_parser(
        "stream",
        help="stream WAV files to a server like SpeakFlow Desktop and show the transcripts",
        description="Stream one WAV per source to a SpeakFlow server (protocol.md), showing "
        "partials and finals live and a summary at the end. WAV files of any rate and "
        "channel count are converted to 16 kHz mono PCM16.",
    )
    stream.add_argument("--mic", required=True, type=Path, metavar="WAV",
                        help="audio of the microphone source")
    stream.add_argument("--system", type=Path, metavar="WAV",
                        help="audio of the system source (optional)")
    stream.add_argument("--url", default=DEFAULT_URL, help=f"stream endpoint (default {DEFAULT_URL})")
    stream.add_argument("--user-id", default=None,
                        help="X-User-Id header and user_id (default: your login name)")
    stream.add_argument("--speed", type=_speed, default=1.0,
                        help="pace: 1 real time (default), N times real time, 0 as fast as possible")
    stream.add_argument("--json", action="store_true",
                        help="print every server message as one JSON object per line, then a "
                        "summary object")
    stream.add_argument("--session-id", default="", help="session id (default: a new UUID)")
    stream.add_argument("--language", default=None, help="language extension, e.g. en, es")
    stream.add_argument("--token", default=None, help="send Authorization: Bearer TOKEN")
    stream.add_argument("--no-deflate", action="store_true",
                        help="do not offer permessage-deflate (the desktop offers it)")
    stream.set_defaults(func=_cmd_stream)


def _cmd_stream(args: argparse.Namespace) -> int:
    from .stream import StreamOptions, default_user_id, run_stream

    opts = StreamOptions(
        mic=args.mic,
        system=args.system,
        url=args.url,
        user_id=args.user_id or default_user_id(),
        speed=args.speed,
        json=args.json,
        session_id=args.session_id,
        language=args.language,
        token=args.token,
        deflate=not args.no_deflate,
    )
    return run_stream(opts)
