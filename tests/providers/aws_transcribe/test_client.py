"""The AWS Transcribe shell against the emulator: signing, framing, flush, silence, typed errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from speakflow.emulation.aws_transcribe import AwsTranscribeEmulator
from speakflow.emulation.engines import EchoEngine
from speakflow.emulation.server import EmulatorServer
from speakflow.errors import ConfigError, ProviderError, ProviderRejected, ProviderUnavailable
from speakflow.providers.aws_transcribe.client import AwsTranscribeBackend
from speakflow.providers.base import AudioFrame

from ..support import FRAME, fail_soon, free_port, memory_connector, mute_port, run_stream
from .support import endpoint, isolate_aws_chain, running_aws, settings_for


async def test_one_connection_times_on_the_source_timeline_and_a_clean_end() -> None:
    long = bytes(range(1, 17)) * 5000  # 2.5 s: three AudioEvents of at most 1 s
    frames = [AudioFrame(FRAME, 0), AudioFrame(FRAME, 8000), AudioFrame(long, 32000)]
    with trio.fail_after(10):
        async with running_aws() as aws:
            backend = AwsTranscribeBackend(settings_for(endpoint(aws)))
            events = await run_stream(backend, frames)
    hexed = FRAME[:8].hex()
    assert [(e.text, e.is_final, e.start, e.end) for e in events] == [
        (hexed, True, 0.0, 0.5),
        (hexed, True, 0.5, 1.0),
        (hexed, True, 2.0, 3.0),  # after the gap: still on the source timeline
        (hexed, True, 3.0, 4.0),
        (hexed, True, 4.0, 4.5),
    ]
    assert [e.segment_id for e in events] == ["0", "1", "2", "3", "4"]
    assert {e.language for e in events} == {"en"}
    [record] = aws.log.records
    assert record.auth == "sigv4"
    query = {k: v for k, v in record.query.items() if not k.startswith("X-Amz-")}
    assert query == {
        "language-code": "en-US", "media-encoding": "pcm", "sample-rate": "16000",
        "enable-partial-results-stabilization": "true", "partial-results-stability": "medium",
    }  # fmt: skip
    assert record.query["X-Amz-Signature"] == "***"  # never in the emulator's log
    assert record.query["X-Amz-Expires"] == "300"
    assert record.binary_messages == 5
    assert record.bytes_received == 2 * len(FRAME) + len(long)
    assert record.text_messages == {"EndOfStream": 1}
    assert (record.close_code, record.closed_by) == (1000, "server")
    assert backend.streams_open == 0 and backend.connections == 1


async def test_language_comes_from_the_session_then_the_setting() -> None:
    with trio.fail_after(10):
        async with running_aws() as aws:
            await run_stream(AwsTranscribeBackend(settings_for(endpoint(aws))), [], language="es")
            gb = AwsTranscribeBackend(settings_for(endpoint(aws), AWS_TRANSCRIBE_LANGUAGE="en-GB"))
            await run_stream(gb, [], language=None)  # the client chose none: the setting
            await run_stream(gb, [], language="en")  # chosen, though equal to the default
            await run_stream(gb, [], language="de")
            await run_stream(gb, [], language="fr-ca")
            spanish = AwsTranscribeBackend(settings_for(endpoint(aws), DEFAULT_LANGUAGE="es"))
            await run_stream(spanish, [], language=None)  # the default: es-US, not en-US
    assert [r.query["language-code"] for r in aws.log.records] == [
        "es-US", "en-GB", "en-US", "de-DE", "fr-CA", "es-US",
    ]  # fmt: skip


async def test_stability_off_sends_no_stabilization() -> None:
    with trio.fail_after(10):
        async with running_aws() as aws:
            backend = AwsTranscribeBackend(
                settings_for(endpoint(aws), AWS_TRANSCRIBE_STABILITY="off")
            )
            await run_stream(backend, [])
    [record] = aws.log.records
    assert "enable-partial-results-stabilization" not in record.query


async def test_wrong_secret_is_a_provider_error_naming_aws() -> None:
    with trio.fail_after(10):
        async with running_aws() as aws:
            settings = settings_for(endpoint(aws), AWS_SECRET_ACCESS_KEY="not-the-secret")
            with pytest.raises(ProviderRejected) as info:
                await run_stream(AwsTranscribeBackend(settings), [AudioFrame(FRAME, 0)])
    assert info.value.code == "provider_error"
    message = str(info.value)
    assert "AWS Transcribe refused the credentials or signature" in message
    assert "HTTP 403 InvalidSignatureException" in message
    assert "not-the-secret" not in message
    assert [r.status for r in aws.log.records] == [403]


async def test_expired_url_is_refused() -> None:
    import datetime

    def later() -> datetime.datetime:  # the server's clock is 10 minutes ahead
        return datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10)

    with trio.fail_after(10):
        async with running_aws(clock=later) as aws:
            with pytest.raises(ProviderRejected) as info:
                await run_stream(AwsTranscribeBackend(settings_for(endpoint(aws))), [])
    assert "Signature expired" in str(info.value)


async def test_no_credentials_fail_at_start_with_a_clear_message() -> None:
    backend = AwsTranscribeBackend(settings_for("ws://127.0.0.1:1"), credentials=lambda: None)
    with trio.fail_after(10), pytest.raises(ConfigError) as info:
        await backend.start()
    assert "AWS credentials: none found" in str(info.value)
    assert "AWS_PROFILE" in str(info.value)


async def test_credentials_from_boto3s_chain_sign_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No key settings: a profile found by boto3's chain (resolved in a worker thread)."""
    home = isolate_aws_chain(tmp_path, monkeypatch)
    (home / "credentials").write_text(
        "[meetings]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n"
        "aws_session_token = profile-token\n"
    )
    monkeypatch.setenv("AWS_PROFILE", "meetings")
    with trio.fail_after(10):
        async with running_aws(access_key="AKIDPROFILE", secret_key="profile-secret") as aws:
            settings = settings_for(endpoint(aws), AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
            backend = AwsTranscribeBackend(settings)
            await backend.start()
            assert backend.statistics().credentials == "shared-credentials-file"
            events = await run_stream(backend, [AudioFrame(FRAME, 0)])
    assert [e.text for e in events] == [FRAME[:8].hex()]
    [record] = aws.log.records
    assert record.auth == "sigv4" and record.query["X-Amz-Security-Token"] == "***"


async def test_unreachable_is_provider_unavailable() -> None:
    backend = AwsTranscribeBackend(settings_for(f"ws://127.0.0.1:{free_port()}"))
    with trio.fail_after(10), pytest.raises(ProviderUnavailable) as info:
        await run_stream(backend, [AudioFrame(FRAME, 0)])
    assert "cannot reach AWS Transcribe" in str(info.value)
    assert "X-Amz-Signature" not in str(info.value)


async def test_connect_is_bounded_by_the_connect_timeout() -> None:
    async with mute_port() as port:
        settings = settings_for(f"ws://127.0.0.1:{port}", PROVIDER_CONNECT_TIMEOUT="0.3")
        with trio.fail_after(5), pytest.raises(ProviderUnavailable) as info:
            await run_stream(AwsTranscribeBackend(settings), [])
    assert "no connection within 0.3 s" in str(info.value)


async def test_vendor_outage_503_is_provider_unavailable() -> None:
    with trio.fail_after(10):
        async with running_aws(faults=["refuse=1"]) as aws:
            with pytest.raises(ProviderUnavailable) as info:
                await run_stream(AwsTranscribeBackend(settings_for(endpoint(aws))), [])
    assert "HTTP 503 ServiceUnavailableException" in str(info.value)


@pytest.mark.parametrize(
    ("exception", "error"),
    [
        ("BadRequestException", ProviderRejected),
        ("ConflictException", ProviderRejected),
        ("LimitExceededException", ProviderUnavailable),
        ("InternalFailureException", ProviderUnavailable),
        ("ServiceUnavailableException", ProviderUnavailable),
    ],
)
async def test_every_exception_frame_is_a_typed_error(
    exception: str, error: type[ProviderError]
) -> None:
    frames = [AudioFrame(FRAME, i * 8000) for i in range(8)]
    with trio.fail_after(10):
        async with running_aws(faults=["error-after=1"], fault_exception=exception) as aws:
            with pytest.raises(ProviderError) as info:
                await run_stream(AwsTranscribeBackend(settings_for(endpoint(aws))), frames,
                                 pause=0.05)  # fmt: skip
    assert type(info.value) is error
    assert exception in str(info.value)
    [record] = aws.log.records
    assert record.faults == ["error"] and record.text_messages.get(exception) == 1


async def test_a_dropped_connection_is_provider_unavailable() -> None:
    frames = [AudioFrame(FRAME, i * 8000) for i in range(8)]
    with trio.fail_after(10):
        async with running_aws(faults=["drop-after=1"]) as aws:
            with pytest.raises(ProviderUnavailable) as info:
                await run_stream(AwsTranscribeBackend(settings_for(endpoint(aws))), frames,
                                 pause=0.05)  # fmt: skip
    assert "lost" in str(info.value)


async def test_a_stalled_vendor_bounds_the_flush_by_the_response_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frames = [AudioFrame(FRAME, i * 8000) for i in range(4)]
    with trio.fail_after(10):
        async with running_aws(faults=["stall-after=1"]) as aws:
            settings = settings_for(endpoint(aws), PROVIDER_RESPONSE_TIMEOUT="0.5")
            start = trio.current_time()
            events = await run_stream(AwsTranscribeBackend(settings), frames, pause=0.05)
            took = trio.current_time() - start
            await aws.log.wait_for(lambda log: log.records[0].finished.is_set())
    assert 1 <= len(events) <= 2
    assert took >= 0.5
    assert "last finals may be missing" in caplog.text
    assert (aws.log.records[0].close_code, aws.log.records[0].closed_by) == (1000, "client")


async def test_cancelled_stream_still_closes_1000() -> None:
    with trio.fail_after(10):
        async with running_aws() as aws:
            with pytest.raises(trio.TooSlowError):
                await run_stream(AwsTranscribeBackend(settings_for(endpoint(aws))),
                                 [AudioFrame(FRAME, 0)], feed=fail_soon)  # fmt: skip
            await aws.log.wait_for(lambda log: log.records[0].finished.is_set())
    record = aws.log.records[0]
    assert (record.close_code, record.closed_by) == (1000, "client")


# ---------------------------------------------------------------------- mock clock


@pytest.mark.parametrize("vendor_idle", [15.0, 3.0])
async def test_silence_keeps_an_idle_source_alive_past_the_15_s_limit(
    autojump_clock: trio.testing.MockClock, vendor_idle: float
) -> None:
    """A source silent for 40 s against AWS's real 15 s limit; the control is a vendor
    whose limit (3 s) is shorter than the keepalive interval (5 s)."""
    server = EmulatorServer(AwsTranscribeEmulator(EchoEngine(), idle_timeout=vendor_idle))

    async def silent_then_speak(send: trio.MemorySendChannel[AudioFrame]) -> None:
        await trio.sleep(40)  # a muted source: no chunks at all
        await send.send(AudioFrame(b"\x7f" * 8 + FRAME[8:], 8000))

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            # the host must be the one the emulator sees in Host: it is signed
            backend = AwsTranscribeBackend(
                settings_for("ws://aws.test"), connect=memory_connector(server, nursery)
            )
            if vendor_idle > 5:
                events = await run_stream(backend, [AudioFrame(FRAME, 0)],
                                          feed=silent_then_speak)  # fmt: skip
            else:
                with pytest.raises(ProviderUnavailable) as info:
                    await run_stream(backend, [AudioFrame(FRAME, 0)], feed=silent_then_speak)
    [record] = server.log.records
    if vendor_idle > 5:
        # the silence took vendor time, not source time: the next words are at 0.5 s
        spoken = [(e.text, e.start, e.end) for e in events if e.text != "00" * 8]
        assert spoken == [(FRAME[:8].hex(), 0.0, 0.5), ("7f" * 8, 0.5, 1.0)]
        # (the echo engine "transcribes" the silence too: all of it at the pause, 0.5 s)
        silence = [(e.start, e.end) for e in events if e.text == "00" * 8]
        assert silence and set(silence) == {(0.5, 0.5)}
        assert backend.keepalives >= 40 // 5 - 1
        assert record.binary_messages == 2 + backend.keepalives
        assert (record.close_code, record.closed_by) == (1000, "server")
        assert record.text_messages == {"EndOfStream": 1}
    else:  # AWS's idle BadRequestException reaches the caller, as a reconnectable error
        assert "no audio for 15 s" in str(info.value)
        assert record.text_messages == {"BadRequestException": 1}
