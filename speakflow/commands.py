"""The ``speakflow`` commands other than ``serve``: one loader per module that adds some.

A loader imports its module only when called, so ``speakflow serve`` (which
builds a parser without them) never imports the tools, and mypy checks every
reference: a module that moves fails the type check, not a user's command.
Each module keeps its own options; :func:`speakflow.cli.build_parser` calls
every loader's ``register``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: ``register(subparsers)`` of a command's module: adds its parser and sets
#: ``func`` to a callable taking the parsed args and returning an exit status.
Register = Callable[[Any], None]


def _stream_and_bench() -> Register:
    from .tools import cli

    return cli.register


def _bench_echo() -> Register:
    from .tools import bench_echo

    return bench_echo.register


def _compare() -> Register:
    from .tools import compare

    return compare.register


def _emulate() -> Register:
    from .tools import emulate

    return emulate.register


def _bench_whisper() -> Register:
    from .tools.bench_whisper import cli

    return cli.register


def _transcript() -> Register:
    from .store import cli

    return cli.register


#: in the order ``speakflow --help`` lists them, after ``serve``
COMMANDS: tuple[Callable[[], Register], ...] = (
    _stream_and_bench,
    _bench_echo,
    _compare,
    _emulate,
    _bench_whisper,
    _transcript,
)
