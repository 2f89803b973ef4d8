"""``start_session``, step by step: validate, resume or admit, choose, attach.

:func:`start_session` is the whole answer to one ``start_session``; each step
is a small function below. Three ways lead to a running session:

* the same session again on its connection: new sources join, confirmed;
* a resume (protocol.md "Resume"): the registry hands the record over from a
  stale connection, the new run continues on the same timelines, and finals
  kept while detached follow ``session_started``;
* a new session: admitted against the limits, its provider chosen and its
  backend started, registered, attached.

In cluster mode (``REDIS_URL``) the shared store admits and resumes instead
(:func:`_start_clustered`); when it is unreachable, this instance's own state
and limits decide, as without a cluster.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from . import echo
from . import protocol as p
from .cluster import Cluster, SharedStateUnavailable
from .errors import ConfigError, ProviderError
from .languages import UnsupportedLanguage
from .observability.logs import event, session_id_var
from .providers.base import ProviderBackend, check_language
from .providers.registry import PROVIDERS
from .session import Session
from .store import hooks as store  # transcript record (speakflow.store)

if TYPE_CHECKING:
    from .connection import Connection
    from .registry import Registry

log = logging.getLogger(__name__)


async def start_session(conn: Connection, msg: p.StartSession) -> None:
    """Carry out ``msg`` on ``conn``; a refusal raises the client's answer."""
    echo_mode = validate(conn, msg)
    active = conn.active
    if active is not None:  # the same session again (validate refused another)
        await _add_sources(conn, active, msg)
        return
    registry = conn.registry
    registry.purge_expired()
    if registry.cluster is not None and await _start_clustered(conn, msg, echo_mode):
        return
    known = registry.sessions.get(msg.session_id)
    if known is not None:
        _check_owner(known, conn.user_id)
        await resume(conn, known, msg)
        return
    await _start_new(conn, msg, echo_mode)


def validate(conn: Connection, msg: p.StartSession) -> echo.EchoMode:
    """The message's own checks (ids, user, sources, audio format); its echo mode."""
    sid = msg.session_id
    if not sid or len(sid) > 128:
        raise p.ProtocolViolation(
            p.ErrorCode.INVALID_MESSAGE, "session_id must be 1-128 characters"
        )
    if msg.user_id != conn.user_id:
        raise p.ProtocolViolation(
            p.ErrorCode.USER_MISMATCH,
            "user_id does not match the X-User-Id of this connection",
            sid,
        )
    active = conn.active
    if active is not None and active.id != sid:
        raise p.ProtocolViolation(
            p.ErrorCode.SESSION_ACTIVE,
            f"session {active.id!r} is active on this connection; stop it first",
            sid,
        )
    if not msg.sources or len(set(msg.sources)) != len(msg.sources):
        raise p.ProtocolViolation(
            p.ErrorCode.INVALID_MESSAGE,
            "sources must be a non-empty list of distinct source names",
            sid,
        )
    for name in msg.sources:
        p.check_source(name, sid)
    p.check_audio_config(msg.audio_config)
    return echo.mode(conn.settings.ECHO_CANCELLATION, msg.echo_cancellation, sid)


def _check_owner(session: Session, user_id: str) -> None:
    if session.user_id != user_id:
        raise p.ProtocolViolation(
            p.ErrorCode.USER_MISMATCH, "this session belongs to another user", session.id
        )


async def _add_sources(conn: Connection, session: Session, msg: p.StartSession) -> None:
    for name in msg.sources:
        if name not in session.sources:
            session.add_source(name)
    await conn.send(
        p.SessionStarted(session.id, provider=session.provider, sources=list(session.sources))
    )


async def _start_new(conn: Connection, msg: p.StartSession, echo_mode: echo.EchoMode) -> None:
    registry, sid = conn.registry, msg.session_id
    registry.check_limits(sid, conn.user_id)
    # Admission is atomic: the slot is held from the check through the awaits
    # below (the limits count it), and given back if the start fails.
    registry.starting[sid] = conn.user_id
    try:
        provider = choose_provider(registry, msg)
        await conn.wait_stopped()  # keep session_ended before session_started
        session = await make_session(registry, msg, conn.user_id, provider)
        if sid in registry.sessions:  # raced with another connection while we waited
            raise p.ProtocolViolation(
                p.ErrorCode.SESSION_ACTIVE, "this session is active on another connection", sid
            )
        registry.register(session)
        store.started(registry, session)  # store: the session's record
    finally:
        del registry.starting[sid]
    session.echo = echo.gate(echo_mode, msg.sources, registry.metrics)  # echo hook
    await conn.take(session)
    for name in msg.sources:
        session.add_source(name)
    await conn.send(p.SessionStarted(sid, provider=provider, sources=list(msg.sources)))
    session_id_var.set(sid)  # the reader's lines now belong to this session
    event(
        log,
        "session.start",
        "session started",
        provider=provider,
        sources=",".join(msg.sources),
        language=p.clip(session.language or "default"),  # None: the provider's default
    )


async def resume(conn: Connection, session: Session, msg: p.StartSession) -> None:
    """protocol.md "Resume": same user, same id: continue on the same timelines.

    Finals produced while no client was attached are delivered right after
    ``session_started``.
    """
    await conn.registry.hand_over(session, conn)
    await conn.wait_stopped()
    session.new_run()
    session.resumes += 1
    for source in session.sources.values():
        # the client replays what it had not seen confirmed: already received
        source.replaying_until = source.last_timestamp
    await conn.take(session)
    session.restart_sources(msg.sources)
    await conn.send(
        p.SessionStarted(
            session.id, provider=session.provider, sources=list(session.sources), resumed=True
        )
    )
    session_id_var.set(session.id)
    pending = list(session.undelivered)
    session.undelivered.clear()
    for text in pending:
        await conn.send_raw(text)
    event(log, "session.resume", "session resumed", delivered=len(pending), resumes=session.resumes)


def choose_provider(registry: Registry, msg: p.StartSession) -> str:
    wanted = msg.provider
    if not wanted or not registry.settings.ALLOW_PROVIDER_OVERRIDE:
        return registry.default_provider
    if wanted not in PROVIDERS:
        raise p.ProtocolViolation(
            p.ErrorCode.PROVIDER_ERROR,
            f"unknown provider {wanted[:40]!r}; valid: {', '.join(sorted(PROVIDERS))}",
            msg.session_id,
        )
    return wanted


async def make_session(
    registry: Registry, msg: p.StartSession, user_id: str, provider: str
) -> Session:
    """A new session's object: its backend started, its language checked."""
    sid = msg.session_id
    backend = await _backend(registry, provider, sid)
    try:  # refuse a language the provider cannot take, before it reaches a model
        check_language(backend, msg.language or None)
    except UnsupportedLanguage as err:
        raise p.ProtocolViolation(p.ErrorCode(err.code), err.message, sid) from None
    return Session(msg, user_id, provider, backend, msg.language or None, registry)


async def _backend(registry: Registry, provider: str, sid: str) -> ProviderBackend:
    """The started backend, or the client's answer when it cannot be had: a
    provider named in start_session that this server has no settings for is
    the client's ``provider_error``, not a bug of ours (and no traceback)."""
    try:
        return await registry.backend(provider)
    except ConfigError as err:
        event(
            log,
            "provider.unconfigured",
            f"start_session named provider {provider} which is not configured: {err}",
            logging.WARNING,
        )
        raise p.ProtocolViolation(
            p.ErrorCode.PROVIDER_ERROR,
            f"provider {provider!r} is not configured on this server",
            sid,
        ) from None
    except ProviderError as err:
        event(log, "provider.error", str(err), logging.WARNING, code=err.code)
        raise p.ProtocolViolation(p.ErrorCode(err.code), str(err), sid) from None


# ---------------------------------------------------------------------- cluster mode


async def _start_clustered(conn: Connection, msg: p.StartSession, echo_mode: echo.EchoMode) -> bool:
    """Cluster mode: start or resume through the shared store (speakflow.cluster).

    The store admits atomically against the cluster-wide limits, or resumes
    the session wherever it was (newest connection wins: a live previous
    owner hands off first). False: the store is unreachable, and the caller
    goes on with this instance's own state and limits.
    """
    registry = conn.registry
    cluster = registry.cluster
    assert cluster is not None
    sid, settings = msg.session_id, registry.settings
    registry.refuse_if_draining(sid)
    local = registry.sessions.get(sid)
    if local is not None:
        _check_owner(local, conn.user_id)
    if sid in registry.starting:
        raise p.ProtocolViolation(
            p.ErrorCode.SESSION_ACTIVE,
            "this session is being started on another connection",
            sid,
        )
    if local is not None and local.outbox is not None and local.outbox is not conn:
        await local.outbox.give_up(local)  # newest connection wins; flushed into the store
    if local is not None:  # a run of ours still flushing: its finals go in first
        with trio.move_on_after(settings.PROVIDER_RESPONSE_TIMEOUT + 1):
            await local.finished.wait()
    provider = choose_provider(registry, msg)
    registry.starting[sid] = conn.user_id
    try:
        try:
            opened = await cluster.open(sid, conn.user_id, provider, msg.language or None)
        except SharedStateUnavailable:
            return False
        for gone in opened.evicted:  # gave way at a limit, cluster-wide
            old = registry.sessions.get(gone)
            if old is not None and not old.attached and old.finished.is_set():
                registry.forget(old)
        _check_opened(opened, settings.MAX_SESSIONS_PER_USER, settings.MAX_SESSIONS, sid)
        try:
            session = await _clustered_session(conn, cluster, msg, opened, local, provider)
        except BaseException:
            await cluster.release(sid, opened.epoch)
            raise
        if local is not None and opened.status == "new":  # the store had lost it
            local.cluster, local.epoch = cluster, opened.epoch
            await resume(conn, local, msg)
            return True
        assert session is not None
        registry.register(session)
        if opened.status == "new":
            store.started(registry, session)  # store: the session's record
    finally:
        del registry.starting[sid]
    if local is not None and local is not session:
        with trio.move_on_after(settings.PROVIDER_RESPONSE_TIMEOUT + 1):
            await local.finished.wait()  # a stale copy of ours: its run is over
    await conn.wait_stopped()  # keep session_ended before session_started
    if session.echo is None:  # echo hook (a session rebuilt from the store has none)
        sources = list(session.sources) or msg.sources
        session.echo = echo.gate(echo_mode, sources, registry.metrics)
    await conn.take(session)
    session.restart_sources(msg.sources)
    resumed = opened.status == "resumed"
    await conn.send(
        p.SessionStarted(
            sid, provider=session.provider, sources=list(session.sources), resumed=resumed
        )
    )
    session_id_var.set(sid)
    delivered = 0
    if resumed:
        session.resumes += 1
        try:
            pending = await cluster.pending(session, msg.finals_through)
        except SharedStateUnavailable:
            pending = list(session.undelivered)
            session.undelivered.clear()
        for text in pending:
            await conn.send_raw(text)
        delivered = len(pending)
    event(
        log,
        "session.resume" if resumed else "session.start",
        "session resumed" if resumed else "session started",
        provider=session.provider,
        epoch=opened.epoch,
        previous_owner=opened.previous_owner,
        delivered=delivered,
    )
    return True


def _check_opened(opened: Any, per_user: int, total: int, sid: str) -> None:
    """The store's refusals, as the client's answers."""
    if opened.status == "user_mismatch":
        raise p.ProtocolViolation(
            p.ErrorCode.USER_MISMATCH, "this session belongs to another user", sid
        )
    if opened.status == "user_limit":
        raise p.ProtocolViolation(
            p.ErrorCode.RATE_LIMITED,
            f"user has {opened.count} active sessions; the limit is {per_user}",
            sid,
        )
    if opened.status == "total_limit":
        raise p.ProtocolViolation(
            p.ErrorCode.RATE_LIMITED, f"server is at its limit of {total} sessions", sid
        )


async def _clustered_session(
    conn: Connection,
    cluster: Cluster,
    msg: p.StartSession,
    opened: Any,
    local: Session | None,
    provider: str,
) -> Session | None:
    """The session object for an admitted start: new, or rebuilt from the store's
    record (after the previous owner's handoff) on its timelines. None: the
    store had forgotten a record this instance still holds (resumed from memory)."""
    sid, registry = msg.session_id, conn.registry
    if opened.status == "new":
        if local is not None:
            return None
        session = await make_session(registry, msg, conn.user_id, provider)
        session.cluster, session.epoch = cluster, opened.epoch
        return session
    if local is not None and local.epoch is not None and local.epoch == opened.epoch - 1:
        record = cluster.record(local)  # ours until now: memory has all of it
    else:
        try:
            record = await cluster.record_after(opened, sid)
        except SharedStateUnavailable:
            record = opened.record
    assert record is not None
    name = record.provider or provider
    backend = await _backend(registry, name, sid)
    session = Session(msg, conn.user_id, name, backend, record.language, registry)
    session.cluster, session.epoch = cluster, opened.epoch
    if local is not None:  # finals kept here while the store was away
        session.undelivered.extend(local.undelivered)
    for source_name, timeline in record.sources.items():
        cluster.restore(session, session.new_source(source_name), timeline)
    cluster.restore_clock(session, record)
    return session
