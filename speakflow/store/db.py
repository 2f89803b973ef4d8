"""Blocking database calls of the transcript record (SQLAlchemy Core).

Every method here blocks and is called from a worker thread
(``trio.to_thread.run_sync``), never from the event loop. Writes come in
batches from :mod:`speakflow.store.writer`; reads serve the HTTP API.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, and_, create_engine, delete, event, func, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from .schema import finals, migrate, sessions

log = logging.getLogger(__name__)

OpKind = Literal["session", "update", "final"]


@dataclass(slots=True)
class Op:
    """One write: a new session row, an update of one (``values`` a dict), or a final
    (``values`` a tuple in :data:`FINAL_COLUMNS` order: the hot path builds no dict)."""

    kind: OpKind
    record_id: str
    values: Any


#: the columns of a final's insert, in the order of its Op's tuple
FINAL_COLUMNS = tuple(c.name for c in finals.columns if c.name != "id")


def is_transient(err: BaseException) -> bool:
    """A failure that waiting may cure (database down, locked, connection lost),
    as opposed to a row the database will never take."""
    if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
        return True
    return isinstance(
        err, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError | OSError
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")  # ON DELETE CASCADE of finals
    cur.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


class Database:
    """The store's engine and its queries. ``open`` creates and migrates the schema."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Finals go in through the driver's executemany: SQLAlchemy's per-row parameter
        # processing was over half the store's CPU under the bench's one-final-per-chunk load.
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._insert_finals = (
            f"INSERT INTO {finals.name} ({', '.join(FINAL_COLUMNS)}) "
            f"VALUES ({', '.join(mark for _ in FINAL_COLUMNS)})"
        )

    @classmethod
    def open(cls, url: str) -> Database:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 5})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(
                url,
                pool_pre_ping=True,
                pool_size=4,
                max_overflow=8,
                pool_timeout=5,
                connect_args={"connect_timeout": 5},
            )
        db = cls(engine)
        with engine.begin() as conn:
            migrate(conn)
        return db

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ writes

    def write(self, ops: list[Op]) -> None:
        """All of ``ops`` in one transaction: rows first, finals, then updates."""
        rows = [op.values for op in ops if op.kind == "session"]
        lines = [op.values for op in ops if op.kind == "final"]
        with self.engine.begin() as conn:
            if rows:
                conn.execute(sessions.insert(), rows)
            if lines:
                conn.exec_driver_sql(self._insert_finals, lines)
            for op in ops:
                if op.kind == "update":
                    conn.execute(
                        update(sessions).where(sessions.c.id == op.record_id).values(op.values)
                    )

    def write_each(self, ops: list[Op]) -> int:
        """One transaction per op, for a batch the database refused as a whole:
        the rows it takes are kept. Returns how many it refused (logged)."""
        refused = 0
        for op in ops:
            try:
                self.write([op])
            except sa_exc.SQLAlchemyError as err:
                if is_transient(err):
                    raise
                refused += 1
                log.warning(
                    "transcript store refused a %s of record %s: %s",
                    op.kind,
                    op.record_id,
                    type(err).__name__,
                    extra={"event": "store.refused", "fields": {"record_id": op.record_id}},
                )
        return refused

    def delete(self, user_id: str, key: str) -> str | None:
        """Delete the caller's record ``key`` (record id or session id); its id, or None."""
        with self.engine.begin() as conn:
            row = self._find(conn, user_id, key)
            if row is None:
                return None
            conn.execute(delete(finals).where(finals.c.record_id == row["id"]))
            conn.execute(delete(sessions).where(sessions.c.id == row["id"]))
            return str(row["id"])

    def purge_before(self, cutoff: float) -> int:
        """Retention: delete every session created before ``cutoff`` (epoch s)."""
        with self.engine.begin() as conn:
            old = select(sessions.c.id).where(sessions.c.created_at < cutoff)
            conn.execute(delete(finals).where(finals.c.record_id.in_(old)))
            result = conn.execute(delete(sessions).where(sessions.c.created_at < cutoff))
            return int(result.rowcount or 0)

    # ------------------------------------------------------------------ reads

    def list_sessions(
        self, user_id: str, limit: int, before: tuple[float, str] | None = None
    ) -> list[dict[str, Any]]:
        """The user's sessions, newest first; ``before`` is the last row of the previous page."""
        count = (
            select(func.count())
            .where(finals.c.record_id == sessions.c.id)
            .correlate(sessions)
            .scalar_subquery()
        )
        query = select(sessions, count.label("finals")).where(sessions.c.user_id == user_id)
        if before is not None:
            created, rid = before
            query = query.where(
                or_(
                    sessions.c.created_at < created,
                    and_(sessions.c.created_at == created, sessions.c.id < rid),
                )
            )
        query = query.order_by(sessions.c.created_at.desc(), sessions.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_session(dict(r._mapping)) for r in conn.execute(query)]

    def get_session(self, user_id: str, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = self._find(conn, user_id, key)
            if row is None:
                return None
            n = conn.execute(
                select(func.count()).where(finals.c.record_id == row["id"])
            ).scalar_one()
            return _session({**row, "finals": n})

    def finals_of(self, record_id: str) -> list[dict[str, Any]]:
        query = select(finals).where(finals.c.record_id == record_id).order_by(finals.c.seq)
        with self.engine.connect() as conn:
            out = []
            for r in conn.execute(query):
                row = dict(r._mapping)
                row["words"] = json.loads(row["words"]) if row["words"] else None
                out.append(row)
            return out

    @staticmethod
    def _find(conn: Any, user_id: str, key: str) -> dict[str, Any] | None:
        """The user's record with id ``key``, else their newest with session id ``key``."""
        query = (
            select(sessions)
            .where(
                sessions.c.user_id == user_id,
                or_(sessions.c.id == key, sessions.c.session_id == key),
            )
            .order_by((sessions.c.id == key).desc(), sessions.c.created_at.desc())
            .limit(1)
        )
        row = conn.execute(query).first()
        return dict(row._mapping) if row is not None else None


def _session(row: dict[str, Any]) -> dict[str, Any]:
    row["providers"] = json.loads(row["providers"])
    row["sources"] = json.loads(row["sources"])
    return row
