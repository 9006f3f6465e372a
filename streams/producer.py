"""Publish telemetry lines to Kafka with kafka-python, keyed by ``model.id``.

Lines are sent as they are, bad ones included, so that the workers (not the producer) decide
what is malformed and the dead-letter topic sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from raiwatch.core.errors import RaiwatchError
from streams.topics import reachable


class _Key(msgspec.Struct):
    model: dict


_key_decoder = msgspec.json.Decoder(_Key)


def model_key(line: bytes) -> bytes | None:
    """The partition key of a telemetry line (its ``model.id``), or None when it has none."""
    try:
        mid = _key_decoder.decode(line).model.get("id")
    except Exception:  # any line, however broken, is still sent: the worker judges it
        return None
    return mid.encode() if isinstance(mid, str) else None


@dataclass
class ProduceReport:
    """What ``produce`` did: how many lines the broker acknowledged, and the lines it did not send."""

    sent: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (1-based line number, why)


RECORD_OVERHEAD = 256  # bytes a record needs besides its key and value (batch and record headers)


def produce(
    lines: Iterable[bytes],
    bootstrap_servers: str,
    topic: str,
    progress: Callable[[int], None] | None = None,
    every: int = 5000,
    max_bytes: int = 1_048_576,
) -> ProduceReport:
    """Send every non-blank line and flush; every line sent is acknowledged by the broker.

    A line the broker would refuse (over ``max_bytes``, its ``message.max.bytes``) is not sent and
    does not stop the others: it is listed in ``skipped`` with why, as is any line the broker did
    not acknowledge. No broker at all raises ``RaiwatchError``.
    """
    report = ProduceReport()
    if not reachable(bootstrap_servers):
        raise RaiwatchError(_no_broker(bootstrap_servers, ConnectionRefusedError("no connection")))
    try:
        producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            linger_ms=20,
            batch_size=512 * 1024,
            max_request_size=max_bytes,
            max_block_ms=15_000,
            client_id="raiwatch-produce",
        )
    except KafkaError as e:
        raise RaiwatchError(_no_broker(bootstrap_servers, e)) from None
    pending = []
    try:
        for number, line in enumerate(lines, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            key = model_key(line)
            size = len(line) + len(key or b"") + RECORD_OVERHEAD
            if size > max_bytes:
                report.skipped.append(
                    (number, f"{len(line):,} bytes, over the broker's message limit of {max_bytes:,} bytes")
                )
                continue
            pending.append((number, producer.send(topic, key=key, value=line)))
            report.sent += 1
            if progress and report.sent % every == 0:
                progress(report.sent)
        producer.flush()
    except KafkaTimeoutError as e:
        raise RaiwatchError(_no_broker(bootstrap_servers, e)) from None
    finally:
        producer.close(timeout=15)
    for number, fut in pending:
        if fut.failed():
            report.sent -= 1
            report.skipped.append((number, f"not acknowledged by the broker: {fut.exception}"))
    if progress:
        progress(report.sent)
    return report


def _no_broker(bootstrap: str, err: Exception) -> str:
    return (
        f"no Kafka broker answers at {bootstrap} ({type(err).__name__}); start one "
        "(`raiwatch kafka start`) or set kafka.bootstrap_servers / RAIWATCH_KAFKA_BOOTSTRAP"
    )
