"""A worker's memory over simulated days of traffic: 50 models, 200 tenants, all monitors on.

One ``Pipeline`` as the worker builds it (``live``: checkpoints written, monitor state per model,
12 partitions as sources), writing raw events, signals, incidents and checkpoints to an embedded
ClickHouse and SQLite in a temporary folder. The traffic is synthetic (``raiwatch.dev.synth``):
25 LLM assistants (prompts, safety scores, tenants, languages) and 25 classifiers (20 features,
scores, segments, predictions), 200 tenants between them, ending now. Printed per simulated
hour: events so far, the process RSS at the hour's end and its peak within the hour (merges and
inserts included), and what the monitors hold; then the RSS slope after warm-up. Warm-up is the
longest memory a monitor keeps: the label join holds every prediction for
``monitors.quality.retention_s`` (1 day), so the default run is 30 hours.

    .venv/bin/python bench/memory.py                     # 30 h at 10 events/s
    .venv/bin/python bench/memory.py --hours 6 --rate 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from raiwatch.cli import BLAS_THREADS  # noqa: E402  (imports no numpy)

os.environ.setdefault("OPENBLAS_NUM_THREADS", BLAS_THREADS)  # as the command line does, before numpy loads

from raiwatch.core.config import load_config  # noqa: E402
from raiwatch.dev import synth  # noqa: E402
from raiwatch.wiring import build_pipeline, settle_collector  # noqa: E402
from streams.producer import model_key  # noqa: E402

PARTITIONS = 12
BATCH = 5000
CHANNELS = {"web": 0.6, "app": 0.3, "branch": 0.1}


def rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> tuple[float, bool]:
    """The peak resident set (VmHWM) since the last call, and whether it is that (reset through
    ``/proc/self/clear_refs``) rather than the peak since start (where the reset is refused)."""
    peak = rss_mb("VmHWM")
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return peak, False
    return peak, True


def scenario(hours: float, rate: float, start: datetime) -> synth.Scenario:
    tenants = [f"tenant-{i:03d}" for i in range(200)]
    models: list[synth.Model] = []
    for i in range(25):  # each LLM serves 8 of the 200 tenants (every tenant twice)
        mine = {tenants[(8 * i + k) % 200]: 1.0 / (k + 1) for k in range(8)}
        models.append(
            synth.Model(
                id=f"assistant-{i:02d}", kind="llm", rate=rate * 0.6 / 25, version="1", tenants=mine,
                languages={"en": 0.7, "de": 0.15, "fr": 0.1, "tr": 0.05}, accounts=5000,
                prompts=[f"question {k} about topic {i}" for k in range(12)],
                safety=synth.Safety(
                    categories={"toxicity": 0.01, "self_harm": 0.002, "pii": 0.008, "jailbreak": 0.003},
                    blocking=["self_harm", "jailbreak"],
                ),
                segments={"region": {"eu": 0.4, "na": 0.4, "apac": 0.2}},
            )
        )  # fmt: skip
    for i in range(25):
        models.append(
            synth.Model(
                id=f"classifier-{i:02d}", kind="classifier", rate=rate * 0.4 / 25, version="1",
                more_features=18,
                features={"amount": synth.Dist(type="lognormal", mu=7, sigma=1),
                          "channel": synth.Dist(type="categorical", values=CHANNELS)},
                prediction=synth.Prediction(score=synth.Dist(type="normal", mean=0.6, sd=0.2)),
                segments={"age_band": {"18-34": 0.35, "35-49": 0.3, "50-64": 0.22, "65+": 0.13},
                          "sex": {"female": 0.5, "male": 0.5}},
            )
        )  # fmt: skip
    return synth.Scenario(
        name="memory", start=start, duration=f"{int(hours * 3600)}s", models=models, seed=3, arrivals="even"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=10.0, help="events per second, all models")
    ap.add_argument("--warmup", type=float, default=24.0, help="hours not counted in the slope")
    args = ap.parse_args()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(hours=args.hours) - timedelta(minutes=5)
    sc = scenario(args.hours, args.rate, start)
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="raiwatch-memory-", ignore_cleanup_errors=True) as tmp:
        cfg = load_config(None, data_dir=tmp)
        pipe = build_pipeline(cfg, live=True)
        sources = list(range(PARTITIONS))
        pipe.assign_sources(sources)
        settle_collector()  # as the worker does
        base = rss_mb()
        table = Table(title=f"Worker memory: 50 models, 200 tenants, {args.rate:g} events/s, all monitors")
        for c in (
            "hour",
            "events",
            "signals",
            "RSS MB",
            "peak MB",
            "Python blocks (M)",
            "held by the label join",
            "s (wall)",
        ):
            table.add_column(c, justify="right")
        rows: list[tuple[float, float, float]] = []  # (hour, RSS at its end, its peak)
        peak_mb()  # start-up's peak is not the first hour's
        raws: list[bytes] = []
        srcs: list[int] = []
        hour_end = start.timestamp() + 3600
        t0 = time.perf_counter()
        quality = next((m for m in pipe.monitors if m.family == "quality"), None)

        def feed() -> None:
            pipe.process(raws, srcs)
            raws.clear()
            srcs.clear()

        def report(hour: int) -> None:
            pipe.flush()
            rss = rss_mb()
            peak, hourly = peak_mb()
            rows.append((hour, rss, peak))
            held = f"{quality._pending.size:,}" if quality is not None else "-"
            blocks = f"{sys.getallocatedblocks() / 1e6:.2f}"
            wall = f"{time.perf_counter() - t0:.0f}"
            table.add_row(
                str(hour), f"{pipe.events_in:,}", f"{pipe.signals_out:,}", f"{rss:.0f}",
                f"{peak:.0f}" if hourly else f"{peak:.0f} (since start)", blocks, held, wall,
            )  # fmt: skip
            console.print(f"hour {hour}: RSS {rss:.0f} MB (peak {peak:.0f}), {pipe.events_in:,} events")

        hour = 0
        for line, _ in synth.generate(sc):
            ts = synth_ts(line)
            while ts >= hour_end:
                if raws:
                    feed()
                hour += 1
                report(hour)
                hour_end += 3600
            raws.append(line)
            srcs.append(zlib.crc32(model_key(line) or b"") % PARTITIONS)
            if len(raws) == BATCH:
                feed()
        if raws:
            feed()
        pipe.close_all()
        report(hour + 1)
        pipe.store.close()
    out = Console(width=110)  # the whole table in a file too (rich folds to 80 columns off a terminal)
    out.print(table)
    after = [row for row in rows if row[0] > args.warmup]
    if len(after) >= 3:  # least squares: RSS moves by tens of MB from hour to hour (merges, the allocator)
        hs, rs, ps = (list(c) for c in zip(*after, strict=True))
        mh, mr = statistics.fmean(hs), statistics.fmean(rs)
        slope = sum((h - mh) * (r - mr) for h, r in zip(hs, rs, strict=True)) / sum((h - mh) ** 2 for h in hs)
        top = max(ps)
        out.print(
            f"RSS {base:.0f} MB after start-up; after the {args.warmup:g} h warm-up, hours "
            f"{hs[0]:.0f}-{hs[-1]:.0f}: {min(rs):.0f}-{max(rs):.0f} MB, mean {mr:.0f} MB, "
            f"least-squares slope {slope:+.1f} MB per hour; peak {top:.0f} MB"
        )
    return 0


def synth_ts(line: bytes) -> float:
    """The event time of a synthetic line (its ``timestamp``, ISO 8601 UTC)."""
    i = line.find(b'"timestamp":"') + 13
    return datetime.fromisoformat(line[i : line.find(b'"', i)].decode()).timestamp()


if __name__ == "__main__":
    sys.exit(main())
