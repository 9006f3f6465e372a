"""What a batch handler returns, and the handler contract the stream and replay loops drive."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from raiwatch.codec import Rejected
from raiwatch.records import IncidentChange, Signal


@dataclass
class BatchResult:
    """Outcome of one batch: per input, the window holding it (None: nothing left to wait for)."""

    windows: list[int | None] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    changes: list[IncidentChange] = field(default_factory=list)
    late: int = 0
    durable: Future | None = None  # done once the batch's raw events are written (None: nothing to write)

    def merge(self, other: BatchResult) -> None:
        self.windows += other.windows
        self.rejected += other.rejected
        self.signals += other.signals
        self.changes += other.changes
        self.late += other.late


class BatchHandler(Protocol):
    """Turns raw event bytes into durable rows, signals and incident changes."""

    def process(
        self, raws: Sequence[bytes], sources: Sequence[Hashable], origin: Callable[[int], str] | None = None
    ) -> BatchResult:
        """Handle a batch; ``sources[i]`` is the partition (watermark source) of ``raws[i]``,
        ``origin(i)`` where it came from (asked only of rejected inputs)."""
        ...

    def close_all(self) -> BatchResult:
        """Close every open window (end of input, or the stream went idle)."""
        ...

    def flush(self) -> None:
        """Wait until every event handed to ``process`` is written."""
        ...

    def open_windows(self) -> set[int]: ...

    def forget_source(self, source: Hashable) -> None: ...
