"""Analysts query the embedded trend tables while a worker holds them (its read-only HTTP endpoint)."""

from __future__ import annotations

import urllib.parse
import urllib.request
import uuid

import pytest

from raiwatch.dev import synth
from streams.producer import produce
from tests.harness import cli, poll, start_worker, stop_worker, write_config

pytestmark = pytest.mark.kafka
EVENTS = 3_000


def test_query_while_the_worker_runs_goes_through_its_read_only_endpoint(kafka_bootstrap, tmp_path):
    events = tmp_path / "events.jsonl"
    truth = synth.write(
        events, synth.default_scenario(EVENTS, seed=3, rate_per_s=20, start=synth.recent_start(EVENTS, 20))
    )
    run = uuid.uuid4().hex[:8]
    topic, group = f"live-{run}", f"raiwatch-{run}"
    extra = "clickhouse:\n  http_max_result_rows: 10000\n"
    cfg = write_config(tmp_path / "raiwatch.yaml", kafka_bootstrap, topic, group, extra)
    data = tmp_path / "data"
    log = tmp_path / "worker.log"
    url_file = data / "clickhouse.url"
    worker = start_worker(cfg, data, log)
    try:
        poll(lambda: url_file.exists() or worker.poll() is not None, 120, "the worker to serve its store")
        assert worker.poll() is None, log.read_text()[-3000:]
        with events.open("rb") as f:
            produce(f, kafka_bootstrap, topic)

        def count() -> int:
            p = cli("query", "--config", str(cfg), "--data-dir", str(data), "--json",
                    "SELECT count() AS n FROM raiwatch.telemetry_events FINAL")  # fmt: skip
            assert p.returncode == 0, p.stderr
            return int(p.stdout.split('"n":')[1].split("}")[0])

        poll(lambda: count() == truth["valid"], 120, "every event to be queryable while the worker runs")
        # read-only: a write is refused in one line, and nothing is dropped
        drop = cli("query", "--config", str(cfg), "--data-dir", str(data), "DROP TABLE raiwatch.signals")
        assert drop.returncode == 2 and "Traceback" not in drop.stderr
        assert "readonly" in drop.stderr.lower() and len(drop.stderr.strip().splitlines()) == 1
        # bounded: a result over clickhouse.http_max_result_rows is refused, not streamed
        big = cli("query", "--config", str(cfg), "--data-dir", str(data),
                  "SELECT number FROM system.numbers LIMIT 20000")  # fmt: skip
        assert big.returncode == 2 and "10.00 thousand" in big.stderr and "Traceback" not in big.stderr
        # plain HTTP (curl) speaks to it too
        url = url_file.read_text().strip()
        sql = urllib.parse.quote("SELECT count() FROM raiwatch.telemetry_events FINAL")
        with urllib.request.urlopen(f"{url}/?query={sql}", timeout=30) as r:
            assert int(r.read()) == truth["valid"]
    finally:
        stop_worker(worker)
    assert not url_file.exists()  # the worker removes what it wrote
    after = cli("query", "--config", str(cfg), "--data-dir", str(data), "--json",
                "SELECT count() AS n FROM raiwatch.signals")  # fmt: skip
    assert after.returncode == 0 and '"n":0' not in after.stdout, after.stderr  # the table is still there
