"""Option parsing the tools' commands share."""

from __future__ import annotations

from collections.abc import Iterable


def key_values(items: Iterable[str], option: str) -> dict[str, str]:
    """``KEY=VALUE`` items of a repeatable option (settings for a server it starts).

    A ValueError names the option and the first item without a key or ``=``,
    so each command can report it in its own voice.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} wants KEY=VALUE, got {item!r}")
        out[key] = value
    return out
