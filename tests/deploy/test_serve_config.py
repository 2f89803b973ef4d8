"""`speakflow serve --config FILE`: a Hypercorn TOML file, checked, and its precedence."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from speakflow.errors import ConfigError
from speakflow.hosting import hypercorn_config

from ..conftest import REPO, make_settings
from .support import _SETTINGS, DEPLOY, free_port


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


# ------------------------------------------------ every startup failure: one line, then exit


def serve_output(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, list[str]]:
    """Run `speakflow serve` with only ``env`` as settings; (exit status, output lines)."""
    environ = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
    environ.update({"LOG_FORMAT": "json", **env})
    port = args[args.index("--port") + 1] if "--port" in args else str(free_port())
    args = tuple(a for a in args if a != "--port" and a != port)
    cmd = [sys.executable, "-m", "speakflow", "serve", "--port", port, *args]
    if "--env-file" not in args:
        cmd += ["--env-file", str(tmp_path / "no.env")]
    out = subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True, timeout=120)
    return out.returncode, (out.stdout + out.stderr).splitlines()


def assert_one_line_refusal(status: int, lines: list[str], *needles: str) -> None:
    """Exit 2; exactly one error line, naming what to change; nothing claimed ready."""
    text = "\n".join(lines)
    assert status == 2, text
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("speakflow: configuration error: "), text
    for needle in needles:
        assert needle in errors[0], text
    assert "Traceback" not in text, text
    claims = [line for line in lines if re.search(r"\b(listening|Running on|ready)\b", line)]
    assert not claims, text


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        # the English-only model with a Spanish default: says which model to pick
        ({"WHISPER_MODEL": "tiny.en", "DEFAULT_LANGUAGE": "es"},
         ("DEFAULT_LANGUAGE=es", "WHISPER_MODEL=base")),
        ({"DEFAULT_LANGUAGE": "spanish"}, ("DEFAULT_LANGUAGE: 'spanish' is not a language code",)),
        ({"WHISPER_MAX_STREAMS": "many"}, ("WHISPER_MAX_STREAMS",)),
        ({"HOST": "192.0.2.1"}, ("--host/HOST", "192.0.2.1")),  # TEST-NET: on no machine
    ],
)  # fmt: skip
def test_a_bad_setting_is_one_line_before_anything(
    tmp_path: Path, env: dict[str, str], needles: tuple[str, ...]
) -> None:
    status, lines = serve_output(tmp_path, env)
    assert_one_line_refusal(status, lines, *needles)
    assert len(lines) == 1, lines  # refused before the model loads: nothing else printed


def test_cuda_on_a_machine_without_it_is_one_line(tmp_path: Path) -> None:
    import ctranslate2

    if ctranslate2.get_cuda_device_count() > 0:  # a GPU machine: the setting is fine there
        assert make_settings(WHISPER_DEVICE="cuda").WHISPER_DEVICE == "cuda"
        return
    status, lines = serve_output(tmp_path, {"WHISPER_DEVICE": "cuda"})
    assert_one_line_refusal(status, lines, "WHISPER_DEVICE=cuda", "WHISPER_DEVICE=cpu")
    assert len(lines) == 1, lines


def test_port_in_use_is_one_line_naming_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        status, lines = serve_output(tmp_path, {}, "--port", port)
    assert_one_line_refusal(status, lines, f"127.0.0.1:{port} is already in use", "--port/PORT")
    assert len(lines) == 1, lines  # found before the model loads, not after


def test_port_in_use_names_the_config_files_bind(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(tmp_path, f'bind = ["127.0.0.1:{port}"]\n')
        environ = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
        out = subprocess.run(
            [sys.executable, "-m", "speakflow", "serve", "--config", path,
             "--env-file", str(tmp_path / "no.env")],
            cwd=REPO, env=environ, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    lines = (out.stdout + out.stderr).splitlines()
    assert_one_line_refusal(out.returncode, lines, f"bind in {path}")


def test_a_bad_dotenv_line_is_one_line(tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text("PORT 8000\n")
    status, lines = serve_output(tmp_path, {}, "--env-file", str(env_file))
    assert_one_line_refusal(status, lines, f"{env_file} line 1: expected NAME=value")
    assert len(lines) == 1, lines


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        # a directory model that turns out English-only once loaded (its name says nothing)
        ({"DEFAULT_LANGUAGE": "fr"}, ("DEFAULT_LANGUAGE=fr", "English-only", "WHISPER_MODEL=base")),
        # a model that cannot load: used to log "listening" first
        ({"WHISPER_COMPUTE_TYPE": "float99"}, ("WHISPER_COMPUTE_TYPE", "float99")),
    ],
)  # fmt: skip
def test_what_only_the_model_load_finds_stops_before_listening(
    tmp_path: Path, env: dict[str, str], needles: tuple[str, ...]
) -> None:
    from speakflow.providers.whisper_local.models import bundled_model_path

    model = tmp_path / "my-model"  # tiny.en under a name that does not end in .en
    model.symlink_to(bundled_model_path(), target_is_directory=True)
    status, lines = serve_output(tmp_path, {"WHISPER_MODEL": str(model), **env})
    assert_one_line_refusal(status, lines, *needles)


def test_a_cache_dir_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = {"WHISPER_MODEL": "base", "WHISPER_CACHE_DIR": str(blocker / "models")}
    status, lines = serve_output(tmp_path, env)
    assert_one_line_refusal(
        status, lines, "WHISPER_CACHE_DIR", "set WHISPER_CACHE_DIR to a writable directory"
    )


def test_a_port_out_of_range_is_refused_by_the_parser(tmp_path: Path) -> None:
    status, lines = serve_output(tmp_path, {}, "--port", "99999")
    assert status == 2, lines
    errors = [line for line in lines if "error" in line]
    assert errors == [
        "speakflow serve: error: argument --port: expected a port number 0-65535 (got '99999')"
    ], lines
    assert not any("Traceback" in line for line in lines), lines


async def test_running_app_raises_what_serve_refuses(tmp_path: Path) -> None:
    """Tools and tests that run the app in-process (``running_app``) start the provider
    before Hypercorn too: a failure raises, never a server without its model."""
    import trio

    from speakflow.hosting import running_app
    from speakflow.providers.whisper_local.models import bundled_model_path

    model = tmp_path / "my-model"
    model.symlink_to(bundled_model_path(), target_is_directory=True)
    settings = make_settings(WHISPER_MODEL=str(model), DEFAULT_LANGUAGE="fr")
    with trio.fail_after(120), pytest.raises(ConfigError, match="English-only"):
        async with running_app(settings):
            pytest.fail("the server started")
