"""Event-time windows across sources: the slowest busy source holds the watermark; outliers do not move it.

The clock alone first, then the pipeline over generated traffic delivered as a stream would
deliver it (per-model partitions, small batches, a simulated wall clock): timestamps from the
future and a producer whose clock runs fast make no correctly stamped event late, and what it
counts equals a replay of the same events.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import msgspec
import orjson
import pytest

from monitors.windows import LATE, OK, REPLAYED, WindowClock
from raiwatch.core.config import load_config
from raiwatch.dev import synth
from raiwatch.pipeline import Pipeline
from raiwatch.wiring import build_pipeline


def _starts(clock: WindowClock, sources: list, ts: list[float]) -> list[int | None]:
    starts, status = clock.assign_batch(sources, ts)
    return [int(s) if st == OK else None for s, st in zip(starts, status, strict=True)]


def test_slow_partition_holds_the_watermark_until_it_goes_idle():
    clock = WindowClock(60, 30, confirm=1)
    assert _starts(clock, [0, 1], [1000.0, 1000.0]) == [960, 960]
    clock.assign_batch([0, 0], [1100.0, 1200.0])  # partition 0 runs ahead
    assert clock.advance() == []  # partition 1 is still at 1000: nothing may close
    clock.assign_batch([1], [1010.0])
    assert clock.advance() == []
    clock.assign_batch([0], [1201.0])
    assert clock.advance(idle={1}) == [960, 1080]  # partition 1 caught up and silent: watermark 1171
    assert clock.assign(1, 1015.0) is None  # partition 1's late event is late now


def test_every_source_idle_lets_event_time_follow_the_wall_clock():
    clock = WindowClock(60, 30, confirm=1)
    clock.assign_batch([0, 1], [1000.0, 1010.0])
    assert clock.advance(idle={0, 1}, now=1049.0) == []  # 1049 - 30 has not reached 1020 yet
    assert clock.advance(idle={0, 1}, now=1050.0) == [960]
    assert clock.advance(idle={0}, now=5000.0) == []  # partition 1 is busy again: it holds the watermark


def test_an_outage_is_not_idleness():
    """Without the transport naming idle sources (it cannot while the broker is away) nothing closes."""
    clock = WindowClock(60, 30, confirm=1)
    clock.assign_batch([0, 1], [1000.0, 2000.0])
    assert clock.advance(now=10_000.0) == []  # the wall clock alone moves nothing
    clock.assign_batch([0], [2000.0])  # partition 0 catches up after the outage: nothing of it was late
    assert clock.advance() == [960]


def test_one_wild_timestamp_does_not_move_the_watermark():
    clock = WindowClock(60, 30, confirm=3)
    clock.assign_batch([0] * 3, [1000.0, 1001.0, 1002.0])
    clock.assign_batch([0], [4_102_444_800.0])  # one event dated 2100
    assert clock.position(0) == 1001.0
    assert _starts(clock, [0, 0], [1003.0, 1100.0]) == [960, 1080]  # nothing after it is late
    assert clock.advance() == []  # watermark 1072 - 30: [960, 1020) not passed yet ...
    clock.assign_batch([0, 0], [1101.0, 1102.0])
    assert clock.advance() == [960]  # ... now confirmed by three events near 1100


def test_a_forgotten_source_no_longer_holds_the_watermark():
    clock = WindowClock(60, 0, confirm=1)
    clock.assign_batch([0, 1], [1000.0, 1300.0])  # partition 0 is far behind
    assert clock.advance() == []
    clock.forget_source(0)  # revoked in a rebalance
    assert clock.advance() == [960]


def test_batch_assignment_marks_late_events_and_the_watermark_passes_empty_windows():
    clock = WindowClock(60, 0, confirm=1)
    assert _starts(clock, [0, 0], [70.0, 130.0]) == [60, 120]
    assert clock.advance() == [60]  # watermark 130 passed 120, the end of [60, 120)
    assert _starts(clock, [0, 0, 0], [100.0, 125.0, 190.0]) == [None, 120, 180]
    assert clock.open_windows() == {120, 180}
    assert clock.close_all() == [120, 180]
    clock.assign_batch([0], [1000.0])
    clock.advance()
    assert clock.closed_until == 960.0  # windows the watermark passed are closed even if nobody opened them
    _, status = clock.assign_batch([0], [500.0])
    assert status.tolist() == [LATE]


def test_a_restored_source_skips_what_was_already_counted():
    clock = WindowClock(60, 30)
    clock.restore(0, 1020.0)  # windows ending by 1020 were closed and written before the restart
    starts, status = clock.assign_batch([0, 0, 1], [1000.0, 1030.0, 1000.0])
    assert status.tolist() == [REPLAYED, OK, OK]  # partition 1 had no such checkpoint
    assert starts.tolist() == [960, 1020, 960]
    assert clock.open_windows() == {960, 1020}
    assert clock.closed_until == -math.inf


def test_an_assigned_source_holds_the_watermark_before_its_first_event():
    clock = WindowClock(60, 0, confirm=1)
    clock.add_source(1)  # assigned, nothing fetched from it yet
    clock.assign_batch([0], [1000.0])
    clock.assign_batch([0], [1300.0])
    assert clock.advance() == []  # partition 1 may still hold events of those windows
    assert clock.advance(idle={1}) == [960]  # caught up and silent: it had none


def test_a_clock_that_has_seen_no_event_never_moves_however_long_it_idles():
    """The worker that waited for traffic: idle partitions, no event yet, then a 12-minute backlog."""
    now = 1_800_000_000.0
    clock = WindowClock(60, 30)
    for p in range(4):
        clock.add_source(p)
    for t in range(0, 60, 5):  # a minute of ticks with every partition idle
        assert clock.advance(idle={0, 1, 2, 3}, now=now + t) == []
    assert clock.closed_until == -math.inf
    backlog = [now - 720 + i * 0.25 for i in range(2880)]
    _, status = clock.assign_batch([i % 2 for i in range(2880)], backlog)
    assert (status == OK).all()


def test_a_burst_of_timestamps_from_the_future_never_moves_a_position():
    clock = WindowClock(60, 30)  # confirm 16: the median of the last 31 timestamps
    clock.assign_batch([0] * 15, [9000.0] * 15)  # the partition's first events: 15 from the future
    assert clock.position(0) == -math.inf  # fewer than 16 events: no position yet
    _, status = clock.assign_batch([0] * 16, [1000.0 + i for i in range(16)])
    assert clock.position(0) == 1015.0 and (status == OK).all()  # the newest correct one at most
    assert clock.advance() == []
    clock.assign_batch([0] * 40, [1016.0 + 2 * i for i in range(40)])
    assert clock.advance() == [960]  # the 15 left the sample: correct time moves it again
    assert clock.position(0) == 1016.0 + 2 * 24


def test_a_share_of_events_from_a_fast_clock_never_moves_a_position_past_the_rest():
    rng = random.Random(7)
    clock = WindowClock(60, 30)
    honest_newest = -math.inf
    for second in range(600):
        batch = [1000.0 + second + rng.random() for _ in range(10)]
        honest_newest = max(honest_newest, *batch)
        stamped = [t + 60 if rng.random() < 0.1 else t for t in batch]
        _, status = clock.assign_batch([0] * len(stamped), stamped)
        assert (status == OK).all()
        assert clock.position(0) <= honest_newest
        clock.advance()


def test_live_positions_never_run_ahead_of_the_wall_clock():
    clock = WindowClock(60, 30, confirm=1)
    clock.assign_batch([0], [5000.0])  # every event of the partition from a clock far ahead
    assert clock.advance(now=1100.0) == [] and clock.closed_until == 1020.0  # 1100 - 30, not 4970


# -- the pipeline over a stream ---------------------------------------------------------------

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def make_pipeline(tmp_path_factory) -> Callable[..., Pipeline]:
    base = tmp_path_factory.getbasetemp()

    def make(live: bool, wall: Callable[[], float]) -> Pipeline:
        cfg = load_config(data_dir=str(base / f"w-{uuid.uuid4().hex[:8]}"))
        ch = msgspec.structs.replace(
            cfg.clickhouse, dsn=f"chdb://{base / 'chdb'}", database=f"w_{uuid.uuid4().hex[:8]}", rollups=False
        )
        pipe = build_pipeline(msgspec.structs.replace(cfg, clickhouse=ch), live=live)
        pipe.wall = wall
        return pipe

    return make


def _traffic(fast_share: float, outliers_at: float | None, seed: int = 3) -> list[tuple[float, str, bytes]]:
    """Five minutes of the demo's traffic as ``(arrival, model, raw)``: each event arrives up to 2 s
    after it happened; ``fast_share`` of them are stamped by a clock 60 s fast, and with
    ``outliers_at`` each model first sends three events stamped then."""
    rng = random.Random(seed)
    sc = synth.default_scenario(3000, seed=seed, rate_per_s=10, start=T0)
    out = []
    for line, _ in synth.Generator(sc).lines():
        ev = orjson.loads(line)
        t = datetime.fromisoformat(ev["timestamp"]).timestamp()
        if rng.random() < fast_share:
            ev["timestamp"] = datetime.fromtimestamp(t + 60, UTC).isoformat()
        out.append((t + rng.uniform(0, 2), ev["model"]["id"], orjson.dumps(ev)))
    out.sort(key=lambda x: x[0])
    if outliers_at is not None:
        first = {}
        for arrival, model, raw in out:
            first.setdefault(model, (arrival, orjson.loads(raw)))
        for model, (arrival, ev) in first.items():
            for k in range(3):
                wild = {**ev, "event_id": f"wild-{model}-{k}"}
                wild["timestamp"] = datetime.fromtimestamp(outliers_at, UTC).isoformat()
                out.insert(0, (arrival - 1, model, orjson.dumps(wild)))
    return out


def _stream(
    pipe: Pipeline, batches: Iterator[tuple[float, list[tuple[str, bytes]]]], now: list[float]
) -> dict:
    """Hand ``(wall time, [(model, raw)])`` batches to the pipeline, one partition per model."""
    partition: dict[str, int] = {}
    late = events = 0
    signals = []
    for wall, batch in batches:
        now[0] = wall
        res = pipe.process(
            [raw for _, raw in batch], [partition.setdefault(m, len(partition)) for m, _ in batch]
        )
        late += res.late
        signals += res.signals
        events += len(batch) - len(res.rejected)
    signals += pipe.close_all().signals
    return {"late": late, "events": events, "signals": _comparable(signals)}


def _comparable(signals: list) -> list[str]:
    return sorted(repr(s) for s in signals)  # repr: nan equals nan


def _replay(make_pipeline, traffic: list[tuple[float, str, bytes]], wall: float) -> dict:
    pipe = make_pipeline(live=False, wall=lambda: wall)
    res = pipe.process([raw for _, _, raw in traffic], [0] * len(traffic))
    assert res.late == 0 and not res.rejected
    return {"late": 0, "events": len(traffic), "signals": _comparable(res.signals + pipe.close_all().signals)}


def _realtime(traffic: list[tuple[float, str, bytes]], every_s: float = 5.0) -> Iterator:
    """Batches as a live consumer sees them: what arrived in each ``every_s`` of wall time."""
    i, t = 0, traffic[0][0]
    while i < len(traffic):
        t += every_s
        batch = []
        while i < len(traffic) and traffic[i][0] <= t:
            batch.append(traffic[i][1:])
            i += 1
        if batch:
            yield t, batch


def _backlog(traffic: list[tuple[float, str, bytes]], wall: float, size: int = 300) -> Iterator:
    """Batches as a consumer draining a produced backlog sees them, all at one wall time."""
    for i in range(0, len(traffic), size):
        yield wall, [x[1:] for x in traffic[i : i + size]]


@pytest.mark.parametrize(
    ("fast_share", "outliers"),
    [(0.0, True), (0.1, False)],
    ids=["three-events-per-model-at-the-future-limit", "a-tenth-from-a-clock-60s-fast"],
)
def test_live_traffic_with_wild_timestamps_has_no_late_event_and_counts_as_a_replay(
    make_pipeline, fast_share, outliers
):
    start = T0.timestamp()
    traffic = _traffic(fast_share, start + 290 if outliers else None)  # max_future_s is 300
    now = [start]
    streamed = _stream(make_pipeline(live=True, wall=lambda: now[0]), _realtime(traffic), now)
    assert streamed["late"] == 0 and streamed["events"] == len(traffic)
    assert streamed == _replay(make_pipeline, traffic, wall=start + 300)


def test_a_backlog_with_wild_timestamps_after_an_idle_start_counts_as_a_replay(make_pipeline):
    """Three events per model at the future limit first, and a tenth from a clock 60 s fast."""
    wall = T0.timestamp() + 400
    traffic = _traffic(0.1, wall + 290)
    now = [wall]
    pipe = make_pipeline(live=True, wall=lambda: now[0])
    pipe.assign_sources({0, 1, 2, 3})
    assert pipe.tick({0, 1, 2, 3}, wall).closed == []  # waited for traffic: the clock did not move
    streamed = _stream(pipe, _backlog(traffic, wall), now)
    assert streamed["late"] == 0
    assert streamed == _replay(make_pipeline, traffic, wall)


def test_windows_whose_close_raised_stay_open_so_no_offset_of_theirs_is_committed(make_pipeline):
    """What a transport may commit is read from ``open_windows()``: a close that raised leaves its
    windows there (the clock had already moved past them)."""
    start = T0.timestamp()
    traffic = _traffic(0.0, None)[:2000]  # over three minutes: the first windows close
    pipe = make_pipeline(live=False, wall=lambda: start + 300)
    safety = next(m for m in pipe.monitors if m.family == "safety")

    def broken(window_start: int) -> list:
        raise RuntimeError("a monitor failed while closing")

    safety.close = broken
    with pytest.raises(RuntimeError, match="while closing"):
        pipe.process([raw for _, _, raw in traffic], [0] * len(traffic))
    assert pipe.clock.closed_until > start  # the clock moved on ...
    first = int(start // 60 * 60)
    assert {w for w in pipe.open_windows() if w + 60 <= pipe.clock.closed_until} == {first, first + 60}
