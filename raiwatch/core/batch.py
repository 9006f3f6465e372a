"""What a batch handler returns, and the handler contract the stream and replay loops drive."""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from raiwatch.core.codec import Rejected
from raiwatch.core.records import IncidentChange, Signal


@dataclass
class BatchResult:
    """Outcome of one batch: per input, the window holding it (None: nothing left to wait for).

    Every input is accounted for: counted in a window, or ``late`` (its window had closed),
    ``replayed`` (re-read after a restart, already counted), a ``duplicate`` of an event already
    taken, or ``rejected`` with its reason. ``durable`` is done once the batch's writes are; its
    result lists the inputs ClickHouse refused to store (normally none), rejected in turn.
    """

    windows: list[int | None] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)  # windows this call closed (done once durable is)
    rejected: list[Rejected] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    changes: list[IncidentChange] = field(default_factory=list)
    rows: list[tuple[str, tuple[str, ...], list[tuple]]] = field(default_factory=list)  # monitors' tables
    late: int = 0
    replayed: int = 0
    duplicates: int = 0
    durable: Future[list[Rejected]] | None = None  # None: nothing to write

    def merge(self, other: BatchResult) -> None:
        self.windows += other.windows
        self.closed += other.closed
        self.rejected += other.rejected
        self.signals += other.signals
        self.changes += other.changes
        self.rows += other.rows
        self.late += other.late
        self.replayed += other.replayed
        self.duplicates += other.duplicates


class BatchHandler(Protocol):
    """Turns raw event bytes into durable rows, signals and incident changes."""

    def process(
        self, raws: Sequence[bytes], sources: Sequence[Hashable], origin: Callable[[int], str] | None = None
    ) -> BatchResult:
        """Handle a batch; ``sources[i]`` is the partition (watermark source) of ``raws[i]``,
        ``origin(i)`` where it came from (asked only of rejected inputs)."""
        ...

    def process_feedback(
        self, raws: Sequence[bytes], sources: Sequence[Hashable], origin: Callable[[int], str] | None = None
    ) -> BatchResult:
        """Handle a batch of delayed labels (feedback-event.v1); they belong to no window."""
        ...

    def process_evaluations(
        self, raws: Sequence[bytes], sources: Sequence[Hashable], origin: Callable[[int], str] | None = None
    ) -> BatchResult:
        """Handle OTLP log messages (``gen_ai.evaluation.result`` events: verdicts on earlier inputs)."""
        ...

    def tick(self, idle: Collection[Hashable], now: float) -> BatchResult:
        """Close what the watermark allows now that ``idle`` sources are caught up and silent."""
        ...

    def close_all(self) -> BatchResult:
        """Close every open window (end of input)."""
        ...

    def flush(self) -> list[Rejected]:
        """Wait until everything handed over is written; return what ClickHouse refused."""
        ...

    def open_windows(self) -> set[int]: ...

    def assign_sources(self, sources: Collection[Hashable]) -> None:
        """Sources now read by this worker: continue each from its last checkpoint."""
        ...

    def revoke_sources(self, sources: Collection[Hashable]) -> None:
        """Sources no longer read by this worker: drop their partial windows and their models' state."""
        ...
