"""bench-whisper's arithmetic: latency per turn, missed and spurious finals, flicker, targets."""

from __future__ import annotations

from speakflow.cli import build_parser
from speakflow.tools.bench_whisper.analysis import StreamRecord, analyse
from speakflow.tools.bench_whisper.corpus import Track, Turn, meeting_tracks, utterance_track
from speakflow.tools.bench_whisper.report import targets


def _msg(text: str, final: bool, start: float, end: float, seg: str) -> dict[str, object]:
    return {
        "type": "transcript",
        "source": "microphone",
        "text": text,
        "is_final": final,
        "start_time": start,
        "end_time": end,
        "segment_id": seg,
    }


def test_analyse_measures_each_turn_from_its_end() -> None:
    track = Track(
        "microphone",
        b"",
        (Turn(0.5, 3.0, "hello there"), Turn(5.0, 7.0, "good bye"), Turn(9.0, 10.0, "lost")),
        (),
    )
    rec = StreamRecord("s", "microphone", track, t0=100.0)
    rec.messages = [
        (101.0, _msg("hello", False, 0.6, 1.5, "0")),
        (101.6, _msg("hello there", False, 0.6, 2.5, "0")),
        (103.6, _msg("Hello there.", True, 0.6, 2.9, "0")),
        (106.0, _msg("good", False, 5.1, 6.0, "1")),
        (106.5, _msg("bad", False, 5.1, 6.5, "1")),  # revises "good": flicker
        (107.9, _msg("Good bye.", True, 5.1, 6.9, "1")),
        (108.5, _msg("Thank you.", True, 7.6, 8.2, "2")),  # covers no turn: spurious
    ]
    res = analyse(rec)
    assert [round(x, 2) for _, x in res["latencies"]] == [0.6, 0.9]
    assert res["missed"] == 1 and res["spurious"] == 1
    assert res["flicker"] == 1
    assert res["repeated_finals"] == 0
    assert res["words"] == 5  # "hello there good bye lost"
    assert res["errors"] == 2  # "lost" -> "thank", "you" inserted
    assert [round(x, 2) for x in res["first_partial"]] == [0.5, 1.0]


def test_targets_use_all_rounds_words_and_the_issue_bounds() -> None:
    def rnd(streams: int, sessions: int, errors: int, p50: float, p95: float) -> dict:
        return {
            "streams": streams,
            "sessions": sessions,
            "admitted_streams": streams,
            "wer": errors / 100,
            "errors": errors,
            "offline": {"wer": 0.05, "errors": 5, "words": 100},
            "final_latency_s": {"p50": p50, "p95": p95},
            "missed_turns": 0,
            "latency_first_half_p50": p50,
            "latency_second_half_p50": p50,
        }

    report = {"rounds": [rnd(2, 1, 6, 0.6, 1.0), rnd(8, 4, 5, 0.7, 1.8)]}
    t = targets(report)
    assert t["wer_ratio"] == 1.1 and t["wer_within_1.15x"]
    assert t["one_dual_session_ok"] and t["8_streams_ok"]
    assert not t["one_dual_session_tiny_en_latency"]  # p50 0.6 > 0.5
    report["rounds"][0]["final_latency_s"]["p50"] = 0.5
    assert targets(report)["one_dual_session_tiny_en_latency"]
    report["rounds"][1]["final_latency_s"]["p95"] = 2.5
    assert not targets(report)["8_streams_ok"]


def test_the_command_is_registered() -> None:
    args = build_parser().parse_args(["bench-whisper", "--streams", "1-3,8", "--no-offline"])
    assert args.streams == [1, 2, 3, 8] and args.no_offline and args.workload == "meeting"


def test_the_spanish_corpus_is_the_spanish_meeting_and_sentences(audio_dir, manifest) -> None:
    tracks = meeting_tracks(audio_dir, manifest, "es")
    meeting = manifest["meetings_es"][0]
    assert {name: t.files[0][0] for name, t in tracks.items()} == meeting["files"]
    assert [t.text for t in tracks["system"].turns] == [
        t["text"] for t in meeting["turns"] if t["source"] == "system"
    ]
    sentences = utterance_track(audio_dir, manifest, "es")
    assert [f for f, _, _ in sentences.files] == [u["file"] for u in manifest["utterances_es"]]
    args = build_parser().parse_args(["bench-whisper", "--corpus", "es"])
    assert args.corpus == "es" and args.language is None  # no language: as the desktop
