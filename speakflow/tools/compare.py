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
import html
import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from ..stats import percentile
from ..wer import edit_distance, normalize
from .stream import Display, StreamClient, StreamOptions

DEFAULT_AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"


@dataclass
class FileResult:
    file: str
    reference: str
    hypothesis: str
    errors: int
    words: int
    first_partial_s: float | None
    final_latency_s: list[float]
    server_errors: list[str]


@dataclass
class ProviderResult:
    provider: str
    files: list[FileResult] = field(default_factory=list)
    audio_s: float = 0.0
    reconnects: float = 0.0
    price_per_min: float | None = None

    @property
    def wer(self) -> float:
        words = sum(f.words for f in self.files)
        return sum(f.errors for f in self.files) / words if words else 0.0

    def latencies(self) -> list[float]:
        return sorted(x for f in self.files for x in f.final_latency_s)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies()
        firsts = sorted(f.first_partial_s for f in self.files if f.first_partial_s is not None)
        cost = None
        if self.price_per_min is not None:
            cost = round(self.audio_s / 60 * self.price_per_min, 4)
        return {
            "provider": self.provider,
            "wer": round(self.wer, 4),
            "files": len(self.files),
            "audio_s": round(self.audio_s, 2),
            "first_partial_p50_s": _pct(firsts, 50),
            "final_latency_p50_s": _pct(lat, 50),
            "final_latency_p95_s": _pct(lat, 95),
            "finals": len(lat),
            "reconnects": self.reconnects,
            "errors": sum(len(f.server_errors) for f in self.files),
            "cost_estimate": cost,
            "price_per_min": self.price_per_min,
        }


def _pct(values: Sequence[float], q: float) -> float | None:
    value = percentile(values, q)
    return None if value is None else round(value, 3)


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


def table(results: Sequence[ProviderResult]) -> str:
    head = (
        "provider",
        "WER",
        "1st partial p50",
        "final p50",
        "final p95",
        "reconn",
        "errors",
        "cost",
    )
    rows = [head]
    for r in results:
        s = r.summary()
        rows.append(
            (
                s["provider"],
                f"{s['wer'] * 100:.1f}%",
                _fmt_s(s["first_partial_p50_s"]),
                _fmt_s(s["final_latency_p50_s"]),
                _fmt_s(s["final_latency_p95_s"]),
                f"{s['reconnects']:g}",
                str(s["errors"]),
                "-" if s["cost_estimate"] is None else f"${s['cost_estimate']:.4f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def report_json(results: Sequence[ProviderResult]) -> dict[str, Any]:
    return {
        "providers": [r.summary() for r in results],
        "files": {r.provider: [asdict(f) for f in r.files] for r in results},
    }


def report_html(results: Sequence[ProviderResult]) -> str:
    """A page with grouped bars (WER, final latency p50/p95) as inline SVG: no scripts."""
    summaries = [r.summary() for r in results]
    charts = [
        ("Word error rate", "wer", 100.0, "%"),
        ("Final latency p50", "final_latency_p50_s", 1.0, " s"),
        ("Final latency p95", "final_latency_p95_s", 1.0, " s"),
        ("Time to first partial p50", "first_partial_p50_s", 1.0, " s"),
    ]
    colors = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#64748b"]
    svgs = []
    for title, key, scale, unit in charts:
        values = [(s["provider"], (s[key] or 0.0) * scale) for s in summaries]
        top = max((v for _, v in values), default=0.0) or 1.0
        bar_h, gap, label_w, width = 26, 10, 140, 560
        height = len(values) * (bar_h + gap) + 30
        parts = [
            f'<svg width="{width + label_w + 80}" height="{height}" role="img" '
            f'aria-label="{html.escape(title)}">',
            f'<text x="0" y="16" font-weight="bold">{html.escape(title)}</text>',
        ]
        for i, (name, v) in enumerate(values):
            y = 26 + i * (bar_h + gap)
            w = max(1.0, width * v / top)
            parts.append(f'<text x="0" y="{y + 18}">{html.escape(name)}</text>')
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                f'fill="{colors[i % len(colors)]}"/>'
            )
            parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 18}">{v:.2f}{unit}</text>')
        parts.append("</svg>")
        svgs.append("\n".join(parts))
    header = "".join(
        f"<th>{h}</th>"
        for h in (
            "provider",
            "WER",
            "first partial p50",
            "final p50",
            "final p95",
            "reconnects",
            "errors",
            "cost",
        )
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (
                s["provider"],
                f"{s['wer'] * 100:.1f}%",
                _fmt_s(s["first_partial_p50_s"]),
                _fmt_s(s["final_latency_p50_s"]),
                _fmt_s(s["final_latency_p95_s"]),
                f"{s['reconnects']:g}",
                s["errors"],
                "-" if s["cost_estimate"] is None else f"${s['cost_estimate']:.4f}",
            )
        )
        + "</tr>"
        for s in summaries
    )
    detail = "".join(
        f"<h3>{html.escape(r.provider)}</h3><table><tr><th>file</th><th>WER</th>"
        f"<th>reference</th><th>hypothesis</th></tr>"
        + "".join(
            f"<tr><td>{html.escape(f.file)}</td>"
            f"<td>{(f.errors / f.words * 100 if f.words else 0):.0f}%</td>"
            f"<td>{html.escape(f.reference)}</td><td>{html.escape(f.hypothesis)}</td></tr>"
            for f in r.files
        )
        + "</table>"
        for r in results
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>SpeakFlow provider comparison</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;
text-align:left;vertical-align:top}}svg{{display:block;margin:1.5rem 0;font-size:14px}}</style>
</head><body><h1>Provider comparison</h1>
<p>The same audio streamed through the SpeakFlow server to each provider. WER after
lower-casing and stripping punctuation; latency from sending the chunk that holds the end of
a final's text to receiving the final.</p>
<table><tr>{header}</tr>{body}</table>
{"".join(svgs)}
<h2>Per file</h2>{detail}
</body></html>
"""


async def _with_local_server(args: argparse.Namespace) -> list[ProviderResult]:
    from ..cli import running_app
    from ..config import load_settings

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
