"""The dead-letter topic: every rejected input, with why, where from, and enough to find it again.

Headers: ``reason``, ``source`` (``topic/partition@offset``), ``rejected_at``, ``size`` and
``sha256`` of the original bytes. A copy the broker would refuse (over ``max_bytes``) is cut to
``max_bytes`` and marked ``truncated: true``; the whole bytes stay in the ``rejected_events``
table, found by ``sha256`` or ``source``. Sending retries until the broker has every copy: a
rejected input's offset is never committed before its dead letter is stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from raiwatch.core import metrics
from raiwatch.core.codec import Rejected

log = logging.getLogger("raiwatch.dlq")
T = TypeVar("T")


class Stopping(Exception):
    """The worker is stopping while dead letters are still unsent (their offsets stay uncommitted)."""


def dead_letter(
    r: Rejected, max_bytes: int, now: datetime | None = None
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of the dead-letter copy of ``r``.

    >>> value, headers = dead_letter(Rejected(b"x" * 10, "too big", "t/0@5"), max_bytes=4)
    >>> value, dict(headers)["truncated"], dict(headers)["size"]
    (b'xxxx', b'true', b'10')
    """
    headers = [
        ("reason", r.reason.encode()),
        ("source", r.source.encode()),
        ("rejected_at", (now or datetime.now(UTC)).isoformat().encode()),
        ("size", str(len(r.raw)).encode()),
        ("sha256", hashlib.sha256(r.raw).hexdigest().encode()),
    ]
    value = r.raw
    if len(value) > max_bytes:
        value = value[:max_bytes]
        headers.append(("truncated", b"true"))
    return value, headers


class DeadLetters:
    """Sends rejected inputs to ``topic``, retrying until the broker acknowledges each or ``stopping()``.

    Each attempt waits at most ``attempt_s`` (aiokafka's producer waits for a broker gone without
    end), so a stop is seen within that."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        max_bytes: int,
        stopping: Callable[[], bool],
        max_backoff_s: float = 5.0,
        attempt_s: float = 10.0,
    ):
        self.producer = producer
        self.topic = topic
        self.max_bytes = max_bytes
        self.stopping = stopping
        self.max_backoff_s = max_backoff_s
        self.attempt_s = attempt_s

    async def send(self, rejected: Sequence[Rejected], keys: Sequence[bytes | None]) -> None:
        """Store every rejection on the dead-letter topic (raises ``Stopping`` only when stopping)."""
        todo = list(zip(rejected, keys, strict=True))
        delay = 0.2
        while todo:
            now = datetime.now(UTC)
            futures = []
            deadline = asyncio.get_running_loop().time() + self.attempt_s
            for r, key in todo:
                value, headers = dead_letter(r, self.max_bytes, now)
                try:
                    sent = self.producer.send(self.topic, value=value, key=key, headers=headers)
                    futures.append(await _by(deadline, sent))
                except (KafkaError, TimeoutError) as e:
                    futures.append(e)
            failed = []
            for (r, key), fut in zip(todo, futures, strict=True):
                try:
                    if isinstance(fut, BaseException):
                        raise fut
                    await _by(deadline, asyncio.shield(fut))
                    metrics.DLQ.labels(str(len(r.raw) > self.max_bytes).lower()).inc()
                except (KafkaError, TimeoutError) as e:
                    failed.append((r, key, str(e) or f"no answer within {self.attempt_s:g} s"))
            if not failed:
                return
            log.warning(
                "dead-letter topic %s: %d of %d copies not stored (%s); retrying in %.1f s",
                self.topic, len(failed), len(todo), failed[0][2], delay,
            )  # fmt: skip
            if self.stopping():
                raise Stopping("stopping with dead letters unsent; their offsets stay uncommitted")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
            todo = [(r, key) for r, key, _ in failed]


async def _by(deadline: float, aw: Awaitable[T]) -> T:
    """``aw``'s result, or ``TimeoutError`` once the event loop's clock passes ``deadline``."""
    return await asyncio.wait_for(aw, max(0.0, deadline - asyncio.get_running_loop().time()))
