"""``speakflow bench-whisper``: its options, the server it starts, the rounds in turn."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from .. import procs
from ..args import key_values
from ..ws import split_url
from .baseline import offline_score, offline_texts
from .corpus import CORPORA, find_audio_dir, meeting_tracks, utterance_track
from .report import format_round, format_targets, targets
from .rounds import run_round


@dataclass
class Options:
    streams: list[int]
    workload: str = "meeting"
    repeat: int = 1
    stagger: float = 1.3
    url: str | None = None
    server_pid: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    offline: bool = True
    json: bool = False
    audio_dir: Path | None = None
    language: str | None = None
    corpus: str = "en"


async def bench(opts: Options, out: Any = sys.stdout) -> dict[str, Any]:
    audio_dir = find_audio_dir(opts.audio_dir)
    manifest = json.loads((audio_dir / "manifest.json").read_text())
    if opts.workload == "meeting":
        by_source = meeting_tracks(audio_dir, manifest, opts.corpus)
        tracks = [by_source["microphone"], by_source["system"]]
    else:
        tracks = [utterance_track(audio_dir, manifest, opts.corpus)]
    tracks = [t.repeated(opts.repeat) for t in tracks]
    report: dict[str, Any] = {
        "workload": opts.workload,
        "corpus": opts.corpus,
        "repeat": opts.repeat,
        "env": opts.env,
    }

    def say(text: str) -> None:
        if not opts.json:
            print(text, file=out, flush=True)

    offline: dict[str, Any] | None = None
    if opts.offline:
        say("offline baseline: transcribing each file whole ...")
        offline = await trio.to_thread.run_sync(
            offline_texts, audio_dir, tracks, opts.env, opts.language
        )
        report["offline"] = {
            **offline_score(tracks, offline["texts"]),
            "rtf": offline["rtf"],
            "texts": offline["texts"],
        }
        say(
            f"offline WER {report['offline']['wer']:.4f} "
            f"({report['offline']['errors']}/{report['offline']['words']} words), "
            f"RTF {report['offline']['rtf']:.3f}"
        )

    server: procs.Managed | None = None
    tmp = Path(tempfile.mkdtemp(prefix="speakflow-bench-whisper-"))
    try:
        if opts.url:
            url = opts.url
            host, port, _, _ = split_url(url)
            pid = opts.server_pid
        else:
            host, port = "127.0.0.1", procs.free_port()
            env = {
                **os.environ,
                "LOG_LEVEL": "WARNING",
                "MAX_SESSIONS_PER_USER": "0",
                "MAX_SESSIONS": "0",
                "SPEECH_PROVIDER": "whisper_local",
                **opts.env,
            }
            server = procs.Managed(
                "server",
                procs.python_module_argv(
                    "serve", "--host", host, "--port", str(port), "--env-file", os.devnull
                ),
                env,
                tmp / "server.log",
            )
            say(f"starting server (pid {server.pid}) ...")
            with trio.fail_after(300):
                await procs.wait_http_ok(host, port, "/v1/health", server)
            url = f"ws://{host}:{port}/v1/stt/stream"
            pid = server.pid
        report["rounds"] = []
        for n in opts.streams:
            say(f"round: {n} stream(s), {opts.workload} ...")
            res = await run_round(
                url, host, port, pid, tracks, n, opts.workload, opts.stagger, opts.language
            )
            if offline is not None:
                res.summary["offline"] = offline_score(res.tracks, offline["texts"])
            report["rounds"].append(res.summary)
            say(format_round(res.summary))
            await trio.sleep(2.0)  # let the model's queue drain between rounds
            if server is not None:
                server.check()
    finally:
        if server is not None:
            server.stop()
            say(f"server log: {server.log}")
    report["targets"] = targets(report)
    if opts.json:
        print(json.dumps(report, indent=2, default=str), file=out)
    else:
        say(format_targets(report["targets"]))
    return report


def _streams(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    if not out or min(out) < 1:
        raise ValueError("stream counts must be >= 1")
    return out


def _cmd(args: Any) -> int:
    try:
        env = key_values(args.env or [], "--env")
    except ValueError as err:
        print(f"bench-whisper: {err}", file=sys.stderr)
        return 2
    opts = Options(
        streams=args.streams,
        workload=args.workload,
        repeat=args.repeat,
        stagger=args.stagger,
        url=args.url,
        server_pid=args.server_pid,
        env=env,
        offline=not args.no_offline,
        json=args.json,
        audio_dir=args.audio_dir,
        language=args.language,
        corpus=args.corpus,
    )
    report = trio.run(bench, opts)
    ok = all(
        v for k, v in report["targets"].items() if k.endswith("ok") or k.startswith("wer_within")
    )
    return 0 if ok or not args.check else 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench-whisper",
        help="stream the speech corpus through whisper_local at real time: WER, latency, capacity",
        description="``speakflow bench-whisper``: local Whisper's streaming quality, latency and "
        "capacity.",
    )
    p.add_argument(
        "--streams",
        type=_streams,
        default=[1, 2, 4, 8],
        help="concurrent stream counts, one round each: 1,2,4,8 (default) or 1-8",
    )
    p.add_argument(
        "--workload",
        choices=("meeting", "utterances"),
        default="meeting",
        help="meeting: the two-track meeting, 2 streams per session (default); "
        "utterances: one session per stream playing the corpus sentences",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="play each stream's audio this many times in a row (default 2)",
    )
    p.add_argument(
        "--stagger", type=float, default=1.3, help="seconds between session starts (default 1.3)"
    )
    p.add_argument(
        "--url",
        default=None,
        help="bench a running server (ws://host:port/v1/stt/stream) instead of "
        "starting one; give --server-pid for its CPU",
    )
    p.add_argument("--server-pid", type=int, default=None)
    p.add_argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="setting for the started server and the offline baseline "
        "(repeatable), e.g. --env WHISPER_ENDPOINT_MS=300",
    )
    p.add_argument(
        "--corpus",
        choices=tuple(CORPORA),
        default="en",
        help="en: meeting_a and the English sentences (default); es: meeting_es_a and "
        "the Spanish sentences (a multilingual WHISPER_MODEL)",
    )
    p.add_argument(
        "--language",
        default=None,
        help="start_session language (e.g. es); default none, as the desktop sends",
    )
    p.add_argument("--audio-dir", type=Path, default=None, help="the corpus (shared/audio)")
    p.add_argument("--no-offline", action="store_true", help="skip the offline baseline")
    p.add_argument("--json", action="store_true", help="print one JSON report")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.set_defaults(func=_cmd)
