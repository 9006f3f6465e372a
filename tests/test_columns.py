"""EventColumns: a batch read once as columns, grouped by window and model, loses no order a
monitor depends on: every monitor says the same whether it sees events one at a time or in
batches that mix windows, models and versions."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from msgspec import UNSET

from monitors.registry import monitor_classes
from raiwatch.core.codec import telemetry_codec
from raiwatch.core.columns import EventColumns
from raiwatch.dev import synth

W = 60
START = datetime(2026, 3, 2, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, list[int]]:
    """3,000 events, a tenth counted in the window before their own (late but still open), and
    model versions that change back and forth within a batch."""
    path: Path = tmp_path_factory.mktemp("columns") / "events.jsonl"
    synth.write(path, synth.default_scenario(3000, start=START, drift=True, abuse=True, fairness=True))
    events = telemetry_codec.decode_batch(path.read_bytes().splitlines()).events
    rng = random.Random(3)
    starts = []
    for i, ev in enumerate(events):
        start = int(ev.timestamp.timestamp()) // W * W
        starts.append(start - W if rng.random() < 0.1 else start)
        if i % 7 == 0:
            ev.model.version = f"v{rng.randrange(3)}"
    return events, starts


def test_columns_read_each_field_as_the_events_have_it(batch) -> None:
    events, starts = batch
    cols = EventColumns(events, starts)
    assert cols.model == [e.model.id for e in events]
    assert cols.tenant == [e.tenant_id if e.tenant_id else "" for e in events]
    assert cols.segments == [tuple(e.segments.items()) if e.segments else () for e in events]
    assert cols.favorable == [e.outcome.favorable if e.outcome else UNSET for e in events]
    assert cols.prediction == [
        e.response.prediction if e.response and e.response.prediction else None for e in events
    ]
    assert cols.prompt == [e.request.text if e.request and e.request.text else "" for e in events]
    assert sum(len(at) for at in cols.groups.values()) == len(events)
    firsts = [at[0] for at in cols.groups.values()]
    assert firsts == sorted(firsts)  # groups in the order of their first event
    for (start, model), at in cols.groups.items():
        assert at == sorted(at)
        assert {(starts[i], events[i].model.id) for i in at} == {(start, model)}
    assert {m: at for m, at in cols.by_model.items()} == {
        m: [i for i, e in enumerate(events) if e.model.id == m] for m in cols.by_model
    }
    with pytest.raises(ValueError, match=f"{len(events)} events and 2 window starts"):
        EventColumns(events, starts[:2])


def _run(family: str, events: list, starts: list[int], size: int) -> bytes:
    """Everything one fresh monitor says, fed batches of ``size``, each window closed two
    windows after the newest start seen."""
    m = monitor_classes()[family](W)
    out: list = []
    opened: set[int] = set()
    for s in range(0, len(events), size):
        m.observe(EventColumns(events[s : s + size], starts[s : s + size]))
        opened.update(starts[s : s + size])
        newest = max(starts[: s + size])
        for w in sorted(w for w in opened if w < newest - 2 * W):
            out += m.close(w)
            opened.discard(w)
    for w in sorted(opened):
        out += m.close(w)
    drain = getattr(m, "drain_rows", None)
    return msgspec.msgpack.encode([out, drain() if drain else [], sorted(m.snapshot_dirty().items())])


@pytest.mark.parametrize("family", sorted(monitor_classes()))
def test_a_monitor_says_the_same_one_event_at_a_time_as_in_mixed_batches(batch, family: str) -> None:
    events, starts = batch
    one = _run(family, events, starts, 1)
    assert len(one) > 1000  # signals, rows or state to compare
    assert _run(family, events, starts, 1000) == one
