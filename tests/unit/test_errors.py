"""The exception tree drawn in speakflow/errors.py is the tree in the code, and the
exception-group helpers find what the four former policies found."""

from __future__ import annotations

import re
import socket

import pytest
import trio
import trio.lowlevel

from speakflow import errors
from speakflow.errors import ConfigError, ErrorCode, ProviderError, ProviderUnavailable


def drawn_tree() -> dict[str, str]:
    """Each class of the docstring's drawing -> the class drawn as its parent."""
    doc = errors.__doc__ or ""
    lines = doc.split("The tree::", 1)[1].split("\n\n", 2)[1].splitlines()
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in lines:
        m = re.match(r"^([ │]*)(?:[├└]── )?([A-Z]\w+)\b", line)
        if m is None:
            continue
        depth, name = m.start(2), m.group(2)  # the column the name starts at
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def test_the_drawn_tree_is_the_class_tree() -> None:
    parents = drawn_tree()
    assert len(parents) >= 17  # the whole drawing was read
    drawn = {"SpeakflowError", *parents}
    for name, parent in parents.items():
        cls, base = getattr(errors, name), getattr(errors, parent)
        assert base in cls.__bases__, f"{name} is drawn under {parent}"
    # every exception the module defines is in the drawing, and exported
    defined = {
        n
        for n, v in vars(errors).items()
        if isinstance(v, type) and issubclass(v, Exception) and v.__module__ == errors.__name__
    }
    assert defined == drawn
    assert drawn <= set(errors.__all__)


def test_old_homes_re_export_the_same_classes() -> None:
    from speakflow import _patches, languages, protocol, resilience
    from speakflow.providers.aws_transcribe import codec, signing
    from speakflow.shared_state import base
    from speakflow.store import webhook

    assert protocol.ProtocolViolation is errors.ProtocolViolation
    assert protocol.ErrorCode is errors.ErrorCode
    assert resilience._Stalled is errors.StreamStalled
    assert signing.SignatureError is errors.SignatureError
    assert codec.FrameError is errors.FrameError and issubclass(codec.FrameError, ValueError)
    assert base.SharedStateUnavailable is errors.SharedStateUnavailable
    assert base.StaleOwner is errors.StaleOwner
    assert webhook.DeliveryFailed is errors.DeliveryFailed
    assert _patches.PatchError is errors.PatchError
    assert languages.UnsupportedLanguage is errors.UnsupportedLanguage


def test_provider_error_codes_are_enum_members() -> None:
    assert errors.ProviderOverloaded.code is ErrorCode.RATE_LIMITED
    assert errors.ProviderUnavailable.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert errors.ProviderRejected.code is ErrorCode.PROVIDER_ERROR
    violation = errors.ProtocolViolation(ErrorCode.UNKNOWN_SOURCE, "nope", "s1")
    assert isinstance(violation, errors.ClientError)
    assert (violation.code, violation.message, violation.session_id) == (
        "unknown_source",
        "nope",
        "s1",
    )


async def real_cancelled() -> trio.Cancelled:
    """A Cancelled as Trio raises it (it has no public constructor)."""
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled as exc:
            return exc
    raise AssertionError("not cancelled")


async def test_leaves_and_first_real_skip_cancelled_siblings() -> None:
    cancelled = await real_cancelled()
    lost = ProviderUnavailable("deepgram", "gone")
    other = OSError("closed socket")
    group = BaseExceptionGroup("", [cancelled, BaseExceptionGroup("", [other, lost])])
    assert errors.leaves(group) == [cancelled, other, lost]
    assert errors.leaves(group, cancelled=False) == [other, lost]
    assert errors.first_real(group) is other
    assert errors.first_real(group, prefer=ProviderError) is lost
    assert errors.first_real(BaseExceptionGroup("", [cancelled])) is None
    assert errors.first_real(other) is other and errors.leaves(other) == [other]


async def test_task_nursery_raises_the_one_real_error_of_a_real_nursery() -> None:
    """The providers' shells: one failing task, its sibling cancelled -> that error."""
    from speakflow.providers._ws import single_error, task_nursery

    async def fail() -> None:
        raise ProviderUnavailable("deepgram", "reader lost the socket")

    with trio.fail_after(5), pytest.raises(ProviderUnavailable, match="reader lost"):
        async with task_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(fail)
    two = ExceptionGroup("", [ValueError("a"), KeyError("b")])
    assert single_error(two) is two  # several real errors and no preference: the group
    typed = ProviderUnavailable("aws_transcribe", "x")
    assert single_error(ExceptionGroup("", [ValueError("a"), typed]), ProviderError) is typed


def test_find_searches_groups_and_causes() -> None:
    """The CLI: Hypercorn re-raises our ConfigError as its own, inside task groups."""
    ours = ConfigError("WHISPER_MODEL: no such model")
    try:
        try:
            raise ours
        except ConfigError as err:
            raise RuntimeError("lifespan startup failed") from err
    except RuntimeError as wrapped:
        outer = BaseExceptionGroup("", [ValueError("noise"), wrapped])
    assert errors.find(outer, ConfigError) is ours
    assert errors.find(outer, KeyError) is None
    taken = OSError(98, "Address already in use")
    group = ExceptionGroup("", [OSError(2, "other"), taken])
    assert errors.find(group, OSError, lambda e: e.errno == 98) is taken
    gai = socket.gaierror(-2, "Name or service not known")
    assert errors.find(ExceptionGroup("", [gai]), OSError, lambda e: e.errno == 98) is None
    # a cycle of causes ends at the depth bound
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert errors.find(a, KeyError) is None
