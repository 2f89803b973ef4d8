"""TRANSCRIPT_PROCESSOR settings: validated at startup; LangChain stays optional."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from speakflow.errors import ConfigError
from speakflow.postprocess import build_processor
from speakflow.postprocess.basic import BasicProcessor
from speakflow.startup import load_settings

from ..conftest import REPO


def settings(**env: str) -> Any:
    return load_settings(environ=env, env_file=None)


def test_default_is_no_processing() -> None:
    s = settings()
    assert s.TRANSCRIPT_PROCESSOR == "none"
    assert build_processor(s) is None


def test_basic_builds_from_settings() -> None:
    proc = build_processor(settings(TRANSCRIPT_PROCESSOR="basic", FILLER_WORDS="so, like"))
    assert isinstance(proc, BasicProcessor)
    assert proc.rules.fillers == (("like",), ("so",))


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"TRANSCRIPT_PROCESSOR": "gpt"}, "TRANSCRIPT_PROCESSOR"),
        ({"SILENCE_DBFS": "3"}, "SILENCE_DBFS"),
        ({"LLM_TIMEOUT": "0"}, "LLM_TIMEOUT"),
        ({"LLM_MAX_CONCURRENCY": "0"}, "LLM_MAX_CONCURRENCY"),
        ({"TRANSCRIPT_PROCESSOR": "langchain"}, "OPENAI_API_KEY"),
        (
            {
                "TRANSCRIPT_PROCESSOR": "langchain",
                "OPENAI_API_KEY": "sk-secret",
                "LLM_BASE_URL": "localhost:8080",
            },
            "LLM_BASE_URL",
        ),
    ],
)
def test_bad_settings_stop_startup_naming_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings(**env)
    assert str(err.value).startswith(f"{name}:")
    assert "sk-secret" not in str(err.value)


def test_langchain_without_the_extra_is_a_startup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "langchain_openai" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match=r"^TRANSCRIPT_PROCESSOR: .*speakflow\[langchain\]"):
        settings(TRANSCRIPT_PROCESSOR="langchain", OPENAI_API_KEY="k")


def run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


_OPTIONAL = "('langchain', 'langchain_core', 'langchain_openai', 'openai')"


def test_the_server_never_imports_langchain_unless_selected() -> None:
    out = run_python(
        f"""
        import sys
        from speakflow.app import create_app
        from speakflow.startup import load_settings
        for name in ("none", "basic"):
            create_app(load_settings(environ={{"TRANSCRIPT_PROCESSOR": name}}, env_file=None))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {_OPTIONAL})
        print("loaded:", loaded)
        """
    )
    assert "loaded: []" in out


def test_the_default_install_works_without_the_extra() -> None:
    """As if ``speakflow[langchain]`` were not installed: ``none`` and ``basic`` serve,
    ``langchain`` is refused at startup with the install hint."""
    out = run_python(
        f"""
        import sys
        for name in {_OPTIONAL}:
            sys.modules[name] = None  # "import name" now fails as if not installed
        import trio
        from speakflow.app import create_app
        from speakflow.startup import load_settings
        from speakflow.errors import ConfigError
        from speakflow.postprocess import run_processor

        for name in ("none", "basic"):
            app = create_app(load_settings(environ={{"TRANSCRIPT_PROCESSOR": name}},
                                           env_file=None))
        proc = app.state.speakflow.processor
        print("basic:", trio.run(run_processor, proc, "um, it works").text)
        try:
            load_settings(environ={{"TRANSCRIPT_PROCESSOR": "langchain", "OPENAI_API_KEY": "k"}},
                          env_file=None)
        except ConfigError as err:
            print("refused:", err)
        """
    )
    assert "basic: It works." in out
    assert "refused: TRANSCRIPT_PROCESSOR:" in out and "speakflow[langchain]" in out
