"""``speakflow compare``: the same audio through several providers, side by side.

Every provider is reached *through the server*, exactly as a client would
(``start_session.provider``), so the figures include the relay and the
numbers are comparable. Without ``--url`` a server is started in this process
with provider overrides allowed; the vendors' settings (keys, URLs, e.g. an
emulator's) come from the environment as for ``serve``.

Reported per provider: WER against the manifest's references (normalised as
``speakflow.wer`` does), time to first partial, final latency p50/p95 (from
sending the chunk that holds the end of a final's text to receiving the
final), vendor reconnects (from the server's /metrics), and a cost estimate
where a price per audio minute is given. Output: a terminal table, a JSON
report, and an HTML page with a chart.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from ..wer import edit_distance, normalize
from .compare_report import FileResult, ProviderResult, report_html, report_json, table
from .display import Display
from .stream import StreamClient, StreamOptions

DEFAULT_AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"


def corpus(audio_dir: Path, include_meeting: bool = True) -> list[tuple[str, str | None, str]]:
    """(mic file, system file or None, reference text) from the manifest."""
    manifest = json.loads((audio_dir / "manifest.json").read_text())
    items: list[tuple[str, str | None, str]] = [
        (u["file"], None, u["text"]) for u in manifest.get("utterances", [])
    ]
    if include_meeting:
        for meeting in manifest.get("meetings", []):
            text = " ".join(t["text"] for t in meeting["turns"])
            items.append((meeting["files"]["microphone"], meeting["files"]["system"], text))
    return items


async def _reconnects(base_http: str) -> dict[str, float]:
    """speakflow_vendor_reconnects_total per provider, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient() as http:
        text = (await http.get(base_http + "/metrics")).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "speakflow_vendor_reconnects_total":
                out[s.labels["provider"]] = s.value
    return out


async def compare(
    url: str,
    providers: Sequence[str],
    audio_dir: Path,
    *,
    speed: float = 1.0,
    prices: dict[str, float] | None = None,
    limit: int | None = None,
    include_meeting: bool = True,
    progress: io.TextIOBase | None = None,
) -> list[ProviderResult]:
    base_http = url.replace("ws", "http", 1).split("/v1/")[0]
    items = corpus(audio_dir, include_meeting)[:limit]
    results = []
    for provider in providers:
        result = ProviderResult(provider, price_per_min=(prices or {}).get(provider))
        before = (await _reconnects(base_http)).get(provider, 0.0)
        for mic, system, reference in items:
            opts = StreamOptions(
                mic=audio_dir / mic,
                system=audio_dir / system if system else None,
                url=url,
                user_id="speakflow-compare",
                speed=speed,
                provider=provider,
            )
            client = StreamClient(opts, Display(True, out=io.StringIO(), err=io.StringIO()))
            client.load()
            await client.run()
            if client.provider not in (None, provider):
                raise SystemExit(
                    f"speakflow compare: the server used {client.provider!r} for {provider!r}; "
                    "start it with ALLOW_PROVIDER_OVERRIDE=true"
                )
            finals = sorted(
                (f for s in client.sources.values() for f in s.finals),
                key=lambda f: (f.get("start_time", 0.0), f.get("source", "")),
            )
            hypothesis = " ".join(f.get("text", "") for f in finals)
            ref_words = normalize(reference)
            result.files.append(
                FileResult(
                    file=mic if system is None else f"{mic}+{system}",
                    reference=reference,
                    hypothesis=hypothesis,
                    errors=edit_distance(ref_words, normalize(hypothesis)),
                    words=len(ref_words),
                    first_partial_s=min(
                        (
                            s.first_partial_s
                            for s in client.sources.values()
                            if s.first_partial_s is not None
                        ),
                        default=None,
                    ),
                    final_latency_s=[x for s in client.sources.values() for x in s.latencies],
                    server_errors=[f"{e.get('code')}: {e.get('message')}" for e in client.errors],
                )
            )
            result.audio_s += sum(s.audio_s for s in client.sources.values())
            if progress is not None:
                progress.write(f"{provider}: {mic} done\n")
        result.reconnects = (await _reconnects(base_http)).get(provider, 0.0) - before
        results.append(result)
    return results


async def _with_local_server(args: argparse.Namespace) -> list[ProviderResult]:
    from ..config import load_settings
    from ..hosting import running_app

    env = dict(os.environ)
    env["ALLOW_PROVIDER_OVERRIDE"] = "true"
    env.setdefault("LOG_LEVEL", "WARNING")
    settings = load_settings(environ=env, env_file=args.env_file)
    async with running_app(settings) as (_, base):
        return await _run(args, base.replace("http", "ws", 1) + "/v1/stt/stream")


async def _run(args: argparse.Namespace, url: str) -> list[ProviderResult]:
    return await compare(
        url,
        args.providers,
        args.audio,
        speed=args.speed,
        prices=args.price,
        limit=args.limit,
        include_meeting=not args.no_meeting,
        progress=sys.stderr if not args.quiet else None,  # type: ignore[arg-type]
    )


def _cmd(args: argparse.Namespace) -> int:
    if not (args.audio / "manifest.json").is_file():
        print(f"speakflow compare: no manifest.json in {args.audio}", file=sys.stderr)
        return 2
    run = partial(_run, args, args.url) if args.url else partial(_with_local_server, args)
    results = trio.run(run)
    print(table(results))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(report_json(results), indent=2))
    (out / "compare.html").write_text(report_html(results))
    print(f"\nreport: {out / 'compare.json'}, {out / 'compare.html'}")
    return 0


def _providers(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one provider")
    return names


def _prices(text: str) -> dict[str, float]:
    out = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected provider=price_per_minute, got {item!r}"
            ) from None
    return out


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="stream the same audio through several providers and compare WER, latency, cost",
    )
    p.add_argument(
        "--providers",
        type=_providers,
        required=True,
        help="comma-separated, e.g. deepgram,assemblyai,aws_transcribe,whisper_local",
    )
    p.add_argument(
        "--audio",
        type=Path,
        default=DEFAULT_AUDIO,
        help="a corpus folder with manifest.json (default: ../shared/audio)",
    )
    p.add_argument(
        "--url",
        default=None,
        help="a running server (must allow overrides); default: start one here",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="1.0 = real time (latency figures mean most then); 0 = as fast as possible",
    )
    p.add_argument(
        "--price",
        type=_prices,
        default={},
        help="USD per audio minute, e.g. deepgram=0.0077,assemblyai=0.0025",
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N files")
    p.add_argument("--no-meeting", action="store_true", help="skip the two-track meeting")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("compare-report"),
        help="folder for compare.json and compare.html",
    )
    p.add_argument("--env-file", default=".env")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd)
