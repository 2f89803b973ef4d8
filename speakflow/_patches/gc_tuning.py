"""Garbage-collector settings for the long-running, latency-bound processes.

A relay process holds many long-lived objects (every session's tree) and
allocates short-lived ones on every chunk. With CPython's default young
threshold (700 allocations) the short-lived ones were scanned ~10 times a
second, survivors got promoted, and every few seconds a full collection over
all sessions' objects stopped every connection at once: 50-200 ms at 100-200
sessions, measured with a ``gc.callbacks`` probe under ``speakflow bench``.
That pause, not CPU, was what pushed the round-trip p99 past 50 ms.

Two changes fix it: everything that exists once the process has started
(modules, the app, a model's Python side) is moved out of the collector's
reach with ``gc.freeze()``, and the young threshold is raised so that almost
everything is dead before it is scanned, which makes full passes rare.
Collection still runs (reference cycles, e.g. in tracebacks, are freed).

``serve``, ``emulate`` and ``bench`` call :func:`tune_for_latency` once ready:
the emulator stands in for a vendor and the generator is the measuring
instrument, so their pauses would show up as the relay's latency.
``SPEAKFLOW_GC_FREEZE=0`` and ``SPEAKFLOW_GC_GEN0=N`` (0: CPython's default)
are there to compare.
"""

from __future__ import annotations

import gc
import os

#: Allocations between young collections (CPython's default is 700).
GEN0_THRESHOLD = 20_000


def tune_for_latency() -> None:
    """Freeze what exists now and raise the young threshold (see the module doc)."""
    if os.environ.get("SPEAKFLOW_GC_FREEZE", "1") != "0":
        gc.collect()
        gc.freeze()
    gen0 = int(os.environ.get("SPEAKFLOW_GC_GEN0", "") or GEN0_THRESHOLD)
    if gen0 > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0, gen1, gen2)
