"""The delayed-label join over a simulated day: state held, bytes per event, checkpoint volume, time.

Drives ``monitors.quality.QualityMonitor`` directly with a day of classifier events (several
models, segments, scores) and their labels: ``--share`` of events get a label ``--delay`` plus up
to ``--jitter`` later, 1% of them twice. Prints, per simulated hour, the inferences held
(labelled or not) and those still unlabelled, the bytes of the join's arrays, the process RSS
and the checkpoint bytes written that hour; then bytes per inference held and the time per
event and per window close.

    .venv/bin/python bench/labels.py                      # 20 events/s, 1 day retention
    .venv/bin/python bench/labels.py --rate 50 --retention 6h
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitors.quality import QualityConfig, QualityMonitor
from raiwatch.core.columns import EventColumns
from raiwatch.core.records import FeedbackEvent, TelemetryEvent
from raiwatch.dev.synth import seconds

W = 60
T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=20.0, help="events per second, all models")
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--share", type=float, default=0.3, help="share of events that get a label")
    ap.add_argument("--delay", default="2h", help="label delay")
    ap.add_argument("--jitter", default="4h", help="plus up to this much")
    ap.add_argument("--retention", default="24h", help="monitors.quality.retention_s")
    args = ap.parse_args()
    retention = int(seconds(args.retention))
    mon = QualityMonitor(W, QualityConfig(retention_s=retention))
    rng = random.Random(1)
    per_window = int(args.rate * W)
    windows = int(args.hours * 3600 / W)
    delay, jitter = seconds(args.delay), seconds(args.jitter)
    pending_labels: list[tuple[float, FeedbackEvent]] = []
    table = Table(title=f"Label join, {args.rate:g} events/s, {args.share:.0%} labelled after {args.delay} + "
                  f"up to {args.jitter}, retention {args.retention}")  # fmt: skip
    for c in (
        "hour",
        "events",
        "labels",
        "held",
        "unlabelled",
        "join arrays MB",
        "RSS MB",
        "checkpoint MB/h",
    ):
        table.add_column(c, justify="right")
    t_observe = t_close = 0.0
    events_total = labels_total = 0
    ckpt = 0
    start_rss = rss_mb()
    seg = {"age_band": ["18-34", "35-49", "50-64", "65+"], "sex": ["female", "male"]}
    for k in range(windows):
        start = int(T0.timestamp()) + k * W
        evs = []
        for i in range(per_window):
            eid = f"e{k}-{i}"
            fav = rng.random() < 0.7
            ev = {
                "schema_version": 1, "event_id": eid,
                "timestamp": datetime.fromtimestamp(start + i * W / per_window, UTC),
                "model": {"id": f"model-{i % args.models}"},
                "segments": {a: rng.choice(g) for a, g in seg.items()},
                "response": {"prediction": {"label": "approve" if fav else "deny", "score": rng.random()}},
                "outcome": {"favorable": fav},
            }  # fmt: skip
            evs.append(msgspec.convert(ev, TelemetryEvent))
            if rng.random() < args.share:
                at = start + delay + rng.random() * jitter
                when = datetime.fromtimestamp(at, UTC)
                label = "approve" if rng.random() < 0.9 else "deny"
                fb = FeedbackEvent(schema_version=1, event_id=eid, timestamp=when, label=label, favorable=fav)
                pending_labels.append((at, fb))
                if rng.random() < 0.01:
                    pending_labels.append((at + 60, fb))  # redelivered
        events_total += len(evs)
        pending_labels.sort(key=lambda x: x[0])
        arrived = [fb for at, fb in pending_labels if at < start + W]
        pending_labels = [(at, fb) for at, fb in pending_labels if at >= start + W]
        labels_total += len(arrived)
        t = time.perf_counter()
        mon.observe_feedback(arrived)
        mon.observe(EventColumns(evs, [start] * len(evs)))
        t_observe += time.perf_counter() - t
        t = time.perf_counter()
        mon.close(start)
        mon.drain_rows()  # written to quality_metrics by the pipeline
        ckpt += sum(len(v) for v in mon.snapshot_dirty().values())
        t_close += time.perf_counter() - t
        if (k + 1) % 60 == 0:
            hour = (k + 1) // 60
            waiting = sum(mon._pending.waiting.values())
            table.add_row(str(hour), f"{events_total:,}", f"{labels_total:,}", f"{mon._pending.size:,}",
                          f"{waiting:,}", f"{mon.state_bytes() / 1e6:.1f}", f"{rss_mb():.0f}",
                          f"{ckpt / 1e6:.1f}")  # fmt: skip
            ckpt = 0
            if hour % 4 == 0:
                print(f"hour {hour}: {mon._pending.size:,} waiting", file=sys.stderr)
    console = Console()
    console.print(table)
    held = max(mon._pending.size, 1)
    console.print(
        f"join arrays: {mon.state_bytes() / held:.1f} bytes per inference held "
        f"({mon._pending.size:,} held after {args.hours:g} h, cap max_pending {mon.cfg.max_pending:,}); "
        f"RSS grew {rss_mb() - start_rss:.0f} MB (with the benchmark's own queue of labels not yet due, "
        f"and a day of per-window label counts)"
    )
    console.print(
        f"time: observe {t_observe / events_total * 1e6:.2f} µs per event (join bookkeeping and hashing), "
        f"close + snapshot {t_close / windows * 1e3:.1f} ms per window"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
