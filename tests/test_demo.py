"""``raiwatch demo``, the README's first command, end to end: its own broker, a worker, the
incidents (a smaller stream than the default's 60,000 events, the same scenario)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raiwatch.dev.localkafka import java_available
from tests.conftest import NO_JAVA_REASON
from tests.harness import ROOT, alive, cli, poll


@pytest.mark.skipif(not java_available(), reason=NO_JAVA_REASON)
def test_the_demo_drains_its_stream_and_shows_the_incidents(tmp_path):
    p = cli("demo", "--events", "12000", "--data-dir", str(tmp_path / "demo"), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    assert "5/5" in out and "INCIDENT OPENED [critical]" in out
    assert "runbook: file://" in out and "Data: ClickHouse (embedded chdb) at" in out


@pytest.mark.skipif(not java_available(), reason=NO_JAVA_REASON)
def test_the_otel_demo_opens_the_tenant_incident(tmp_path):
    """``raiwatch demo --otel`` (the SDK's own OTLP encoder where no Collector is built): the
    instrumented app's paced traffic opens the incident for the tenant whose answers turn toxic."""
    p = cli("demo", "--otel", "--data-dir", str(tmp_path / "otel"), timeout=280)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    opened = [ln for ln in p.stdout.splitlines() if "INCIDENT OPENED" in ln]
    assert len(opened) == 1 and "[critical]" in opened[0] and "tenant globex" in opened[0], p.stdout


def _workers_of(data: Path) -> list[int]:
    """Running ``raiwatch run`` processes whose config lies under ``data``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"raiwatch.cli" in argv and b"run" in argv and any(str(data).encode() in a for a in argv):
            found.append(int(proc.name))
    return [p for p in found if alive(p)]


@pytest.mark.skipif(not java_available(), reason=NO_JAVA_REASON)
def test_a_killed_demo_leaves_no_broker_or_worker_behind(tmp_path):
    data = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "raiwatch.cli", "demo", "--events", "12000", "--data-dir", str(data)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        log = data / "worker.log"
        poll(lambda: log.is_file() and "worker ready" in log.read_text(), 180, "the demo's worker")
        broker = int((data / "kafka" / "broker.pid").read_text())
        workers = _workers_of(data)
        assert len(workers) == 1 and alive(broker)
    finally:
        demo.kill()  # SIGKILL: the demo itself cleans nothing up
        demo.wait(30)
    poll(lambda: not alive(broker) and not _workers_of(data), 60, "the broker and the worker to stop")
