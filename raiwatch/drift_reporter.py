"""Evidently drift reports from a running worker: when a drift incident opens, and on a schedule.

The pipeline hands each batch's signals and incident changes to ``DriftReporter`` once they are
written; it only decides and queues, and the reports run on a thread of their own with a
ClickHouse client of their own, so the stream never waits for Evidently. At most ``MAX_PENDING``
reports wait; beyond that one is dropped with a warning (``raiwatch incidents report ID`` still
makes it later).

- **Incident**: a drift incident that opens (``monitors.drift.report_on_incident``) gets its
  model's last ``sliding_windows`` windows before it opened against its reference, in
  ``DATA_DIR/reports/<incident_id>.html`` (``incidents show`` links it).
- **Schedule**: every ``monitors.drift.report_every_s`` of event time (aligned to multiples of it
  since the epoch: midnight UTC for a day), each model with drift signals gets the last
  ``report_every_s`` against its reference, in ``DATA_DIR/reports/<model>-<YYYYmmddTHHMM>.html``.
  The schedule starts at the first boundary after the worker first sees the model's signals.

Each report written is a row of ``drift_reports`` (which columns drifted, the sample sizes, the
path). A report that cannot be made (the reference came from a file, its events expired) is
logged once per model and reference, and counted in ``raiwatch_drift_reports_total``.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from pathlib import Path
from threading import Lock

from raiwatch.core import metrics
from raiwatch.core.errors import RaiwatchError
from raiwatch.core.records import IncidentChange, Signal
from raiwatch.drift_report import DriftReport, incident_report, write_report
from storage.clickhouse import ClickHouseWriter, Client

log = logging.getLogger("raiwatch.reports")

MAX_PENDING = 8  # reports queued or running; more are dropped with a warning
REFERENCE_SIGNAL = "drift.feature"  # the signal whose ``reference`` dim names each model's reference


class DriftReporter:
    """Queue Evidently reports for opened drift incidents and for each model every ``every_s``."""

    def __init__(
        self,
        client: Callable[[], Client],
        database: str,
        out_dir: Path,
        *,
        reference_s: int,
        recent_s: int,
        every_s: int = 86400,
        on_incident: bool = True,
        rows: int = 5000,
    ):
        self._client = client
        self.database = database
        self.out_dir = out_dir
        self.reference_s = reference_s
        self.recent_s = recent_s
        self.every_s = every_s
        self.on_incident = on_incident
        self.rows = rows
        self._next_due: dict[str, float] = {}  # model -> event time of its next scheduled report
        self._pending: set[Future] = set()
        self._lock = Lock()
        self._refused: set[str] = set()  # reasons already logged (once each)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raiwatch-reports")
        self.written: deque[DriftReport] = deque(maxlen=100)  # the latest, for a look from tests

    def __call__(self, signals: Sequence[Signal], changes: Sequence[IncidentChange]) -> None:
        """Look at a written batch (on the writer thread: cheap); queue the reports it asks for."""
        if self.on_incident:
            for c in changes:
                inc = c.incident
                if c.kind == "opened" and inc.signal.startswith("drift.") and inc.labels.get("reference"):
                    self._queue("incident", lambda inc=inc: self._for_incident(inc))
        if self.every_s > 0:
            self._schedule(signals)

    def _schedule(self, signals: Sequence[Signal]) -> None:
        """Queue a model's report for each boundary its windows cross (a batch may close many)."""
        every = self.every_s
        windows = sorted(
            {(s.model_id, s.ts.timestamp(), s.dims["reference"]) for s in signals
             if s.signal == REFERENCE_SIGNAL and "reference" in s.dims}
        )  # fmt: skip
        for model, t, ref in windows:
            due = self._next_due.get(model)
            if due is None or t >= due:
                self._next_due[model] = (math.floor(t / every) + 1) * every
            if due is not None and t >= due:
                end = datetime.fromtimestamp(math.floor(t / every) * every, UTC)
                self._queue("schedule", lambda m=model, r=ref, e=end: self._scheduled(m, r, e))

    def _queue(self, trigger: str, job: Callable[[], DriftReport]) -> None:
        with self._lock:
            self._pending = {f for f in self._pending if not f.done()}
            if len(self._pending) >= MAX_PENDING:
                log.warning("%d drift reports are waiting; one (%s) is dropped", len(self._pending), trigger)
                metrics.DRIFT_REPORTS.labels(trigger, "dropped").inc()
                return
            self._pending.add(self._pool.submit(self._run, trigger, job))

    def _for_incident(self, inc) -> DriftReport:
        report = incident_report(
            self._client(), self.database, inc, self.reference_s, self.recent_s, self.out_dir, self.rows
        )
        self._store(report, "incident", inc.incident_id)
        log.info("drift report of %s: %s", inc.incident_id, report.summary())
        return report

    def _scheduled(self, model: str, reference: str, end: datetime) -> DriftReport:
        name = f"{_safe(model)}-{end:%Y%m%dT%H%M}.html"
        current = (end - timedelta(seconds=self.every_s), end)
        report = write_report(
            self._client(), self.database, model, reference, self.reference_s, current,
            self.out_dir / name, self.rows,
        )  # fmt: skip
        self._store(report, "schedule", "")
        log.info("scheduled drift report of %s: %s", model, report.summary())
        return report

    def _store(self, r: DriftReport, trigger: str, incident_id: str) -> None:
        writer = ClickHouseWriter(self._client(), self.database, retries=3)
        writer.write_drift_report(report_row(r, trigger, incident_id))
        self.written.append(r)

    def _run(self, trigger: str, job: Callable[[], DriftReport]) -> None:
        try:
            job()
        except RaiwatchError as e:
            metrics.DRIFT_REPORTS.labels(trigger, "failed").inc()
            if str(e) not in self._refused:
                self._refused.add(str(e))
                log.warning("no %s drift report: %s", trigger, e)
            return
        except Exception:  # a report is a by-product: it must never stop the worker
            metrics.DRIFT_REPORTS.labels(trigger, "failed").inc()
            log.exception("a %s drift report failed", trigger)
            return
        metrics.DRIFT_REPORTS.labels(trigger, "written").inc()

    def close(self, timeout_s: float = 60.0) -> None:
        """Wait up to ``timeout_s`` for the queued reports, then stop (a stopping worker calls it)."""
        with self._lock:
            pending = set(self._pending)
        _, not_done = wait(pending, timeout=timeout_s)
        if not_done:
            log.warning("stopping with %d drift reports unwritten", len(not_done))
        self._pool.shutdown(wait=False, cancel_futures=True)


def report_row(r: DriftReport, trigger: str, incident_id: str) -> dict[str, object]:
    """The ``drift_reports`` row of a report."""
    return {
        "model_id": r.model_id,
        "reference": r.reference,
        "trigger": trigger,
        "incident_id": incident_id,
        "current_from": r.current_from,
        "current_to": r.current_to,
        "reference_rows": r.reference_rows,
        "current_rows": r.current_rows,
        "columns": r.columns,
        "drifted": r.drifted,
        "drifted_columns": r.drifted_columns,
        "path": str(r.path),
    }


def _safe(name: str) -> str:
    """A model id as a file name part.

    >>> _safe("team/fraud model")
    'team_fraud_model'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "_"
