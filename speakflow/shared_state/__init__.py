"""State shared by the instances of a cluster (issue 18): see :mod:`.base` for the rules.

``open_shared_state`` picks the store: Redis/Valkey when ``REDIS_URL`` is
set, else this process's memory (today's single-process behaviour).
``heartbeat_loop`` keeps an instance alive in the cluster and hands the
takeover notices addressed to it to the registry.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ..errors import ConfigError
from .base import (
    Final,
    Limits,
    Opened,
    SessionRecord,
    SharedState,
    SharedStateUnavailable,
    SourceTimeline,
    StaleOwner,
    Takeover,
)
from .memory import MemoryCore, MemoryState

if TYPE_CHECKING:
    from ..config import SharedStateSettings

__all__ = [
    "Final",
    "Limits",
    "MemoryCore",
    "MemoryState",
    "Opened",
    "SessionRecord",
    "SharedState",
    "SharedStateUnavailable",
    "SourceTimeline",
    "StaleOwner",
    "Takeover",
    "check_settings",
    "heartbeat_loop",
    "make_instance_id",
    "open_shared_state",
    "shared_state_from_settings",
]

log = logging.getLogger(__name__)


def make_instance_id(name: str = "") -> str:
    """This process's id in the cluster: ``<name or hostname>-<pid>-<random>``.

    New for every process start, on purpose: a restarted instance has lost the
    sessions it held, so it must not look like their (alive) owner.
    """
    return f"{name or socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def open_shared_state(
    redis_url: str,
    instance_id: str,
    *,
    timeout_s: float = 0.5,
    prefix: str = "speakflow:",
    heartbeat_ttl_s: float = 2.0,
    on_error: Callable[[str], None] | None = None,
) -> SharedState:
    """The store for these settings: Redis when ``redis_url`` is set, else memory."""
    if not redis_url:
        return MemoryState(instance_id, heartbeat_ttl_s)
    from .redis_store import RedisState

    return RedisState(
        redis_url,
        instance_id,
        timeout_s=timeout_s,
        prefix=prefix,
        heartbeat_ttl_s=heartbeat_ttl_s,
        on_error=on_error,
    )


def shared_state_from_settings(
    settings: Any, instance_id: str, on_error: Callable[[str], None] | None = None
) -> SharedState:
    """The store as the settings say: REDIS_URL, REDIS_PREFIX, REDIS_TIMEOUT_S, and a
    heartbeat TTL of four INSTANCE_HEARTBEAT_S periods."""
    return open_shared_state(
        settings.REDIS_URL,
        instance_id,
        timeout_s=settings.REDIS_TIMEOUT_S,
        prefix=settings.REDIS_PREFIX,
        heartbeat_ttl_s=4 * settings.INSTANCE_HEARTBEAT_S,
        on_error=on_error,
    )


async def heartbeat_loop(
    store: SharedState,
    on_takeover: Callable[[Takeover], Awaitable[None]],
    interval_s: float = 0.5,
) -> None:
    """Run for the instance's life: heartbeat every ``interval_s`` and act on takeovers.

    A takeover notice reaches its instance within ``interval_s`` plus one round
    trip (the 2 s promise needs ``interval_s`` well under 2 s). Redis trouble is
    the store's to log and count; the loop keeps trying at the same pace.
    """
    while True:
        try:
            notices = await store.heartbeat()
        except SharedStateUnavailable:
            notices = []
        for notice in notices:
            await on_takeover(notice)
        await trio.sleep(interval_s)


def check_settings(settings: SharedStateSettings) -> None:
    """REDIS_URL must be a URL redis-py can open; said at startup, not at first use."""
    url = settings.REDIS_URL
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"REDIS_URL: expected redis://host:port[/db], rediss://... or unix:///path "
            f"(got {url[:60]!r})"
        )
