"""A real Prometheus server (Debian's ``prometheus``) scrapes a live worker; ``promtool`` lints the names."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from raiwatch.dev import synth
from raiwatch.dev.localkafka import free_port
from streams.producer import produce
from tests.harness import poll, start_worker, stop_worker, wait_drained, write_config

pytestmark = pytest.mark.kafka
EVENTS = 3_000


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:  # not listening yet
        return 0, b""


def _listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses a socket of this machine listens on at ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:  # LISTEN
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return found


def test_prometheus_scrapes_a_live_worker_and_reads_its_metrics_back(kafka_bootstrap, tmp_path):
    if shutil.which("prometheus") is None:
        pytest.skip("no Prometheus server: apt-get install prometheus (deploy/system-deps.sh does)")
    events = tmp_path / "events.jsonl"
    truth = synth.write(
        events,
        synth.default_scenario(
            EVENTS, seed=9, garbage_fraction=0.02, rate_per_s=20, start=synth.recent_start(EVENTS, 20)
        ),
    )
    run = uuid.uuid4().hex[:8]
    topic, group = f"prom-{run}", f"raiwatch-{run}"
    cfg = write_config(tmp_path / "raiwatch.yaml", kafka_bootstrap, topic, group)
    port, prom_port = free_port(), free_port()
    log = tmp_path / "worker.log"
    worker = start_worker(cfg, tmp_path / "data", log, "--metrics-port", str(port))
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: raiwatch\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )

    def value(expr: str) -> float | None:
        q = urllib.parse.quote(expr)
        status, body = _get(f"http://127.0.0.1:{prom_port}/api/v1/query?query={q}")
        if status != 200:
            return None
        result = json.loads(body)["data"]["result"]
        return sum(float(r["value"][1]) for r in result) if result else None

    try:
        poll(lambda: _get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 120, "the worker's /healthz")
        assert _listening_addresses(port) == {"127.0.0.1"}  # metrics.host's default: loopback only
        with events.open("rb") as f:
            produce(f, kafka_bootstrap, topic)
        wait_drained(kafka_bootstrap, group, topic, worker, log)
        assert _get(f"http://127.0.0.1:{port}/readyz") == (200, b"ready: consuming and writing\n")
        poll(lambda: value('up{job="raiwatch"}') == 1, 60, "Prometheus to scrape the worker")
        poll(lambda: value("raiwatch_events_total") == truth["valid"], 60, "the event count in Prometheus")
        assert value("raiwatch_rejected_events_total") == truth["malformed"]
        assert value("raiwatch_build_info") == 1
        assert value('raiwatch_stage_seconds_count{stage="decode"}') > 0
        assert value('raiwatch_clickhouse_write_seconds_count{table="signals"}') > 0
        assert value("raiwatch_consumer_lag_messages") == 0  # every partition read to its end
        assert value("raiwatch_event_time_lag_seconds") > 0
        assert value("raiwatch_watermark_timestamp_seconds") > 1.7e9
        # rollups run every clickhouse.rollup_every_s of wall time: on a busy machine after the drain
        poll(lambda: (value("raiwatch_rollups_timestamp_seconds") or 0) > 1.7e9, 60, "a rollup in Prometheus")
        assert value("raiwatch_safety_any_violation_rate") is not None  # a headline AI signal
        _, page = _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        prom.terminate()
        prom.wait(30)
        stop_worker(worker)
    lint = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True)
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()  # names follow the conventions
