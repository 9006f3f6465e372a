"""The monitor contract: observe batches of events by window, emit signals when a window closes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raiwatch.records import Signal, TelemetryEvent


class Monitor(Protocol):
    """A stateful monitor of one signal family.

    ``observe`` gets decoded events with the start of the window each belongs to (epoch
    seconds); ``close`` gets a window start once no more events will arrive for it and returns
    that window's signals for every model seen. State must stay bounded by configuration.
    """

    family: str

    def observe(self, events: Sequence[TelemetryEvent], starts: Sequence[int]) -> None: ...

    def close(self, start: int) -> list[Signal]: ...
