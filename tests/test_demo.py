"""``raiwatch demo``, the README's first command, end to end: its own broker, a worker, the
incidents (a smaller stream than the default's 60,000 events, the same scenario)."""

from __future__ import annotations

import pytest

from raiwatch.dev.localkafka import java_available
from tests.conftest import NO_JAVA_REASON
from tests.harness import cli


@pytest.mark.skipif(not java_available(), reason=NO_JAVA_REASON)
def test_the_demo_drains_its_stream_and_shows_the_incidents(tmp_path):
    p = cli("demo", "--events", "12000", "--data-dir", str(tmp_path / "demo"), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    assert "5/5" in out and "INCIDENT OPENED [critical]" in out
    assert "runbook: file://" in out and "Data: ClickHouse (embedded chdb) at" in out
