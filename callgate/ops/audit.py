"""The audit trail: every decision as one structured log line and one entry in a Redis stream.

The stream write never delays a decision: entries go into a bounded queue that one task drains in
pipelined batches. When Redis is down, entries wait in the queue (up to ``QUEUE_LIMIT``; beyond that the
oldest are dropped and counted), and the log line is always written. When ``serve`` stops, the queue gets
``FLUSH_WITHIN`` seconds and no retry; what is left then is counted in the log (each of those decisions has
its own log line).

Stream: ``cg:{site}:audit``, trimmed to about ``STREAM_MAXLEN`` entries and expiring ``STREAM_TTL`` after
the last decision (every key has a TTL). A batch is one pipeline on that one key (no transaction), so on
a Redis Cluster it goes to the master that holds the site's slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any

from callgate.asterisk.events import Decided, Event
from callgate.core.decision import Decision
from callgate.core.keys import AUDIT, site_prefix
from callgate.ops.waits import first_done
from callgate.store.connect import Client
from callgate.store.redis import REDIS_ERRORS

log = logging.getLogger("callgate.audit")

QUEUE_LIMIT = 100_000
STREAM_MAXLEN = 1_000_000
STREAM_TTL = 90 * 86400
BATCH = 500
FLUSH_WITHIN = 2.0  # seconds the queue may take to reach the stream once serve stops


def entry(
    decision: Decision, channel_id: str, elapsed_ms: float, endpoint: str = "", by: str = ""
) -> dict[str, str]:
    """The fields of one decision, as strings (the stream's and the log line's shape).

    ``extension`` is whom the call is charged to; ``origin`` who caused it (``dialled``: its phone),
    ``via`` the DID or trunk the dialplan says brought it in, ``endpoint`` the PJSIP endpoint of the
    channel (for a forward, often the inbound trunk's), ``by`` the channel that transferred a transfer's
    leg."""
    return {
        "at": decision.at.isoformat(),
        "call_id": decision.call_id,
        "reservation": decision.reservation,
        "channel": channel_id,
        "extension": decision.extension,
        "origin": decision.origin.value,
        "via": decision.via,
        "endpoint": endpoint,
        "by": by,
        "profile": decision.profile or "",
        "dialled": decision.number.dialled,
        "number": decision.number.e164 or "",
        "country": decision.number.country or "",
        "verdict": decision.verdict.value,
        "reason": decision.reason.value,
        "rule": decision.rule,
        "allowed_seconds": str(decision.allowed_seconds),
        "reserved": str(decision.reserved),
        "replayed": "1" if decision.replayed else "0",
        "policy": decision.policy_digest[:12],
        "policy_version": str(decision.policy_revision),
        "reported": ",".join(f"{r.rule}:{r.reason}" for r in decision.reported),
        "ms": f"{elapsed_ms:.2f}",
    }


class Audit:
    """Logs every decision of the gate's event stream and streams it to Redis."""

    def __init__(self, client: Client | None, site: str) -> None:
        self.client = client
        self.key = site_prefix(site) + AUDIT
        self.queue: deque[dict[str, str]] = deque(maxlen=QUEUE_LIMIT)
        self.wake = asyncio.Event()
        self.dropped = 0

    def on_event(self, event: Event) -> None:
        """An :class:`callgate.asterisk.events.Events` subscriber: records each :class:`Decided`."""
        if isinstance(event, Decided):
            self.record(
                event.decision, event.channel_id, event.seconds * 1000, event.endpoint, event.by
            )

    def record(
        self,
        decision: Decision,
        channel_id: str,
        elapsed_ms: float,
        endpoint: str = "",
        by: str = "",
    ) -> None:
        fields = entry(decision, channel_id, elapsed_ms, endpoint, by)
        log.info("decision %s", json.dumps(fields), extra={"decision": fields})
        if self.client is None:
            return
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(fields)
        self.wake.set()

    async def run(self, stop: asyncio.Event, *, within: float = FLUSH_WITHIN) -> None:
        """Write queued entries until ``stop`` is set and the queue is empty; once stopping, for at most
        ``within`` seconds and until a write fails. What is then left is counted in the log."""
        try:
            await self._drain(stop, within)
        finally:  # also when serve cuts this task short
            if stop.is_set() and self.queue:
                left = len(self.queue)
                log.warning(
                    "stopping: %d audit %s not written to the Redis stream; each decision is in this "
                    "log", left, "entry" if left == 1 else "entries",
                )  # fmt: skip

    async def _drain(self, stop: asyncio.Event, within: float) -> None:
        deadline: float | None = None
        while not (stop.is_set() and not self.queue):
            if not self.queue:
                self.wake.clear()
                await first_done(self.wake.wait(), stop.wait())
                continue
            if stop.is_set() and deadline is None:
                deadline = asyncio.get_running_loop().time() + within
            batch = [self.queue.popleft() for _ in range(min(BATCH, len(self.queue)))]
            try:
                async with asyncio.timeout_at(deadline):
                    await self._write(batch)
            except REDIS_ERRORS as exc:  # OSError: TimeoutError too
                self.queue.extendleft(reversed(batch))
                if stop.is_set():
                    return
                log.warning(
                    "audit stream unavailable (%r); %d entries queued", exc, len(self.queue)
                )
                await first_done(asyncio.sleep(1.0), stop.wait())

    async def _write(self, batch: list[dict[str, str]]) -> None:
        assert self.client is not None
        pipe = self.client.pipeline(transaction=False)
        for fields in batch:
            data: Any = fields
            pipe.xadd(self.key, data, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.expire(self.key, STREAM_TTL)
        await pipe.execute()
