"""Event-time windows across sources: the slowest busy source holds the watermark; outliers do not move it."""

from __future__ import annotations

import math

from monitors.windows import LATE, OK, REPLAYED, WindowClock


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
    clock = WindowClock(60, 0)
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
