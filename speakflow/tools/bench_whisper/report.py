"""bench-whisper's output: a round in a few lines, and the issue's targets checked."""

from __future__ import annotations

from typing import Any


def _f(x: float | None, unit: str = "", digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}{unit}"


def format_round(s: dict[str, Any]) -> str:
    lat = s["final_latency_s"]
    offline = s.get("offline")
    ratio = (
        s["wer"] / offline["wer"] if offline and s["wer"] is not None and offline["wer"] else None
    )
    lines = [
        f"  streams {s['streams']} ({s['sessions']} sessions, {s['admitted_streams']} admitted)"
        + (f", refused: {s['refused'][0]}" if s["refused"] else ""),
        f"  WER {_f(s['wer'], '', 4)} ({s['errors']}/{s['words']})"
        + (
            f", offline {offline['wer']:.4f} ({offline['errors']}/{offline['words']})"
            if offline
            else ""
        )
        + (f" = {ratio:.2f}x offline" if ratio is not None else ""),
        f"  final latency p50 {_f(lat['p50'], ' s')} p95 {_f(lat['p95'], ' s')} "
        f"max {_f(lat['max'], ' s')} over {lat['n']} turns; missed {s['missed_turns']}, "
        f"spurious {s['spurious_finals']}, repeated {s['repeated_finals']}; "
        f"p50 1st half {_f(s['latency_first_half_p50'], ' s')} / 2nd half "
        f"{_f(s['latency_second_half_p50'], ' s')}",
        f"  partials: {_f(s['partials_per_turn'], '', 1)} per turn, first after "
        f"{_f(s['first_partial_s']['p50'], ' s')} (p50), interval p50 "
        f"{_f(s['partial_interval_s']['p50'], ' s')}, flicker {s['flicker']}, "
        f"dropped as stale {s['partials_dropped']:.0f}",
        f"  model RTF {_f(s['model_rtf'], '', 3)}, batches {s['batches']:.0f} "
        f"(mean {_f(s['mean_batch'], '', 2)}), fallbacks {s['fallback_decodes']:.0f}, "
        f"loops cut {s['loops_cut']:.0f}, "
        f"max queue {s['max_queue']:.0f}, max final wait {_f(s['max_final_wait_s'], ' s')}, "
        f"capacity estimate {_f(s['capacity_streams'], '', 0)} streams",
        "  languages: "
        + ", ".join(f"{t['source']} {'/'.join(t['languages'])}" for t in s["texts"]),
        f"  CPU: server {_f(s['server_cpu_pct'], '%', 0)} of a core "
        f"({_f(s['server_cpu_per_audio_s'], ' s', 3)} per audio s), machine "
        f"{_f(s['machine_cpu_pct'], '%', 0)}, bench client {_f(s['bench_cpu_pct'], '%', 0)}",
    ]
    if s["errors_seen"]:
        lines.append(f"  errors: {s['errors_seen']}")
    return "\n".join(lines)


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, checked against what this run measured."""
    out: dict[str, Any] = {}
    rounds = report.get("rounds", [])
    ratios = [
        r["wer"] / r["offline"]["wer"]
        for r in rounds
        if r.get("offline") and r["offline"]["wer"] and r["wer"] is not None
    ]
    if ratios:
        # every round's words together: a single round of the small corpus moves
        # by a whole percent per word
        streamed = sum(r["errors"] for r in rounds if r.get("offline"))
        offline = sum(r["offline"]["errors"] for r in rounds if r.get("offline"))
        out["wer_ratio_worst_round"] = max(ratios)
        out["wer_ratio"] = streamed / offline if offline else None
        out["wer_within_1.15x"] = offline > 0 and streamed <= 1.15 * offline
    two = [r for r in rounds if r["streams"] == 2 and r["sessions"] == 1]
    if two:
        lat = two[0]["final_latency_s"]
        out["one_dual_session_p50_s"] = lat["p50"]
        out["one_dual_session_p95_s"] = lat["p95"]
        out["one_dual_session_ok"] = (
            lat["p50"] is not None and lat["p50"] <= 0.8 and lat["p95"] <= 1.5
        )
        # the English path's latency on tiny.en, which every shipped model should keep
        out["one_dual_session_tiny_en_latency"] = (
            lat["p50"] is not None and lat["p50"] <= 0.5 and lat["p95"] <= 1.0
        )
    eight = [r for r in rounds if r["streams"] >= 8]
    if eight:
        r = eight[-1]
        lat = r["final_latency_s"]
        growing = (
            r["latency_second_half_p50"] is not None
            and r["latency_first_half_p50"] is not None
            and r["latency_second_half_p50"] > r["latency_first_half_p50"] + 0.5
        )
        out[f"{r['streams']}_streams_p95_s"] = lat["p95"]
        out[f"{r['streams']}_streams_ok"] = (
            r["admitted_streams"] == r["streams"]
            and lat["p95"] is not None
            and lat["p95"] <= 2.0
            and r["missed_turns"] == 0
            and not growing
        )
    return out


def format_targets(t: dict[str, Any]) -> str:
    return "targets: " + ", ".join(
        f"{k}={_f(v, '', 3) if isinstance(v, float) else v}" for k, v in t.items()
    )
