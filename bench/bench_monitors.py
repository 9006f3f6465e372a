"""Each monitor family's own cost, observe and close apart, in microseconds per event.

    .venv/bin/python bench/bench_monitors.py [--events 200000] [--repeat 3] [family ...]

The bench scenario's events (``raiwatch.dev.synth``'s default scenario, as ``bench_pipeline.py``
writes it, but from a fixed start: every run sees the same events) are decoded once; each monitor
then sees them as the pipeline hands them over (batches of 20,000, 60 s windows, a window closed
once the batches have moved two windows past it), under the pipeline's collector settings (what
the decode left frozen, a young collection every 200,000 allocations: with Python's default of 700
the drift monitor's close read 2.6 instead of 1.9 µs an event). Best of ``--repeat`` fresh
monitors. The batches' ``EventColumns``, which the pipeline reads once for all monitors, are timed
apart (``columns``). No storage, rules or pipeline: what a change to one monitor buys, without the
whole replay's noise.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

from monitors.registry import monitor_classes  # noqa: E402
from raiwatch.core.codec import telemetry_codec  # noqa: E402
from raiwatch.core.columns import EventColumns  # noqa: E402
from raiwatch.dev import synth  # noqa: E402
from raiwatch.wiring import GC_THRESHOLDS  # noqa: E402

START = datetime(2026, 3, 2, 9, tzinfo=UTC)
WINDOW_S = 60
BATCH = 20_000


COLUMNS = [name for name, v in vars(EventColumns).items() if isinstance(v, cached_property)]


def columns(events: list, starts: list[int]) -> tuple[float, list[EventColumns]]:
    """Each batch's ``EventColumns`` with every column read, and the seconds that took: the
    pipeline builds them once for all monitors, so they are timed apart from any one monitor."""
    t0 = time.perf_counter()
    out = []
    for s in range(0, len(events), BATCH):
        batch = EventColumns(events[s : s + BATCH], starts[s : s + BATCH])
        for name in COLUMNS:
            getattr(batch, name)
        out.append(batch)
    return time.perf_counter() - t0, out


def run(cls: type, batches: list[EventColumns]) -> tuple[float, float, int, str]:
    """Seconds observing, seconds closing, signals emitted by one fresh monitor, and a digest of
    its signals, rows and final state (equal digests: a change left what it says unchanged)."""
    m = cls(WINDOW_S)
    t_obs = t_close = 0.0
    signals = 0
    digest = hashlib.sha256()
    opened: set[int] = set()
    for batch in batches:
        sts = batch.starts
        t0 = time.perf_counter()
        m.observe(batch)
        t_obs += time.perf_counter() - t0
        opened.update(sts)
        newest = max(sts)
        due = sorted(w for w in opened if w < newest - 2 * WINDOW_S)  # the bench's own work: untimed
        t0 = time.perf_counter()
        closed = [m.close(w) for w in due]
        t_close += time.perf_counter() - t0
        opened.difference_update(due)
        for out in closed:
            signals += len(out)
            digest.update(msgspec.msgpack.encode(out))
    t0 = time.perf_counter()
    closed = [m.close(w) for w in sorted(opened)]
    t_close += time.perf_counter() - t0
    for out in closed:
        signals += len(out)
        digest.update(msgspec.msgpack.encode(out))
    drain = getattr(m, "drain_rows", None)
    digest.update(msgspec.msgpack.encode([drain() if drain else [], sorted(m.snapshot_dirty().items())]))
    return t_obs, t_close, signals, digest.hexdigest()[:12]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("families", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        synth.write(path, synth.default_scenario(args.events, start=START))
        decoded = telemetry_codec.decode_batch(path.read_bytes().splitlines())
    events = decoded.events
    gc.freeze()  # as the pipeline's start-up does; else each collection walks every event decoded here
    gc.set_threshold(*GC_THRESHOLDS)  # and the pipeline's collector: a young collection per 200,000
    starts = [int(t // WINDOW_S) * WINDOW_S for t in decoded.ts]
    n = len(events)
    print(f"{n:,} events, {len(set(starts))} windows of {WINDOW_S} s, batches of {BATCH:,}")
    cost = min(columns(events, starts)[0] for _ in range(args.repeat)) / n * 1e6
    print(f"{'columns':<9} {cost:5.2f} µs/event (EventColumns, every column; shared by the monitors)")
    total = cost
    batches = columns(events, starts)[1]
    for family, cls in monitor_classes().items():
        if args.families and family not in args.families:
            continue
        best = min((run(cls, batches) for _ in range(args.repeat)), key=lambda r: r[0] + r[1])
        obs, close, signals, digest = best
        total += (obs + close) / n * 1e6
        print(
            f"{family:<9} observe {obs / n * 1e6:5.2f}  close {close / n * 1e6:5.2f}  "
            f"total {(obs + close) / n * 1e6:5.2f} µs/event  ({signals:,} signals, digest {digest})"
        )
    print(f"{'all':<9} {total:5.2f} µs/event (columns included)")


if __name__ == "__main__":
    main()
