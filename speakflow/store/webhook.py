"""TRANSCRIPT_WEBHOOK_URL: tell someone a session's transcript is complete.

When a session ends (stopped, or its resume window expired) its metadata and
merged transcript are POSTed as JSON. The receiver checks::

    X-SpeakFlow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

and refuses a ``t`` too far from its own clock (we suggest 5 minutes), so a
captured request cannot be replayed later. Each attempt is signed afresh.
``X-SpeakFlow-Delivery`` is one id per session end, the same on every retry,
so a receiver that answered 2xx but whose answer was lost can drop the
repeat. Failures (connection errors, timeouts, non-2xx answers) are retried
with exponential backoff (tenacity); a 2xx ends the delivery, so each end is
delivered at most once per success.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import trio
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from ..errors import DeliveryFailed
from ..observability.statistics import WebhookStatistics

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-SpeakFlow-Signature"
DELIVERY_HEADER = "X-SpeakFlow-Delivery"
EVENT_HEADER = "X-SpeakFlow-Event"
EVENT = "session.ended"
#: a receiver should refuse signatures older (or newer) than this
TOLERANCE_S = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-SpeakFlow-Signature value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str, header: str, body: bytes, now: float, tolerance: float = TOLERANCE_S
) -> bool:
    """What a receiver does (used by the tests; receivers can copy it)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body)
    return hmac.compare_digest(expected, header)


#: builds the body of one delivery (reads the record); None: nothing to send
Payload = Callable[[], Awaitable[bytes | None]]


class WebhookSender:
    """A bounded queue of deliveries and a few tasks that send them."""

    WORKERS = 4
    QUEUE = 1000

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        attempts: int = 8,
        initial_s: float = 0.5,
        max_wait_s: float = 60.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.secret = secret
        self.attempts = attempts
        self.initial_s = initial_s
        self.max_wait_s = max_wait_s
        self.timeout_s = timeout_s
        self._send, self._recv = trio.open_memory_channel[tuple[str, Payload]](self.QUEUE)
        self.delivered = 0
        self.failed = 0
        self.retries = 0
        self.dropped = 0

    def submit(self, payload: Payload) -> None:
        try:
            self._send.send_nowait((uuid.uuid4().hex, payload))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.dropped += 1
            log.error(
                "webhook queue full: a session end will not be posted",
                extra={"event": "webhook.dropped", "fields": {}},
            )

    def close(self) -> None:
        """No more deliveries; the workers finish the queued ones."""
        self._send.close()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client, trio.open_nursery() as n:
            for _ in range(self.WORKERS):
                n.start_soon(self._worker, client)

    async def _worker(self, client: httpx.AsyncClient) -> None:
        async for delivery, payload in self._recv.clone():
            try:
                body = await payload()
            except Exception:
                log.exception("webhook payload could not be built")
                self.failed += 1
                continue
            if body is not None:
                await self._deliver(client, delivery, body)

    async def _deliver(self, client: httpx.AsyncClient, delivery: str, body: bytes) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.initial_s, max=self.max_wait_s),
            retry=retry_if_exception_type(DeliveryFailed),
            sleep=trio.sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self.retries += 1
                    await self._post(client, delivery, body)
        except RetryError as err:
            self.failed += 1
            log.error(
                "webhook delivery %s failed after %d attempts: %s",
                delivery,
                self.attempts,
                err.last_attempt.exception(),
                extra={"event": "webhook.failed", "fields": {"delivery": delivery}},
            )
            return
        self.delivered += 1
        log.info(
            "webhook delivered",
            extra={"event": "webhook.delivered", "fields": {"delivery": delivery}},
        )

    async def _post(self, client: httpx.AsyncClient, delivery: str, body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, int(time.time()), body),
            DELIVERY_HEADER: delivery,
            EVENT_HEADER: EVENT,
        }
        try:
            response = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as err:
            log.warning("webhook attempt failed: %s", type(err).__name__)
            raise DeliveryFailed(f"{type(err).__name__}: {err}") from None
        if not 200 <= response.status_code < 300:
            log.warning("webhook attempt failed: HTTP %d", response.status_code)
            raise DeliveryFailed(f"HTTP {response.status_code}")

    def statistics(self) -> WebhookStatistics:
        return WebhookStatistics(
            delivered=self.delivered, failed=self.failed, retries=self.retries, dropped=self.dropped
        )
