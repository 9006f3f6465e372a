"""Throughput of the whole pipeline, as ratios against a bare decode-only baseline in the same run.

    .venv/bin/python bench/bench_pipeline.py [--events 300000] [--no-stream | --no-replay] [--profile]
        [--families] [--batch-size 5000] [--peers [--peers-budget-s 30]] [--faust]

Replay: ``raiwatch replay`` (all monitors on, raw events, signals and incidents written to the
embedded ClickHouse and SQLite) against reading the same file and decoding it, nothing else.
Streaming (needs Java): a worker process draining the topic on a real Apache Kafka broker
against a bare aiokafka consumer that decodes each message and does nothing else. The worker
is timed twice: until it has processed every event (its ``raiwatch_events_total``), which is
what the bare consumer is timed to, and until its consumer group has committed every offset
(lag 0), which also waits for the last windows to close on idleness and be written; then once
more, to its last event, with every monitor family turned off.
Both also print their CPU seconds (user and system, every thread: what a CPU quota pays); the
replay its peak resident memory, and how much of it was mapped library files (chdb's code alone
is about 170 MB of it) rather than its own.
``--faust``: a faust-streaming agent that only decodes, on the same topic after the bare consumer
(``bench/faust_baseline.py``; why the worker is not a faust app).
``--peers``: whylogs and Evidently on the same events (``bench/peers.py``), and raiwatch's replay
rate over theirs.
The replay is also run with every monitor family turned off (``monitors.<family>.enabled``): what
decoding, storing and the pipeline cost alone, so the monitors' share is the difference;
``--families``: once more with each family alone (skipped both with ``--config``).
``--profile``: also the replay in this process under cProfile, its time split by stage (decode,
each monitor, rules, storage preparation, waiting for the writer thread) and the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from faust_baseline import FaustRun, faust_noop  # noqa: E402

from monitors.registry import monitor_classes  # noqa: E402
from raiwatch.core.codec import telemetry_codec  # noqa: E402
from raiwatch.dev import localkafka, synth  # noqa: E402
from tests.harness import lag, scrape, start_worker, stop_worker, wait_drained, write_config  # noqa: E402

IDLE_CLOSE_S = 1.0  # the worker's windows.idle_close_s: how long a drained topic waits to close


def decode_only_file(path: Path) -> float:
    t0 = time.perf_counter()
    n = 0
    with path.open("rb") as f:
        batch: list[bytes] = []
        for line in f:
            batch.append(line.rstrip(b"\n"))
            if len(batch) == 20_000:
                n += len(telemetry_codec.decode_batch(batch).events)
                batch = []
        n += len(telemetry_codec.decode_batch(batch).events)
    return time.perf_counter() - t0


def _children_cpu() -> float:
    """CPU seconds (user and system) of this process's waited-for children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _cpu_of(pid: int) -> float:
    """CPU seconds (user and system) a running process has used (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Memory(NamedTuple):
    peak: int  # MB, the process's VmHWM (its largest resident set)
    anonymous: int  # MB of it that was the process's own memory (RssAnon), at the largest sample
    files: int  # MB of it that was mapped files, i.e. libraries' code and data (RssFile)


def _status_mb(pid: int) -> dict[str, int]:
    """The ``/proc/<pid>/status`` memory lines, in MB ({} once the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {
        k: int(v.split()[0]) // 1024
        for k, _, v in (x.partition(":") for x in lines)
        if k[:3] in ("VmH", "VmR", "Rss")
    }


def _watch_memory(proc: subprocess.Popen, seen: list[dict[str, int]]) -> None:
    """Read ``proc``'s memory every 20 ms until it exits: ``seen`` keeps the largest sample (by
    VmRSS) and, last, the latest (for its VmHWM)."""
    while proc.poll() is None:
        now = _status_mb(proc.pid)
        if now.get("VmHWM"):
            if not seen or now.get("VmRSS", 0) > seen[0].get("VmRSS", 0):
                seen[:1] = [now]
            seen[1:] = [now]
        time.sleep(0.02)


def replay_seconds(path: Path, out: Path, config: Path | None = None) -> tuple[float, float, Memory, str]:
    """Wall seconds of a whole ``raiwatch replay``, its CPU seconds, its memory, and its summary lines."""
    t0, cpu0 = time.perf_counter(), _children_cpu()
    extra = ["--config", str(config)] if config else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "raiwatch.cli", "replay", str(path), "--out", str(out), "--quiet", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[dict[str, int]] = []
    watch = threading.Thread(target=_watch_memory, args=(proc, seen), daemon=True)
    watch.start()
    stdout, stderr = proc.communicate()
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    watch.join()
    if proc.returncode:
        raise SystemExit(f"raiwatch replay exited {proc.returncode}:\n{stderr[-2000:]}")
    top = seen[0] if seen else {}
    memory = Memory(seen[-1].get("VmHWM", 0) if seen else 0, top.get("RssAnon", 0), top.get("RssFile", 0))
    cost = [x for x in stdout.splitlines() if x.startswith("monitor cost")]
    lines = stdout.splitlines()[0] + ("\n" + cost[0] if cost else "")
    return wall, cpu, memory, lines


async def _bare_consumer(bootstrap: str, topic: str, total: int) -> float:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bare-{time.time_ns()}",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    t0 = time.perf_counter()
    await c.start()
    seen = 0
    try:
        while seen < total:
            got = await c.getmany(timeout_ms=1000, max_records=5000)
            for msgs in got.values():
                telemetry_codec.decode_batch([m.value for m in msgs])
                seen += len(msgs)
    finally:
        await c.stop()
    return time.perf_counter() - t0


def stream(
    path: Path, total: int, work: Path, batch_size: int, faust: bool = False
) -> tuple[float, FaustRun | None, Worker, Worker]:
    """Seconds of the bare consumer, faust's no-op agent's figures (``--faust``), the worker's, and
    those of a worker with every monitor family turned off (a group of its own, same topic)."""
    from streams.producer import produce

    localkafka.install()
    with localkafka.LocalKafka(work / "kafka") as broker:
        bootstrap = broker.start()
        topic = "bench.telemetry"
        localkafka.create_topics(bootstrap, {topic: 4})
        with path.open("rb") as f:
            produce(f, bootstrap, topic)
        bare = asyncio.run(_bare_consumer(bootstrap, topic, total))
        noop = faust_noop(bootstrap, topic, total, work / "faust") if faust else None
        worker = _worker(work / "all", bootstrap, topic, total, batch_size, "")
        none = _worker(work / "none", bootstrap, topic, total, batch_size, _only([]))
    return bare, noop, worker, none


def _worker(work: Path, bootstrap: str, topic: str, total: int, batch_size: int, extra: str) -> Worker:
    """A worker (settings ``extra`` added) draining ``topic`` in a consumer group of its own."""
    work.mkdir()
    group = f"bench-worker-{work.name}"
    cfg = write_config(work / "bench.yaml", bootstrap, topic, group, extra, idle_close_s=IDLE_CLOSE_S)
    cfg.write_text(
        cfg.read_text().replace("  session_timeout_s:", f"  batch_size: {batch_size}\n  session_timeout_s:")
    )
    log = work / "worker.log"
    port = localkafka.free_port()
    proc = start_worker(cfg, work / "data", log, "--metrics-port", str(port))
    try:
        t_deadline = time.monotonic() + 120
        while "worker ready" not in log.read_text():
            if time.monotonic() > t_deadline or proc.poll() is not None:
                raise SystemExit(f"worker did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        t0, cpu0 = time.perf_counter(), _cpu_of(proc.pid)
        seen = _when_processed(port, total, proc, t0)
        wait_drained(bootstrap, group, topic, proc, log, timeout=600)
        drained = time.perf_counter() - t0
        cpu = _cpu_of(proc.pid) - cpu0
        assert lag(bootstrap, group, topic) == 0
        spent = _worker_seconds(scrape(port))
    finally:
        stop_worker(proc)
    return Worker(seen, drained, cpu, spent)


class Worker(NamedTuple):
    processed: float  # seconds from "worker ready" until every event was counted by the pipeline
    drained: float  # seconds until lag 0: every window closed and written, every offset committed
    cpu: float  # CPU seconds (user and system, every thread) until lag 0
    spent: dict[str, float]  # its /metrics: seconds per stage, monitor and table


def _when_processed(port: int, total: int, proc: subprocess.Popen, t0: float) -> float:
    """Seconds after ``t0`` at which the worker's ``raiwatch_events_total`` reached ``total`` (its
    /metrics read every 0.1 s: the figure is late by up to that)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if scrape(port).get("raiwatch_events_total", 0.0) >= total:
                return time.perf_counter() - t0
        except OSError:  # the metrics server is not up yet
            pass
        time.sleep(0.1)
    raise SystemExit(f"the worker did not count {total:,} events (exit status {proc.poll()})")


def _worker_seconds(samples: dict[str, float]) -> dict[str, float]:
    """Seconds the worker spent per pipeline stage, per monitor family and per ClickHouse table
    written (from its /metrics)."""
    out: dict[str, float] = {}
    for key, value in samples.items():
        if key.startswith("raiwatch_stage_seconds_sum{"):
            out["stage " + key.split('stage="', 1)[1].split('"', 1)[0]] = value
        elif key.startswith("raiwatch_monitor_seconds_total{"):
            fam = key.split('family="', 1)[1].split('"', 1)[0]
            out[f"monitor {fam}"] = out.get(f"monitor {fam}", 0.0) + value
        elif key.startswith("raiwatch_clickhouse_write_seconds_sum{"):
            out["write " + key.split('table="', 1)[1].split('"', 1)[0]] = value
        elif key.startswith("raiwatch_clickhouse_write_seconds_count{"):
            out["inserts " + key.split('table="', 1)[1].split('"', 1)[0]] = value
        elif key.startswith("raiwatch_stage_seconds_count{"):
            out["calls " + key.split('stage="', 1)[1].split('"', 1)[0]] = value
    return out


STAGES = (  # (stage, path fragment of the functions whose own time counts for it), first match wins
    ("decode + validate", "raiwatch/core/codec.py"),
    ("decode + validate", "msgspec.json.Decoder"),
    ("columnar batch (EventColumns, shared by the monitors)", "raiwatch/core/columns.py"),
    ("monitor: safety", "monitors/safety.py"),
    ("monitor: drift", "monitors/drift.py"),
    ("monitor: abuse", "monitors/abuse.py"),
    ("monitor: fairness", "monitors/fairness.py"),
    ("monitor: fairness", "monitors/segments.py"),
    ("monitor: quality", "monitors/quality.py"),
    ("monitor: quality", "monitors/labeljoin.py"),
    ("rules", "alert_rules/"),
    ("storage preparation (columns, text removal)", "storage/clickhouse/writer.py"),
    ("storage preparation (columns, text removal)", "storage/clickhouse/rawtext.py"),
    ("waiting for the writer thread", "_thread.lock"),
    ("window clock, dedup", "monitors/windows.py"),
    ("window clock, dedup", "monitors/dedup.py"),
    ("pipeline bookkeeping (per-event lists, metrics)", "raiwatch/pipeline.py"),
    ("replay loop (reading and splitting the file)", "raiwatch/replay.py"),
    ("records (msgspec structs, timestamps)", "raiwatch/core/records.py"),
)


def profile(path: Path, out: Path) -> None:
    """The replay under cProfile: own time per stage, then the 15 costliest functions."""
    import cProfile
    import pstats

    from raiwatch.core.config import load_config
    from raiwatch.replay import replay

    prof = cProfile.Profile()
    prof.enable()
    summary = replay(path, load_config(None), out)
    prof.disable()
    stats = pstats.Stats(prof)
    by_stage: dict[str, float] = {}
    total = 0.0

    def stage_of(func: tuple) -> str:
        where = f"{func[0]}:{func[2]}"
        return next((s for s, frag in STAGES if frag in where), "other (interpreter, replay loop)")

    for func, (_cc, _nc, tt, _ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tt
        if callers and stage_of(func).startswith("other"):
            # a builtin or a library function (dict.get, numpy, msgspec): its time goes to the
            # stages of its callers
            calls = sum(c[1] for c in callers.values()) or 1
            for caller, c in callers.items():
                by_stage[stage_of(caller)] = by_stage.get(stage_of(caller), 0.0) + tt * c[1] / calls
        else:
            by_stage[stage_of(func)] = by_stage.get(stage_of(func), 0.0) + tt
    n = summary.events
    print(
        f"profile     {n:,} events, {total:.2f} s of profiled time ({n / total:,.0f} events/s under cProfile)"
    )
    for stage, t in sorted(by_stage.items(), key=lambda x: -x[1]):
        print(f"profile     {stage:<46} {t / n * 1e6:6.2f} µs/event  {t / total:6.1%}")
    stats.sort_stats("tottime").print_stats(15)


def _after_start_up(line: str) -> float:
    """A replay's own seconds, after start-up: from its lines per second (five digits), not its
    "in 5.2s"."""
    lines, rate = re.search(r"replayed (\d+) lines in [0-9.]+s \(([0-9,]+) lines/s\)", line).groups()
    return int(lines) / float(rate.replace(",", ""))


def _only(on: list[str]) -> str:
    """Settings (YAML) with only these monitor families on."""
    off = "".join(f"  {f}: {{enabled: false}}\n" for f in monitor_classes() if f not in on)
    return f"monitors:\n{off}" if off else ""


def _families(work: Path, on: list[str]) -> Path:
    """A settings file with only these monitor families on."""
    path = work / f"families-{'-'.join(on) or 'none'}.yaml"
    path.write_text(_only(on))
    return path


def replay(path: Path, work: Path, args: argparse.Namespace) -> float:
    """The replay line: ``raiwatch replay`` against reading and decoding the same file; its
    events per second after start-up."""
    base = decode_only_file(path)
    full, cpu, mem, line = replay_seconds(path, work / "replay", args.config)
    inner = _after_start_up(line)
    print(f"replay      decode-only baseline: {args.events / base:>9,.0f} events/s ({base:.2f} s)")
    print(
        f"replay      raiwatch replay:      {args.events / inner:>9,.0f} events/s ({inner:.2f} s after "
        f"start-up, {full:.2f} s whole command)  ratio {base / inner:.2f} ({base / full:.2f} whole)"
    )
    print(f"replay      CPU of the whole command: {cpu:.2f} s, user and system, every thread")
    print(
        f"replay      memory: peak resident {mem.peak} MB; at the largest sample {mem.anonymous} MB its own"
        f" (RssAnon), {mem.files} MB mapped library files (RssFile: code, shared and reclaimable)"
    )
    print(f"replay      {line.splitlines()[-1]}")
    if not args.config:
        none = _after_start_up(replay_seconds(path, work / "none", _families(work, []))[3])
        print(
            f"replay      no monitor family:    {args.events / none:>9,.0f} events/s ({none:.2f} s after"
            f" start-up)  ratio {base / none:.2f}: decoding, storing and the pipeline alone; the"
            f" monitors' share of the rest, {(inner - none) / args.events * 1e6:.1f} µs an event"
        )
        for family in monitor_classes() if args.families else ():
            alone = _after_start_up(replay_seconds(path, work / family, _families(work, [family]))[3])
            print(
                f"replay      only {family + ':':<17} {args.events / alone:>9,.0f} events/s ({alone:.2f} s)"
                f"  ratio {base / alone:.2f}, {(alone - none) / args.events * 1e6:+.1f} µs an event over"
                " none (its columns, observe, close, signals, rules and rows)"
            )
    if args.profile:
        profile(path, work / "profiled")
    return args.events / inner


def peers(path: Path, work: Path, rate: float, budget_s: float) -> None:
    """whylogs and Evidently on the same events (``bench/peers.py``), beside the replay's rate."""
    import peers as p  # bench/peers.py

    t0 = time.perf_counter()
    df = p.frame(path, 60)
    per_event = (time.perf_counter() - t0) / len(df)  # reading and flattening the JSON, per event
    for name, (peer, done, n) in (
        ("whylogs 1.6.4, a profile per model window", p.whylogs_rate(df, budget_s, work)),
        ("Evidently 0.7.23, DataDriftPreset per model window", p.evidently_rate(df, budget_s)),
    ):
        read = 1 / (1 / peer + per_event)
        print(
            f"peers       {name}: {peer:,.0f} events/s given flattened frames, {read:,.0f} reading the"
            f" JSON too ({done} windows, {n:,} events)  raiwatch replay / it: {rate / peer:.2f},"
            f" {rate / read:.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--no-stream", action="store_true")
    ap.add_argument("--no-replay", action="store_true", help="the streaming measurement only")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--families", action="store_true", help="also a replay with each monitor family alone")
    ap.add_argument("--peers", action="store_true", help="whylogs and Evidently on the same events")
    ap.add_argument("--peers-budget-s", type=float, default=30.0, help="wall seconds each peer runs")
    ap.add_argument("--faust", action="store_true", help="a faust agent that only decodes, streaming")
    ap.add_argument("--batch-size", type=int, default=5000, help="the worker's kafka.batch_size")
    ap.add_argument("--config", type=Path, help="raiwatch settings for the replay")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / "events.jsonl"
        start = synth.recent_start(args.events, 40.0)
        truth = synth.write(path, synth.default_scenario(args.events, start=start))
        size_mb = path.stat().st_size / 1e6
        print(f"{args.events:,} events, {size_mb:.0f} MB, {truth['malformed']} malformed")
        if not args.no_replay:
            rate = replay(path, work, args)
            if args.peers:
                peers(path, work, rate, args.peers_budget_s)
        if args.no_stream or not localkafka.java_available():
            return
        bare, noop, w, none = stream(path, args.events, work, args.batch_size, args.faust)
        n = args.events
        print(
            f"streaming   bare aiokafka+decode: {n / bare:>9,.0f} events/s ({bare:.2f} s,"
            " group join included)"
        )
        if noop:
            print(
                f"streaming   faust no-op agent:    {n / noop.drained:>9,.0f} events/s ({noop.drained:.2f} s"
                f" from its first batch; {noop.first:.2f} s of start-up and group join before it)"
                f"  ratio {bare / noop.drained:.2f}"
            )
        print(
            f"streaming   raiwatch worker:      {n / w.processed:>9,.0f} events/s ({w.processed:.2f} s until "
            f"every event was processed, group join included)  ratio {bare / w.processed:.2f}"
            f"  (kafka.batch_size {args.batch_size})"
        )
        print(
            f"streaming   raiwatch worker:      {n / w.drained:>9,.0f} events/s ({w.drained:.2f} s to lag 0:"
            f" the last windows closed after idle_close_s {IDLE_CLOSE_S:g} s, written, committed)"
            f"  ratio {bare / w.drained:.2f}"
        )
        print(
            f"streaming   no monitor family:    {n / none.processed:>9,.0f} events/s ({none.processed:.2f} s"
            f" until every event was processed)  ratio {bare / none.processed:.2f}: consuming, decoding,"
            " storing and the pipeline alone"
        )
        print(f"streaming   worker CPU to lag 0: {w.cpu:.2f} s, user and system, every thread")
        spent = w.spent
        for kind in ("stage", "monitor", "write", "inserts", "calls"):
            unit = "" if kind in ("inserts", "calls") else " s"
            line = ", ".join(
                f"{k.split(' ', 1)[1]} {v:.{0 if not unit else 1}f}{unit}"
                for k, v in sorted(spent.items())
                if k.startswith(kind + " ")
            )
            print(f"streaming   worker time, {kind}: {line}")


if __name__ == "__main__":
    main()
