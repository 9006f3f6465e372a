"""Event-time windows across sources: the slowest active source holds the watermark."""

from __future__ import annotations

from monitors.windows import WindowClock


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_slow_partition_holds_the_watermark_until_it_goes_idle():
    wall = FakeClock()
    clock = WindowClock(60, 30, source_idle_s=5, clock=wall)
    assert clock.assign_batch([0, 1], [1000.0, 1000.0]) == [960, 960]
    clock.assign_batch([0, 0], [1100.0, 1200.0])  # partition 0 runs ahead
    assert clock.advance() == []  # partition 1 is still at 1000: nothing may close
    wall.now = 4.0
    clock.assign_batch([1], [1010.0])  # partition 1 catches up a little: still active
    assert clock.advance() == []
    wall.now = 10.0  # partition 1 silent for 6 s: it no longer holds the watermark
    clock.assign_batch([0], [1201.0])
    assert clock.advance() == [960, 1080]  # watermark 1171; the window at 1200 stays open
    assert clock.assign(1, 1015.0) is None  # partition 1's late event is late now


def test_a_forgotten_source_no_longer_holds_the_watermark():
    clock = WindowClock(60, 0)
    clock.assign_batch([0, 1], [1000.0, 1300.0])  # partition 0 is far behind
    assert clock.advance() == []
    clock.forget_source(0)  # revoked in a rebalance
    assert clock.advance() == [960]


def test_batch_assignment_marks_late_events_and_keeps_the_watermark():
    clock = WindowClock(60, 0)
    assert clock.assign_batch([0, 0], [70.0, 130.0]) == [60, 120]
    assert clock.advance() == [60]  # watermark 130 passed 120, the end of [60, 120)
    assert clock.assign_batch([0, 0, 0], [100.0, 125.0, 190.0]) == [None, 120, 180]
    assert clock.open_windows() == {120, 180}
    assert clock.close_all() == [120, 180]
