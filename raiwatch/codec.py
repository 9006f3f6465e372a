"""Decode and validate telemetry bytes into typed events; explain every rejection.

One decoder serves Kafka and replay alike. A rejected input keeps its original bytes and a
reason a person can read, so it can go to the dead-letter topic or ``rejected.jsonl`` as is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import msgspec

from raiwatch.records import FeedbackEvent, TelemetryEvent

MAX_EVENT_BYTES = 1_048_576  # Kafka's default message.max.bytes; larger events are rejected

T = TypeVar("T")


class Rejected(msgspec.Struct):
    """An input that could not be decoded: its bytes, why, and where it came from."""

    raw: bytes
    reason: str
    source: str = ""  # "file:line" in replay, "topic/partition@offset" on Kafka
    index: int = -1  # position in the batch it came in


class Decoded(msgspec.Struct):
    """A batch split into valid events (with their raw bytes, same order) and rejections."""

    events: list
    raws: list[bytes]
    indexes: list[int]  # position of each event in the input batch
    rejected: list[Rejected]


class Codec:
    """Decoder for one record type; ``decode_batch`` never raises on bad input."""

    def __init__(self, kind: type[T] = TelemetryEvent, max_bytes: int = MAX_EVENT_BYTES):
        self._decoder = msgspec.json.Decoder(kind)
        self.kind = kind
        self.max_bytes = max_bytes

    def decode_batch(self, raws: Sequence[bytes], origin: Callable[[int], str] | None = None) -> Decoded:
        """Split ``raws`` into events and rejections; ``origin(i)`` names where a rejected input came from."""
        events: list = []
        ok_raws: list[bytes] = []
        indexes: list[int] = []
        rejected: list[Rejected] = []
        decode = self._decoder.decode
        limit = self.max_bytes
        for i, raw in enumerate(raws):
            try:
                if len(raw) > limit:
                    raise ValueError(f"event is {len(raw)} bytes, over the {limit}-byte limit")
                ev = decode(raw)
            except msgspec.ValidationError as e:
                reason = f"schema: {e}"
            except msgspec.DecodeError as e:
                reason = f"not JSON: {e}"
            except ValueError as e:
                reason = str(e)
            else:
                events.append(ev)
                ok_raws.append(raw)
                indexes.append(i)
                continue
            rejected.append(Rejected(bytes(raw), reason, origin(i) if origin else "", i))
        return Decoded(events, ok_raws, indexes, rejected)


telemetry_codec = Codec(TelemetryEvent)
feedback_codec = Codec(FeedbackEvent)
