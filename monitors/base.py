"""The monitor contract: observe batches of events by window, emit signals when a window closes."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

import msgspec

from raiwatch.core.columns import EventColumns
from raiwatch.core.records import Signal

STATE_SEP = "\x1f"  # a model's state in several checkpoint rows: keys "<model>\x1f<part>"


class MonitorConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The settings every family has (``monitors.<family>`` in the config file); each family's
    ``Config`` adds its own."""

    enabled: bool = True  # false: the family does not run, and rules on its signals never fire


class Monitor(Protocol):
    """A stateful monitor of one signal family.

    ``observe`` gets a batch of decoded events with the start of the window each belongs to
    (epoch seconds), as ``EventColumns``: their fields as columns, read once for every monitor,
    and grouped by window and model; ``close`` gets a window start once no more events will
    arrive for it and returns that window's signals for every model seen. State must stay
    bounded by configuration.

    Lifecycle: what a monitor remembers of a model between windows (baselines, tracked
    categories, references) is its *state*. ``snapshot_dirty`` returns the state of each model a
    ``close`` changed since the last call, ``restore`` takes it back (after a restart, or when a
    model's partition moves to this worker), and ``forget`` drops a model's open windows and state
    (its partition moved away). The signals after a restore equal those of an uninterrupted run.

    A monitor that joins delayed ground truth also defines ``observe_feedback(events)``: it gets
    every valid feedback event (feedback-event.v1) as it arrives, in no window. A monitor with
    tables of its own (a migration in ``storage/clickhouse/migrations``) defines ``drain_rows()``:
    the ``(table, columns, rows)`` its closes produced since the last call, written with the
    window's signals. A monitor may keep a model's state in several rows (keys
    ``<model>STATE_SEP<part>``, all passed to ``restore``) and state of no model under
    ``shared_keys`` (restored once, on the worker's first restore).
    """

    family: str

    def observe(self, batch: EventColumns) -> None: ...

    def close(self, start: int) -> list[Signal]: ...

    def forget(self, models: Collection[str]) -> None: ...

    def snapshot_dirty(self) -> dict[str, bytes]: ...

    def restore(self, model: str, state: bytes) -> None: ...


def drop_models(windows: dict[int, dict[str, Any]], models: Collection[str]) -> None:
    """Remove these models from open windows (window start -> model -> data), and windows left empty."""
    for start, by_model in list(windows.items()):
        for m in models:
            by_model.pop(m, None)
        if not by_model:
            del windows[start]


class PerModelState:
    """The lifecycle of a monitor whose state is kept per model.

    A subclass holds ``_windows`` (window start -> model -> what the open window collected),
    ``_models`` (model -> its state), ``_dirty`` (models a close changed since the last
    snapshot) and implements ``_encode(state) -> bytes`` and ``restore``.
    """

    _windows: dict[int, dict[str, Any]]
    _models: dict[str, Any]
    _dirty: set[str]

    def _encode(self, state: Any) -> bytes:
        raise NotImplementedError

    def forget(self, models: Collection[str]) -> None:
        """Drop these models' open windows and state (their partition moved away from this worker)."""
        drop_models(self._windows, models)
        for m in models:
            self._models.pop(m, None)
            self._dirty.discard(m)

    def snapshot_dirty(self) -> dict[str, bytes]:
        """The state of each model changed by a close since the last call, as bytes."""
        out = {m: self._encode(self._models[m]) for m in sorted(self._dirty) if m in self._models}
        self._dirty.clear()
        return out

    def models(self) -> set[str]:
        return set(self._models)
