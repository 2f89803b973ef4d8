"""Per-source path of transcripts through the processor.

Partials go straight out. Finals queue for one worker task per source that
processes them one at a time, so a slow processor (an LLM) delays neither the
partials of its own source nor anything of other sources, and finals of a
source leave in the order the provider produced them. The queue is bounded:
when it is full the provider's ``emit`` waits, as it would for a slow socket.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
import trio

from .. import protocol as p
from . import TIMEOUT, TranscriptProcessor, run_processor
from .level import LevelMeter

log = logging.getLogger(__name__)

Send = Callable[[p.Transcript], Awaitable[None]]

#: Seconds to hand pending finals to the socket when the source is torn down
#: (session flush deadline, disconnect) before the processor got to them.
_SALVAGE_SECONDS = 1.0


class FinalsPipeline:
    """What a source's ``emit`` sends through; see the module docstring."""

    __slots__ = ("_in", "_level", "_out", "_processor", "_send")

    def __init__(
        self,
        processor: TranscriptProcessor | None,
        send: Send,
        level: LevelMeter | None = None,
        capacity: int = 64,
    ) -> None:
        self._processor = processor
        self._send = send
        self._level = level
        self._in, self._out = trio.open_memory_channel[p.Transcript](capacity)

    @classmethod
    def start(
        cls,
        processor: TranscriptProcessor | None,
        nursery: trio.Nursery | None,
        send: Send,
        level: LevelMeter | None = None,
    ) -> FinalsPipeline:
        """A pipeline whose worker runs in ``nursery``; a pass-through when
        ``processor`` is ``None``. Call :meth:`close` when the provider is done."""
        pipeline = cls(processor, send, level)
        if processor is not None:
            assert nursery is not None
            nursery.start_soon(pipeline.run)
        return pipeline

    async def send(self, msg: p.Transcript) -> None:
        if self._processor is None or not msg.is_final:
            await self._send(msg)
        else:
            await self._in.send(msg)

    def close(self) -> None:
        """No more transcripts: the worker sends what is queued and returns."""
        self._in.close()

    async def run(self) -> None:
        processor = self._processor
        assert processor is not None
        async with self._out:
            current: p.Transcript | None = None
            try:
                async for current in self._out:
                    await self._send(await self._process(processor, current))
                    current = None
            except trio.Cancelled:
                await self._salvage(current)
                raise
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the connection is gone: nobody to send to

    async def _process(self, processor: TranscriptProcessor, msg: p.Transcript) -> p.Transcript:
        level = None
        if processor.needs_level and self._level is not None:
            level = self._level.peak_dbfs(msg.start_time, msg.end_time)
        out = await run_processor(processor, msg.text, level_dbfs=level, language=msg.language)
        return msgspec.structs.replace(msg, text=out.text, raw_text=msg.text, processing=out.flag)

    async def _salvage(self, current: p.Transcript | None) -> None:
        """Cancelled with finals unprocessed: send them raw (flagged) rather than lose them."""
        pending = [] if current is None else [current]
        while True:
            try:
                pending.append(self._out.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        if not pending:
            return
        log.warning("sending %d final(s) unprocessed: the source is being torn down", len(pending))
        with trio.CancelScope(shield=True), trio.move_on_after(_SALVAGE_SECONDS):
            for msg in pending:
                await self._send(
                    msgspec.structs.replace(msg, raw_text=msg.text, processing=TIMEOUT)
                )
