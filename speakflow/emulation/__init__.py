"""Vendor emulators: each vendor's real streaming wire, served on loopback.

The cloud vendors can't be reached offline (nor from CI), so each one gets an
emulator that speaks its wire protocol: auth check, query validation, message
shapes, close codes, idle timeouts. Users develop clients against them and
our tests use them. What every vendor shares lives here:

=============  ==============================================================
``server``     the trio-websocket server runner, the connection log, the
               outbox (slow/stall), the close and the TCP cut
``vendor``     base classes for a vendor and its accepted connection: the
               engine task, audio faults, the orderly end
``faults``     ``--fault`` parsing and per-connection bookkeeping
``engines``    what a vendor reads from an engine (hypotheses, onsets) and
               ``echo``; ``whisper_engine``: real text from the local model,
               batched across connections
=============  ==============================================================

The ``speakflow emulate <vendor>`` command is a tool:
:mod:`speakflow.tools.emulate`.

A vendor is one module implementing :class:`~speakflow.emulation.server.Vendor`
(by subclassing :class:`~speakflow.emulation.vendor.EngineVendor` and
:class:`~speakflow.emulation.vendor.EngineConnection`) and one entry in
:data:`EMULATORS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engines import Engine
    from .server import Vendor

    #: a vendor's emulator class: (engine, idle_timeout=, credentials...) -> Vendor
    VendorFactory = Callable[..., Vendor]

#: ``--engine`` choices (``speakflow.emulation.engines``)
ENGINES = ("whisper", "echo")


def create_engine(name: str, echo_final_every: int = 1, **whisper_options: object) -> Engine:
    """``whisper`` or ``echo`` by name (the emulators' ``--engine``).

    The engine's module is imported only when chosen: ``echo`` runs without
    loading the Whisper stack.
    """
    if name == "echo":
        from .engines import EchoEngine

        return EchoEngine(echo_final_every)
    if name == "whisper":
        from .whisper_engine import LocalWhisperEngine

        return LocalWhisperEngine(**whisper_options)  # type: ignore[arg-type]
    raise ValueError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")


# One loader per vendor: the vendor's module is imported only when it is
# emulated, and mypy checks the reference (a renamed class fails the type check).
def _deepgram() -> VendorFactory:
    from .deepgram import DeepgramEmulator

    return DeepgramEmulator


def _assemblyai() -> VendorFactory:
    from .assemblyai import AssemblyAIEmulator

    return AssemblyAIEmulator


def _aws_transcribe() -> VendorFactory:
    from .aws_transcribe import AwsTranscribeEmulator

    return AwsTranscribeEmulator


#: vendor name -> loader of its emulator class; the class takes (engine, idle_timeout=)
#: and its vendor's credentials as keywords (api_key=; AWS: access_key=, secret_key=).
EMULATORS: dict[str, Callable[[], VendorFactory]] = {
    "deepgram": _deepgram,
    "assemblyai": _assemblyai,
    "aws_transcribe": _aws_transcribe,
}
