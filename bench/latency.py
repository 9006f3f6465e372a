"""Alert latency under load: from a breaching window to its incident in the store and at a webhook.

    .venv/bin/python bench/latency.py [--rate 10000] [--models 40] [--window 10] [--lateness 2]

A local Apache Kafka broker, one worker (``raiwatch run``, all monitors on) and a producer
offering ``--rate`` events/s of ``--models`` LLM models on 4 partitions, each event stamped with
the wall clock as it is sent. After a quiet start of 90 s (the drift reference and abuse's
regular accounts are learned in its first minute), two models a window turn half their events
into jailbreaks for one window each. A bench rule (``for: 0s``) opens an incident on the first
breaching window; a webhook route delivers it to a receiver in this process. The store is polled
every 10 ms (SQLite, read-only).

Two figures per incident (percentiles over all of them):

- **pipeline**: from the moment the window *could* close, its end plus ``windows.allowed_lateness_s``
  (the first events past it are sent then, on every partition), to the incident in the store and
  at the webhook: what the worker adds.
- **end to end**: from the window's end (its last event) to the same: adds the allowed lateness,
  a setting (30 s by default, ``--lateness`` here).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from kafka import KafkaProducer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raiwatch.dev import localkafka  # noqa: E402
from tests.harness import scrape, start_worker, stop_worker  # noqa: E402

RULE = """groups:
  - name: latency
    rules:
      - alert: LatencyProbe
        signal: safety.violation_rate
        group_by: [model_id, category]
        match: {category: jailbreak}
        fire_when: lower > 0.2
        min_samples: 50
        for: 0s
        clear_when: value < 0.05
        keep_firing_for: 0s
        severity: critical
        annotations:
          summary: "{{ model_id }}: jailbreaks {{ value | pct }}"
          runbook: probe.md
"""
EVENT = (
    '{{"schema_version":1,"event_id":"{eid}","timestamp":"{ts}","model":{{"id":"{model}","kind":"llm"}},'
    '"tenant_id":"t{tenant}","user_id":"u{user}",'
    '"request":{{"text":"question {q}","tokens":9,"language":"en"}},'
    '"safety":{{"scores":{{"jailbreak":{score}}},"violations":{viol},"action":"{action}"}},'
    '"response":{{"tokens":120,"latency_ms":300.0,"finish_reason":"stop"}},"segments":{{"region":"eu"}}}}'
)


class Receiver(ThreadingHTTPServer):
    """Records when each model's incident reached the webhook."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("X-Raiwatch-Event") == "opened":
                    rec.seen.setdefault(json.loads(body)["labels"]["model_id"], time.time())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def produce(
    bootstrap: str, topic: str, rate: float, models: int, window: int, plan: dict, stop_at: float
) -> None:
    """Offer ``rate`` events/s until ``stop_at``; ``plan``: window start -> models that breach in it."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5, batch_size=256 * 1024)
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    n = 0
    next_t = time.time()
    while next_t < stop_at:
        now = time.time()
        if now < next_t:
            time.sleep(next_t - now)  # pacing a producer at the offered rate
        ts = time.time()
        start = int(ts // window * window)
        breaching = plan.get(start, ())
        stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for _ in range(per_tick):
            m = n % models
            model = f"model-{m:02d}"
            bad = m in breaching and (n // models) % 2 == 0  # half of the model's events
            line = EVENT.format(
                eid=f"e{n}", ts=stamp, model=model, tenant=n % 7, user=n % 5000, q=n % 50,
                score=0.97 if bad else 0.01, viol='["jailbreak"]' if bad else "[]",
                action="blocked" if bad else "allowed",
            )  # fmt: skip
            producer.send(topic, key=model.encode(), value=line.encode())
            n += 1
        next_t += tick
    producer.flush()
    producer.close()


def stage_means(samples: dict[str, float]) -> dict[str, float]:
    """Mean seconds per batch of each pipeline stage and of the biggest ClickHouse writes."""
    out = {}
    for name, label in (("raiwatch_stage_seconds", "stage"), ("raiwatch_clickhouse_write_seconds", "table")):
        for key, total in samples.items():
            if key.startswith(f"{name}_sum{{"):
                what = key.split(f'{label}="', 1)[1].split('"', 1)[0]
                count = samples.get(key.replace("_sum{", "_count{"), 0)
                if count and (label == "stage" or what in ("telemetry_events", "signals")):
                    out[what] = total / count
    windows = samples.get('raiwatch_stage_seconds_count{stage="close"}', 0)
    for key, total in samples.items():  # each family's share of a window close
        if key.startswith("raiwatch_monitor_seconds_total{") and 'phase="close"' in key and windows:
            out["close: " + key.split('family="', 1)[1].split('"', 1)[0]] = total / windows
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--models", type=int, default=40)
    ap.add_argument("--window", type=int, default=10, help="windows.size_s")
    ap.add_argument("--lateness", type=float, default=2.0, help="windows.allowed_lateness_s")
    ap.add_argument("--per-window", type=int, default=2, help="models that breach in each window")
    args = ap.parse_args()
    console = Console(stderr=True)
    localkafka.install()
    with (
        tempfile.TemporaryDirectory(prefix="raiwatch-latency-") as tmp,
        localkafka.LocalKafka(Path(tmp) / "kafka") as broker,
    ):
        work = Path(tmp)
        bootstrap = broker.start()
        rules = work / "rules"
        (rules / "runbooks").mkdir(parents=True)
        (rules / "probe.yaml").write_text(RULE)
        (rules / "runbooks" / "probe.md").write_text("# probe\n")
        receiver = Receiver()
        topic = "latency.telemetry"
        cfg = work / "raiwatch.yaml"
        cfg.write_text(
            f"kafka:\n  bootstrap_servers: '{bootstrap}'\n  telemetry_topic: {topic}\n"
            f"  dlq_topic: {topic}.dlq\n"
            f"  feedback_topic: {topic}.feedback\n  group_id: latency\n  partitions: 4\n"
            f"windows:\n  size_s: {args.window}\n  allowed_lateness_s: {args.lateness}\n  idle_close_s: 2\n"
            f"rules_dir: '{rules}'\nrules_watch_s: 0\n"
            # steady state within the run: drift's reference and abuse's regular accounts learned in
            # the first minute (by default an hour: while learning, a close costs ~0.45 s more at 100k
            # events a window)
            "monitors:\n  drift: {reference_s: 60}\n  abuse: {warmup_s: 60}\n"
            f"notify:\n  routes:\n    - {{name: hook, type: webhook, url: 'http://127.0.0.1:{receiver.server_port}/'}}\n"
        )
        log = work / "worker.log"
        metrics_port = localkafka.free_port()
        proc = start_worker(cfg, work / "data", log, "--metrics-port", str(metrics_port))
        deadline = time.monotonic() + 120
        while "worker ready" not in log.read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"worker did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)  # waiting for a process's ready line, with a deadline
        w = args.window
        first = (int(time.time()) // w + 2) * w + 90  # quiet: the worker joins and learns (60 s)
        plan: dict[int, list[int]] = {}
        for m in range(args.models):
            plan.setdefault(first + (m // args.per_window) * w, []).append(m)
        stop_at = max(plan) + 2 * w + args.lateness
        console.print(
            f"offering {args.rate:,.0f} events/s of {args.models} models for {stop_at - time.time():.0f} s; "
            f"{args.per_window} models breach per {w} s window"
        )
        breaches = {k: set(v) for k, v in plan.items()}
        t = threading.Thread(
            target=produce, args=(bootstrap, topic, args.rate, args.models, w, breaches, stop_at), daemon=True
        )
        t.start()
        db = sqlite3.connect(f"file:{work / 'data' / 'incidents.db'}?mode=ro", uri=True, timeout=1)
        stored: dict[str, float] = {}
        end_of = {f"model-{m:02d}": start + w for start, ms in plan.items() for m in ms}
        deadline = stop_at + 60
        while time.time() < deadline and (len(stored) < args.models or len(receiver.seen) < args.models):
            try:
                rows = db.execute("SELECT labels FROM incidents WHERE rule = 'LatencyProbe'").fetchall()
            except sqlite3.OperationalError:  # the worker has not created it yet
                rows = []
            now = time.time()
            for (labels,) in rows:
                stored.setdefault(json.loads(labels)["model_id"], now)
            time.sleep(0.01)  # polling the store every 10 ms is the measurement
        sent = t.is_alive()
        t.join(60)
        stages = stage_means(scrape(metrics_port))
        text = log.read_text()
        stop_worker(proc)
        db.close()
    offered = "kept up" if not sent else "producer still running at the end"
    table = Table(title=f"Alert latency at {args.rate:,.0f} events/s offered ({offered}), "
                        f"{w} s windows, allowed lateness {args.lateness:g} s")  # fmt: skip
    for c in ("measured from", "to", "n", "p50 s", "p90 s", "p99 s", "max s"):
        table.add_column(c, justify="right")
    for to, seen in (("incident in the store", stored), ("webhook received", receiver.seen)):
        for origin, lag in (("window end + lateness", args.lateness), ("window end", 0.0)):
            xs = [seen[m] - (end_of[m] + lag) for m in seen if m in end_of]
            if xs:
                table.add_row(origin, to, str(len(xs)), f"{statistics.median(xs):.2f}", f"{pct(xs, 0.9):.2f}",
                              f"{pct(xs, 0.99):.2f}", f"{max(xs):.2f}")  # fmt: skip
    out = Console()
    out.print(table)
    missing = sorted(set(end_of) - set(stored))
    if missing:
        out.print(f"no incident for {len(missing)} models: {missing[:5]}")
    out.print(
        "worker, mean per batch: "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in stages.items())
        + " (raiwatch_stage_seconds, raiwatch_clickhouse_write_seconds)"
    )
    behind = [ln for ln in text.splitlines() if "paused" in ln]
    out.print(f"worker log: {len(text.splitlines())} lines, {len(behind)} about paused input")
    return 0


if __name__ == "__main__":
    sys.exit(main())
