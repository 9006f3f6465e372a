"""Publish telemetry lines to Kafka with kafka-python, keyed by ``model.id``.

Lines are sent as they are, bad ones included, so that the workers (not the producer) decide
what is malformed and the dead-letter topic sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import msgspec
from kafka import KafkaProducer


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


def produce(
    lines: Iterable[bytes],
    bootstrap_servers: str,
    topic: str,
    progress: Callable[[int], None] | None = None,
    every: int = 5000,
) -> int:
    """Send every non-blank line and flush; returns the number sent (all acknowledged by the broker)."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=2 * 1024 * 1024,
        client_id="raiwatch-produce",
    )
    sent = 0
    failures: list[BaseException] = []
    try:
        for line in lines:
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            producer.send(topic, key=model_key(line), value=line).add_errback(failures.append)
            sent += 1
            if progress and sent % every == 0:
                progress(sent)
        producer.flush()
    finally:
        producer.close()
    if failures:
        raise RuntimeError(f"{len(failures)} of {sent} messages were not acknowledged: {failures[0]!r}")
    if progress:
        progress(sent)
    return sent
