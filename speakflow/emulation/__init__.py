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
``engines``    ``whisper`` (real text from the local model, batched across
               connections) and ``echo``
``cli``        ``speakflow emulate <vendor>``
=============  ==============================================================

A vendor is one module implementing :class:`~speakflow.emulation.server.Vendor`
(by subclassing :class:`~speakflow.emulation.vendor.EngineVendor` and
:class:`~speakflow.emulation.vendor.EngineConnection`) and one entry in
:data:`EMULATORS`.
"""

from __future__ import annotations

#: ``--engine`` choices (``speakflow.emulation.engines``)
ENGINES = ("whisper", "echo")

#: vendor name -> "module:factory"; the factory takes (engine, idle_timeout=) and its
#: vendor's credentials as keywords (api_key=; AWS: access_key=, secret_key=).
EMULATORS: dict[str, str] = {
    "deepgram": "speakflow.emulation.deepgram:DeepgramEmulator",
    "assemblyai": "speakflow.emulation.assemblyai:AssemblyAIEmulator",
    "aws_transcribe": "speakflow.emulation.aws_transcribe:AwsTranscribeEmulator",
}
