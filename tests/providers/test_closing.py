"""Each vendor's close sequence as pure state: what we send, and what ends the wait.

The shells (client.py) only move these bytes; the client tests check the same
sequences against the emulators and scripted vendors over real sockets.
"""

from __future__ import annotations

import pytest

from speakflow.providers._closing import CloseSequence, Closing
from speakflow.providers.assemblyai import codec as aai
from speakflow.providers.aws_transcribe import codec as aws
from speakflow.providers.deepgram import codec as dg


def test_deepgram_finalizes_then_closes_and_metadata_after_closestream_is_the_last() -> None:
    closing = Closing(dg.CLOSE)
    metadata = dg.decode('{"type":"Metadata","request_id":"r","duration":1.5}')
    assert not closing.received(metadata)  # before CloseStream it answers nothing
    assert not closing.flushed and not closing.closing
    assert closing.end() == ('{"type":"Finalize"}', '{"type":"CloseStream"}')
    assert closing.closing
    results = dg.decode('{"type":"Results","start":0,"duration":1,"is_final":true}')
    assert not closing.received(results) and not closing.flushed
    assert closing.received(metadata) and closing.flushed and not closing.closed
    closing.connection_closed()
    assert closing.closed


def test_assemblyai_force_endpoints_then_terminates_and_termination_ends_even_unasked() -> None:
    closing = Closing(aai.CLOSE)
    termination = aai.decode('{"type":"Termination","audio_duration_seconds":3}')
    assert closing.received(termination) and closing.flushed  # an idle session's end
    closing = Closing(aai.CLOSE)
    assert closing.end() == ('{"type":"ForceEndpoint"}', '{"type":"Terminate"}')
    turn = aai.decode('{"type":"Turn","turn_order":0,"end_of_turn":true,"transcript":"hi"}')
    assert not closing.received(turn) and not closing.flushed
    assert closing.received(termination) and closing.flushed


def test_aws_sends_the_empty_audio_event_and_only_its_close_ends_the_wait() -> None:
    closing = Closing(aws.CLOSE)
    assert closing.end() == (aws.END_OF_STREAM,)
    assert aws.decode(aws.END_OF_STREAM) == aws.Audio(b"")
    transcript = aws.decode(aws.transcript_event({"Transcript": {"Results": []}}))
    assert not closing.received(transcript) and not closing.flushed
    closing.connection_closed()
    assert closing.flushed and closing.closed


@pytest.mark.parametrize(
    ("sequence", "text"),
    [
        (dg.CLOSE, "deepgram did not finish within 5 s of CloseStream; last finals may be missing"),
        (
            aai.CLOSE,
            "assemblyai sent no Termination within 5 s of Terminate; the last finals may be "
            "missing",
        ),
        (
            aws.CLOSE,
            "aws_transcribe did not close within 5 s of the end of the audio; last finals may "
            "be missing",
        ),
    ],
)
def test_a_late_vendor_is_named_in_the_warning(sequence: CloseSequence, text: str) -> None:
    assert Closing(sequence).late(5.0) == text


def test_a_close_before_we_asked_is_not_a_clean_end() -> None:
    closing = Closing(dg.CLOSE)
    closing.connection_closed()
    assert closing.flushed and not closing.closing  # the codec's close_error sees closing=False
    assert dg.close_error(1000, "", closing=closing.closing) is not None
