"""What ``speakflow compare`` found per provider, and its three outputs: table, JSON, HTML."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..stats import percentile


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
