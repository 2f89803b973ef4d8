"""`speakflow serve --config FILE`: a Hypercorn TOML file, checked, and its precedence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from speakflow.cli import hypercorn_config
from speakflow.errors import ConfigError

from ..conftest import REPO, make_settings
from .support import DEPLOY


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hypercorn.toml"
    path.write_text(text)
    return str(path)


def test_shipped_file_loads() -> None:
    config = hypercorn_config(make_settings(), config_file=str(DEPLOY / "hypercorn.toml"))
    assert config.worker_class == "trio"
    assert config.bind == ["127.0.0.1:8000"]
    assert config.websocket_ping_interval == 20.0 < 60  # below nginx's proxy_read_timeout
    assert config.graceful_timeout >= make_settings().SHUTDOWN_TIMEOUT_S
    assert config.keep_alive_timeout > 60  # outlives nginx's upstream keepalive (60 s)


def test_precedence_flags_then_file_then_settings(tmp_path) -> None:
    settings = make_settings(
        HOST="0.0.0.0", PORT=9000, WS_PING_INTERVAL=7, WS_MAX_MESSAGE_BYTES=5000
    )
    path = write(tmp_path, 'bind = ["127.0.0.1:8100"]\nwebsocket_ping_interval = 15\n')
    config = hypercorn_config(settings, config_file=path)
    assert config.bind == ["127.0.0.1:8100"]  # the file beats HOST/PORT
    assert config.websocket_ping_interval == 15  # and WS_PING_INTERVAL
    assert config.websocket_max_message_size == 5000  # the file left it to the settings
    assert config.accesslog is None
    assert hypercorn_config(settings, port=8200, config_file=path).bind == ["0.0.0.0:8200"]
    assert hypercorn_config(settings, "::1", 8300, path).bind == ["[::1]:8300"]
    # no file: settings, as before
    assert hypercorn_config(settings).bind == ["0.0.0.0:9000"]
    assert hypercorn_config(settings).websocket_ping_interval == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("websocket_ping_intervall = 5\n", "unknown Hypercorn setting websocket_ping_intervall"),
        ('worker_class = "asyncio"\n', 'worker_class must be "trio"'),
        ("workers = 4\n", "workers must be 1"),
        ("bind = [\n", "not valid TOML"),
    ],
)
def test_bad_files_stop_startup(tmp_path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        hypercorn_config(make_settings(), config_file=write(tmp_path, text))


def test_serve_exits_2_with_one_line(tmp_path) -> None:
    path = write(tmp_path, "workers = 4\n")
    for args in (["--config", path], ["--config", str(tmp_path / "missing.toml")]):
        out = subprocess.run(
            [sys.executable, "-m", "speakflow", "serve", *args, "--env-file", str(tmp_path / "x")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith("speakflow: configuration error: --config"), out.stderr
