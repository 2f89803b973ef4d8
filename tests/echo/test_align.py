"""The pure alignment of microphone and system audio, driven with literal chunks and times."""

from __future__ import annotations

from array import array

import pytest

from speakflow import protocol as p
from speakflow.echo import Aligner, mode
from speakflow.echo._align import FAR_KEEP_MS

T0 = 1_717_000_000_000  # client ms


def pcm(first: int, samples: int) -> bytes:
    """Samples first, first + 1, ...: each sample says which client sample it is."""
    return array("h", [(first + i) % 30000 for i in range(samples)]).tobytes()


def ms(n: int) -> int:
    return n * 16


def test_microphone_waits_for_the_system_audio_of_the_same_moment() -> None:
    a = Aligner(hold_s=0.3, expect_far=True)
    a.near(pcm(0, ms(500)), offset=0, timestamp_ms=T0, now=10.0)
    assert a.ready(10.0) == []  # system audio of that time not in yet
    assert a.next_deadline() == pytest.approx(10.3)
    a.far(pcm(1000, ms(500)), timestamp_ms=T0, now=10.02)
    [out] = a.ready(10.02)
    assert out.offset == 0 and out.near == pcm(0, ms(500))
    assert out.reference == pcm(1000, ms(500))  # the system chunk, sample for sample
    assert out.referenced == ms(500)
    assert out.waited_s == pytest.approx(0.02)
    assert a.next_deadline() is None


def test_system_first_then_microphone_goes_at_once() -> None:
    a = Aligner(hold_s=0.3)
    a.far(pcm(1000, ms(500)), T0, now=1.0)
    a.near(pcm(0, ms(500)), 0, T0, now=1.0)
    [out] = a.ready(1.0)
    assert out.reference == pcm(1000, ms(500)) and out.waited_s == 0.0


def test_out_of_phase_sources_release_what_is_covered() -> None:
    """System frames 200 ms behind the microphone's: the covered part goes now, the
    rest when the next system chunk arrives."""
    a = Aligner(hold_s=0.65)
    a.far(pcm(5000, ms(500)), T0 - 200, now=0.0)
    a.near(pcm(0, ms(500)), 0, T0, now=0.0)
    [first] = a.ready(0.0)
    assert first.offset == 0 and len(first.near) == ms(300) * 2
    assert first.reference == pcm(5000 + ms(200), ms(300))
    assert a.ready(0.1) == []
    a.far(pcm(5000 + ms(500), ms(500)), T0 + 300, now=0.2)
    [rest] = a.ready(0.2)
    assert rest.offset == ms(300) and rest.near == pcm(ms(300), ms(200))
    assert rest.reference == pcm(5000 + ms(500), ms(200))
    assert rest.waited_s == pytest.approx(0.2)


def test_no_system_source_yet_passes_through() -> None:
    a = Aligner(hold_s=0.3)
    a.near(pcm(0, ms(500)), 0, T0, now=0.0)
    [out] = a.ready(0.0)
    assert out.reference is None and out.near == pcm(0, ms(500))


def test_expecting_a_system_source_holds_only_once() -> None:
    """ECHO_CANCELLATION=on: the microphone waits for a system source that never
    comes for one hold, then flows without waiting."""
    a = Aligner(hold_s=0.3, expect_far=True)
    a.near(pcm(0, ms(500)), 0, T0, now=0.0)
    assert a.ready(0.29) == []
    [out] = a.ready(0.3)
    assert out.reference is None and a.stalled
    a.near(pcm(ms(500), ms(500)), ms(500), T0 + 500, now=0.5)
    [nxt] = a.ready(0.5)
    assert nxt.reference is None and nxt.waited_s == 0.0


def test_system_source_that_stops_never_stalls_the_microphone() -> None:
    a = Aligner(hold_s=0.3)
    a.far(pcm(1000, ms(500)), T0, now=0.0)
    a.near(pcm(0, ms(500)), 0, T0, now=0.0)
    assert len(a.ready(0.0)) == 1
    # the system source goes quiet (paused, muted, stopped)
    a.near(pcm(ms(500), ms(500)), ms(500), T0 + 500, now=0.5)
    assert a.ready(0.7) == []
    [late] = a.ready(0.8)  # the hold ends: out with silence as reference
    assert late.near == pcm(ms(500), ms(500))
    assert late.reference == bytes(ms(500) * 2) and late.referenced == 0
    assert a.stalled and a.stalls == 1
    # while it stays quiet, the microphone does not wait at all
    a.near(pcm(ms(1000), ms(500)), ms(1000), T0 + 1000, now=1.0)
    [now] = a.ready(1.0)
    assert now.waited_s == 0.0
    # it comes back: the microphone waits for it again
    a.far(pcm(3000, ms(500)), T0 + 1500, now=1.5)
    assert not a.stalled
    a.near(pcm(ms(2000), ms(500)), ms(2000), T0 + 2000, now=2.0)
    assert a.ready(2.0) == []
    a.far(pcm(4000, ms(500)), T0 + 2000, now=2.01)
    [back] = a.ready(2.01)
    assert back.reference == pcm(4000, ms(500))


def test_system_source_joining_late() -> None:
    a = Aligner(hold_s=0.3)
    a.near(pcm(0, ms(500)), 0, T0, now=0.0)
    assert a.ready(0.0)[0].reference is None  # before it: straight through
    a.near(pcm(ms(500), ms(500)), ms(500), T0 + 500, now=0.5)
    a.far(pcm(9000, ms(250)), T0 + 750, now=0.5)  # joins mid-chunk
    # from its first sample on, the microphone waits for it; before it, silence
    [out] = a.ready(0.5)
    assert out.reference == bytes(ms(250) * 2) + pcm(9000, ms(250))
    assert out.referenced == ms(250)


def test_timestamp_jitter_is_not_a_gap() -> None:
    """The desktop stamps when a frame fills: a few ms either way is the same stream."""
    a = Aligner(hold_s=0.3)
    a.far(pcm(0, ms(500)), T0, now=0.0)
    a.far(pcm(ms(500), ms(500)), T0 + 512, now=0.5)  # 12 ms late
    a.near(pcm(0, ms(500)), 0, T0, now=0.5)
    a.near(pcm(ms(500), ms(500)), ms(500), T0 + 495, now=0.5)
    outs = a.ready(0.5)
    assert b"".join(o.reference or b"" for o in outs) == pcm(0, ms(1000))


def test_a_jump_in_timestamps_reanchors_the_source() -> None:
    a = Aligner(hold_s=0.3)
    a.far(pcm(0, ms(500)), T0, now=0.0)
    a.far(pcm(7000, ms(500)), T0 + 2000, now=0.1)  # a paused system source resumes
    a.near(pcm(0, ms(500)), 0, T0 + 2000, now=0.1)
    [out] = a.ready(0.1)
    assert out.reference == pcm(7000, ms(500))


def test_clock_offset_between_the_sources_keeps_the_stamped_alignment() -> None:
    """The reference is the system audio *stamped* at the microphone's time; a constant
    offset is left to the canceller's delay estimator."""
    a = Aligner(hold_s=0.3)
    a.far(pcm(0, ms(500)), T0 - 80, now=0.0)
    a.far(pcm(ms(500), ms(500)), T0 + 420, now=0.5)
    a.near(pcm(100, ms(500)), 0, T0, now=0.5)
    [out] = a.ready(0.5)
    assert out.reference == pcm(ms(80), ms(500))


def test_system_buffer_is_bounded_without_microphone() -> None:
    a = Aligner(hold_s=0.3)
    for i in range(40):  # 20 s of system audio, no microphone
        a.far(pcm(0, ms(500)), T0 + 500 * i, now=i * 0.5)
    held = sum(len(x) for _, x in a._far) // 2
    assert held <= ms(FAR_KEEP_MS)


def test_a_burst_keeps_the_reference_of_every_held_chunk() -> None:
    """A reconnect replay: 20 s of both sources arrive before any is cleaned."""
    a = Aligner(hold_s=0.3, expect_far=True)
    for i in range(40):
        a.near(pcm(ms(500) * i, ms(500)), ms(500) * i, T0 + 500 * i, now=0.0)
        a.far(pcm(9 + ms(500) * i, ms(500)), T0 + 500 * i, now=0.0)
    outs = a.ready(0.0)
    assert b"".join(o.reference or b"" for o in outs) == pcm(9, ms(20_000))
    assert sum(o.referenced for o in outs) == ms(20_000)


def test_flush_releases_everything_in_order() -> None:
    a = Aligner(hold_s=0.3)
    a.far(pcm(0, ms(100)), T0, now=0.0)
    for i in range(3):
        a.near(pcm(ms(500) * i, ms(500)), ms(500) * i, T0 + 500 * i, now=0.0)
    outs = a.flush(0.0)
    assert [o.offset for o in outs] == [0, ms(500), ms(1000)]
    assert b"".join(o.near for o in outs) == pcm(0, ms(1500))
    assert a.held_samples() == 0 and a.next_deadline() is None


def test_chunks_of_any_even_size() -> None:
    a = Aligner(hold_s=0.3)
    a.far(pcm(0, 777), T0, now=0.0)
    a.near(pcm(0, 333), 0, T0, now=0.0)
    a.near(pcm(333, 333), 333, T0 + 21, now=0.0)  # 333 samples = 20.8 ms: jitter
    outs = a.ready(0.0)
    assert b"".join(o.near for o in outs) == pcm(0, 666)
    assert b"".join(o.reference or b"" for o in outs) == pcm(0, 666)


def test_session_mode_override() -> None:
    assert mode("auto", None, "s") == "auto"
    assert mode("auto", "off", "s") == "off"
    assert mode("off", "on", "s") == "on"
    with pytest.raises(p.ProtocolViolation) as err:
        mode("auto", "maybe", "s")
    assert err.value.code == p.ErrorCode.INVALID_MESSAGE
    assert "echo_cancellation" in err.value.message
