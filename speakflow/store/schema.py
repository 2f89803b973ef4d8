"""Tables of the transcript record and their migrations, one schema for SQLite and PostgreSQL.

Times are epoch seconds in double-precision floats rather than timestamp
columns: the two dialects then store and compare them identically, and the
API turns them into ISO 8601 at the edge. A session's record has its own id
(``id``): the client's ``session_id`` may be reused once a session ended, and
by another user, so it cannot be the key.

Migrations are numbered steps, each run once in order inside one transaction;
``speakflow_schema`` holds the number reached. Adding a column later is one
more function in :data:`MIGRATIONS`, never an edit of an earlier one.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
    text,
)

metadata = MetaData()

schema_version = Table(
    "speakflow_schema",
    metadata,
    Column("version", Integer, nullable=False),
)

sessions = Table(
    "transcript_sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("session_id", String(128), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("ended_at", Double),
    #: stopped | expired | shutdown; NULL while live or resumable
    Column("end_reason", String(16)),
    Column("language", String(32)),
    #: JSON list of every provider that produced a final (the configured one first)
    Column("providers", Text, nullable=False),
    #: JSON {source: {"audio_s": float, "first_timestamp": ms or null}}
    Column("sources", Text, nullable=False),
    Column("resumes", Integer, nullable=False),
    Index("ix_transcript_sessions_user", "user_id", "created_at"),
    Index("ix_transcript_sessions_created", "created_at"),
)

finals = Table(
    "transcript_finals",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column(
        "record_id",
        String(32),
        ForeignKey("transcript_sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    #: the final's number within its session: makes a replayed batch harmless
    Column("seq", Integer, nullable=False),
    Column("source", String(16), nullable=False),
    Column("text", Text, nullable=False),
    #: the provider's text when TRANSCRIPT_PROCESSOR ran, and its outcome flag
    Column("raw_text", Text),
    Column("processing", String(16)),
    Column("changed", Boolean, nullable=False),
    Column("start_time", Double, nullable=False),
    Column("end_time", Double, nullable=False),
    #: the protocol's ``timestamp``: client ms epoch at end_time
    Column("client_ts", BigInteger, nullable=False),
    Column("provider", String(32), nullable=False),
    Column("language", String(32)),
    Column("confidence", Double),
    #: JSON list of {word, start, end, confidence}, or NULL
    Column("words", Text),
    Column("segment_id", String(128)),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("record_id", "seq", name="uq_transcript_finals_seq"),
)


def _v1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[sessions, finals], checkfirst=True)


MIGRATIONS: list[Callable[[Connection], None]] = [_v1]
LATEST = len(MIGRATIONS)


def migrate(conn: Connection) -> int:
    """Bring the schema to :data:`LATEST` inside the caller's transaction; the version reached.

    On PostgreSQL an advisory lock serializes hosts starting at once, so two
    servers sharing a database never run the same step twice.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7349611)"))
    metadata.create_all(conn, tables=[schema_version], checkfirst=True)
    current = conn.execute(select(schema_version.c.version)).scalar()
    if current is None:
        conn.execute(schema_version.insert().values(version=0))
        current = 0
    if current > LATEST:
        raise RuntimeError(
            f"the transcript store has schema version {current}, newer than this "
            f"speakflow's {LATEST}: upgrade speakflow"
        )
    for step in range(current, LATEST):
        MIGRATIONS[step](conn)
        conn.execute(schema_version.update().values(version=step + 1))
    return LATEST
