"""AWS Transcribe test helpers: an emulator in the test's nursery, signed URLs, frames."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from botocore.eventstream import EventStreamBuffer as BotocoreBuffer

from speakflow.config import AwsTranscribeSettings
from speakflow.emulation.aws_transcribe import AwsTranscribeEmulator
from speakflow.emulation.faults import Faults
from speakflow.emulation.server import EmulatorServer
from speakflow.providers.aws_transcribe import codec, signing

from ...conftest import make_settings
from ...emulation.support import make_engine

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
CREDENTIALS = signing.Credentials(ACCESS_KEY, SECRET_KEY)
QUERY = codec.StreamOptions()


@asynccontextmanager
async def running_aws(
    engine: str = "echo",
    faults: Sequence[str] = (),
    model: str | None = None,
    **options: Any,
) -> AsyncIterator[EmulatorServer]:
    server = EmulatorServer(
        AwsTranscribeEmulator(make_engine(engine, model), **options), Faults.parse(faults)
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def endpoint(server: EmulatorServer) -> str:
    return f"ws://127.0.0.1:{server.port}"


def signed(
    server: EmulatorServer,
    options: codec.StreamOptions = QUERY,
    credentials: signing.Credentials = CREDENTIALS,
    region: str = "us-east-1",
) -> str:
    return signing.presign(codec.stream_url(endpoint(server), options), credentials, region)


def aws_settings(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "SPEECH_PROVIDER": "aws_transcribe",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_TRANSCRIBE_ENDPOINT": url,
        **overrides,
    }


def settings_for(url: str, **overrides: Any) -> AwsTranscribeSettings:
    return make_settings(**aws_settings(url, **overrides)).aws_transcribe  # the backend's section


def botocore_decode(frame: bytes) -> tuple[dict[str, Any], bytes]:
    """One frame through botocore's decoder (independent of the codec under test)."""
    buffer = BotocoreBuffer()
    buffer.add_data(frame)
    messages = list(buffer)
    assert len(messages) == 1, messages
    return dict(messages[0].headers), bytes(messages[0].payload)


def isolate_aws_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """boto3's chain with nothing to find but what the test writes into ``tmp_path``
    (``credentials``, ``config``), and no instance-metadata lookup: loopback only."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_ROLE_ARN"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return tmp_path
