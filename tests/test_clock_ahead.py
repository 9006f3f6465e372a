"""The date-sensitive tests again, with the clock years ahead: a time-bomb fails the day it is written.

libfaketime (Debian package ``faketime``) moves the wall clock of what reads it through glibc:
Python (``time.time``, ``datetime.now``), the CLI subprocesses, the Kafka broker's JVM. It does not
move the embedded ClickHouse engine: chdb brings its own ``clock_gettime`` (it imports none from
glibc), so ``now()``, ``now64()`` and TTL merges stay on today (measured under ``faketime -f +400d``:
``SELECT now()`` gives the real date, and a row whose TTL had passed by the faked date survives
``OPTIMIZE ... FINAL``). Go servers (Prometheus, Alertmanager) do not move either, so their tests are
left out. ClickHouse's clock is covered by data years old instead: ``tests/test_tables_doc.py``
replays history from 2019 and finds every table kept for the whole retention, and
``tests/test_clickhouse_schema.py`` checks that each TTL counts from when the row was stored.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from tests.harness import ROOT

FAKETIME = shutil.which("faketime")
AHEAD_DAYS = 3653  # ten years: far past every 30-day limit (retention, ingest.max_age_s) and new years

# Tests of what reads the wall clock, none needing a Kafka broker or a Go server: the codec's
# time bounds, retention (against ClickHouse's own clock), writer timestamps, generate's recent
# start through a live worker's age limit, the incident store's and delivery's now, silences.
DATE_SENSITIVE = (
    "tests/test_codec.py",
    "tests/test_clickhouse_schema.py::test_every_ttl_counts_from_when_the_row_was_stored",
    "tests/test_clickhouse_schema.py::test_rows_stored_before_0009_keep_the_expiry_they_had",
    "tests/test_clickhouse_writer.py::test_a_batch_spanning_many_days_of_old_history_is_kept",
    "tests/test_clickhouse_writer.py::test_rejected_inputs_are_kept_with_their_reason",
    "tests/test_synth.py::test_generate_without_a_scenario_writes_the_demos_traffic_for_a_worker",
    "tests/test_ingest_guards.py::test_the_age_limit_applies_to_a_live_worker_not_to_replay",
    "tests/test_incident_store.py::test_ack_resolve_feedback_through_the_api_with_history[sqlite]",
    "tests/test_incident_store.py::test_stats_per_rule_with_time_to_ack_and_resolve[sqlite]",
    "tests/test_alert_delivery.py::test_a_receiver_down_gets_every_notification_once_it_is_back",
    "tests/test_alert_delivery.py::test_a_silence_holds_notifications_back_and_says_so_on_the_incident",
    "tests/test_alert_delivery.py::test_a_flap_is_not_paged_twice_when_resolutions_are_held_back",
    "tests/test_fuzz.py::test_every_input_is_stored_as_validated_or_rejected_with_a_reason",
)


def _ahead(days: int, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """``args`` run with the clock ``days`` ahead. The monotonic clock moves by as much: with
    FAKETIME_DONT_FAKE_MONOTONIC, Python's time.sleep fails with EINVAL under libfaketime 0.9.10."""
    assert FAKETIME, "faketime is not installed (deploy/system-deps.sh installs it)"
    return subprocess.run(
        [FAKETIME, "-f", f"+{days}d", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.timeout(900)
def test_the_date_sensitive_tests_pass_with_the_clock_ahead(tmp_path):
    now = datetime.now(UTC)
    seen = _ahead(AHEAD_DAYS, sys.executable, "-c", "import time; print(time.time())", timeout=60)
    assert seen.returncode == 0, seen.stderr
    moved = datetime.fromtimestamp(float(seen.stdout), UTC) - now
    assert abs(moved - timedelta(days=AHEAD_DAYS)) < timedelta(hours=1), moved  # the clock did move

    p = _ahead(
        AHEAD_DAYS, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "--basetemp", str(tmp_path / "ahead"), *DATE_SENSITIVE, timeout=840,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
