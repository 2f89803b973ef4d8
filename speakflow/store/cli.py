"""``speakflow transcript SESSION_ID``: a session's merged transcript on stdout.

It asks the server's HTTP API rather than opening the database itself: the
record may be in PostgreSQL on another host, the API applies the same
ownership rule as everywhere else (your user id, or your token's ``sub``),
and a read then sees finals still queued for the database (the API waits for
them). Works against any SpeakFlow server the caller can reach.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from .export import FORMATS

DEFAULT_SERVER = "http://127.0.0.1:8000"


def register(sub: Any) -> None:
    cmd = sub.add_parser(
        "transcript",
        help="print a stored session's merged transcript (json, md, srt, vtt, txt)",
        description="Fetch a session's transcript from a SpeakFlow server's /v1/sessions API: "
        "both sources merged in time order. SESSION_ID is the session_id the client used "
        "(your newest session with it) or the record id from GET /v1/sessions.",
    )
    cmd.add_argument("session_id", metavar="SESSION_ID")
    cmd.add_argument("--format", choices=list(FORMATS), default="md", help="default md")
    cmd.add_argument(
        "--server",
        default=os.environ.get("SPEAKFLOW_SERVER", DEFAULT_SERVER),
        help=f"server base URL (default $SPEAKFLOW_SERVER or {DEFAULT_SERVER})",
    )
    cmd.add_argument(
        "--user-id",
        default=None,
        help="X-User-Id, as the session's client sent it (default: your login name)",
    )
    cmd.add_argument(
        "--token",
        default=os.environ.get("SPEAKFLOW_TOKEN"),
        help="bearer token for AUTH_MODE=jwt servers (default $SPEAKFLOW_TOKEN)",
    )
    cmd.add_argument("-o", "--output", type=Path, default=None, help="write to FILE, not stdout")
    cmd.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import httpx

    headers = {}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    if args.user_id or not args.token:
        headers["X-User-Id"] = args.user_id or getpass.getuser() or "speakflow-cli"
    url = f"{args.server.rstrip('/')}/v1/sessions/{args.session_id}/transcript"
    try:
        r = httpx.get(url, params={"format": args.format}, headers=headers, timeout=30)
    except httpx.HTTPError as err:
        print(
            f"speakflow transcript: cannot reach {args.server} ({type(err).__name__}); "
            "is `speakflow serve` running there? (--server)",
            file=sys.stderr,
        )
        return 2
    if r.status_code != 200:
        try:
            why = r.json().get("message", r.text)
        except ValueError:
            why = r.text[:200]
        print(f"speakflow transcript: HTTP {r.status_code}: {why}", file=sys.stderr)
        return 1
    if args.output is not None:
        args.output.write_text(r.text, encoding="utf-8")
    else:
        sys.stdout.write(r.text if r.text.endswith("\n") else r.text + "\n")
    return 0
