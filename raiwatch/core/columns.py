"""One batch of counted events as the monitors see it: each field read once, as a column.

``EventColumns`` reads a field for the whole batch the first time a monitor asks (a list
comprehension over the decoded structs: 0.1-0.5 µs an event a column) and groups the events by
window and model once; monitors loop over groups and read lists, and a faster source of columns
can replace these properties without touching them. Measured with ``bench/bench_monitors.py``: the five
monitors' ``observe`` cost what their per-event loops did (reading a struct's field costs the same
in a comprehension); pyarrow's JSON reader, as the source, took 3.5-4.6 µs an event for eight
fields and cannot read open maps such as ``segments``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from functools import cached_property
from typing import TypeVar

from msgspec import UNSET

from raiwatch.core.records import Prediction, Safety, TelemetryEvent

Segments = tuple[tuple[str, str | None], ...]
K = TypeVar("K", bound=Hashable)


def positions(keys: Iterable[K]) -> dict[K, list[int]]:
    """The positions of each key, in order; the keys in the order they first came."""
    out: dict[K, list[int]] = {}
    for i, key in enumerate(keys):
        at = out.get(key)
        if at is None:
            out[key] = [i]
        else:
            at.append(i)
    return out


class EventColumns:
    """``events`` (decoded telemetry) with ``starts``, the start of the window each was counted
    in (epoch seconds), and their fields as lists in the same order, built on first use."""

    def __init__(self, events: Sequence[TelemetryEvent], starts: Sequence[int]):
        if len(events) != len(starts):
            raise ValueError(f"{len(events)} events and {len(starts)} window starts")
        self.events = events
        self.starts = starts

    def __len__(self) -> int:
        return len(self.events)

    @cached_property
    def model(self) -> list[str]:
        return [e.model.id for e in self.events]

    @cached_property
    def groups(self) -> dict[tuple[int, str], list[int]]:
        """Positions of the events of each (window start, model), in batch order; the groups in the
        order their first event came."""
        return positions(zip(self.starts, self.model, strict=True))

    @cached_property
    def by_model(self) -> dict[str, list[int]]:
        """Positions of each model's events, in batch order (what a model's state sees in order)."""
        return positions(self.model)

    @cached_property
    def tenant(self) -> list[str]:
        """``tenant_id``, ``""`` when absent."""
        return [e.tenant_id or "" for e in self.events]

    @cached_property
    def segments(self) -> list[Segments]:
        """``segments`` as (attribute, group) pairs in the order sent, ``()`` when absent."""
        return [tuple(s.items()) if (s := e.segments) else () for e in self.events]

    @cached_property
    def favorable(self) -> list:
        """``outcome.favorable``: True, False, or ``UNSET``."""
        return [o.favorable if (o := e.outcome) else UNSET for e in self.events]

    @cached_property
    def prediction(self) -> list[Prediction | None]:
        """``response.prediction``, None when absent."""
        return [p if (r := e.response) and (p := r.prediction) else None for e in self.events]

    @cached_property
    def safety(self) -> list[Safety | None]:
        return [e.safety or None for e in self.events]

    @cached_property
    def action(self) -> list:
        """``safety.action``, or ``UNSET``."""
        return [s.action if s else UNSET for s in self.safety]

    @cached_property
    def finish_reason(self) -> list:
        """``response.finish_reason``, or ``UNSET``."""
        return [r.finish_reason if (r := e.response) else UNSET for e in self.events]

    @cached_property
    def prompt(self) -> list[str]:
        """``request.text``, ``""`` when absent."""
        return [(r.text or "") if (r := e.request) else "" for e in self.events]
