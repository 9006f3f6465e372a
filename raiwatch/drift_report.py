"""Evidently's drift report for a drift incident: the model's recent events against its reference.

The events come back from the ``telemetry_events`` trend table: a sample (by a hash of
``event_id``) of the model's events in the minutes before the incident opened, and of the events
its reference was learned from (the reference id says when learning started; it lasted
``monitors.drift.reference_s``). Their values are taken as the drift monitor takes them
(``features_of``), put in two DataFrames, and given to ``Report([DataDriftPreset()])``; the HTML
is written to a file and a one-line summary returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from monitors.drift import EMBEDDING, features_of
from raiwatch.core.codec import telemetry_codec
from raiwatch.core.errors import RaiwatchError
from raiwatch.core.records import Incident

SAMPLE_SQL = (
    "SELECT raw FROM {db}.telemetry_events FINAL "
    "WHERE model_id = {{m:String}} AND ts >= {{a:DateTime64(3)}} AND ts < {{b:DateTime64(3)}} "
    "ORDER BY cityHash64(event_id) LIMIT {{n:UInt32}}"
)


@dataclass
class DriftReport:
    """One Evidently report written: where, on what, and what it found."""

    path: Path
    model_id: str
    reference: str
    current_from: datetime
    current_to: datetime
    reference_rows: int
    current_rows: int
    columns: int
    drifted_columns: list[str]

    @property
    def drifted(self) -> int:
        return len(self.drifted_columns)

    def summary(self) -> str:
        moved = f": {', '.join(self.drifted_columns[:8])}" if self.drifted_columns else ""
        more = f" and {self.drifted - 8} more" if self.drifted > 8 else ""
        return (
            f"Evidently: {self.drifted} of {self.columns} columns drifted{moved}{more} "
            f"({self.current_rows} recent events against {self.reference_rows} of the reference); "
            f"report: file://{self.path}"
        )


def reference_span(reference_id: str, reference_s: int) -> tuple[datetime, datetime]:
    """When a learned reference's events came in, from its id (``VERSION@YYYYmmddTHHMM``).

    >>> reference_span("1.4.2@20261102T0900", 3600)[0].isoformat()
    '2026-11-02T09:00:00+00:00'
    """
    stamp = reference_id.rsplit("@", 1)[-1]
    if stamp.startswith("file-"):
        raise RaiwatchError(
            f"reference {reference_id} was built from a file (raiwatch reference build), not from "
            "stored events; compare with that file's events in a notebook, or let the model learn one"
        )
    try:
        start = datetime.strptime(stamp, "%Y%m%dT%H%M").replace(tzinfo=UTC)
    except ValueError:
        raise RaiwatchError(f"{reference_id!r} is not a drift reference id (VERSION@YYYYmmddTHHMM)") from None
    return start, start + timedelta(seconds=reference_s)


def _frame(client, database: str, model: str, start: datetime, end: datetime, rows: int) -> pd.DataFrame:
    sql = SAMPLE_SQL.format(db=database)
    raws = client.query(sql, parameters={"m": model, "a": start, "b": end, "n": rows}).result_rows
    events = telemetry_codec.decode_batch([r[0].encode() for r in raws]).events
    records = []
    for ev in events:
        values = features_of(ev)
        values.pop(EMBEDDING, None)
        records.append(values)
    return pd.DataFrame.from_records(records)


def write_report(
    client,
    database: str,
    model: str,
    reference: str,
    reference_s: int,
    current: tuple[datetime, datetime],
    path: Path,
    rows: int = 5000,
) -> DriftReport:
    """Evidently's DataDriftPreset on ``model``'s events in ``current`` against those its
    ``reference`` was learned from (a sample of ``rows`` of each); the HTML in ``path``."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    ref_start, ref_end = reference_span(reference, reference_s)
    ref_frame = _frame(client, database, model, ref_start, ref_end, rows)
    cur_frame = _frame(client, database, model, current[0], current[1], rows)
    if ref_frame.empty or cur_frame.empty:
        which = "reference" if ref_frame.empty else "recent"
        raise RaiwatchError(
            f"no {which} events of {model} in telemetry_events "
            "(expired by events_ttl_days, or another data dir?)"
        )
    columns = [c for c in ref_frame.columns if c in cur_frame.columns and ref_frame[c].notna().any()]
    snap = Report([DataDriftPreset()]).run(current_data=cur_frame[columns], reference_data=ref_frame[columns])
    path.parent.mkdir(parents=True, exist_ok=True)
    snap.save_html(str(path))
    return DriftReport(
        path.resolve(), model, reference, current[0], current[1],
        len(ref_frame), len(cur_frame), len(columns), drifted_columns(snap.dict()["metrics"]),
    )  # fmt: skip


def drifted_columns(metrics: list[dict]) -> list[str]:
    """The columns Evidently's per-column drift tests flagged: a p-value under its threshold, or a
    distance at or over it.

    >>> drifted_columns([{"config": {"type": "evidently:metric_v2:ValueDrift", "column": "x",
    ...     "method": "K-S p_value", "threshold": 0.05}, "value": 1e-9},
    ...     {"config": {"type": "evidently:metric_v2:ValueDrift", "column": "y",
    ...     "method": "Wasserstein distance (normed)", "threshold": 0.1}, "value": 0.02}])
    ['x']
    """
    out = []
    for m in metrics:
        cfg = m.get("config", {})
        if not cfg.get("type", "").endswith(":ValueDrift") or not isinstance(m.get("value"), int | float):
            continue
        value, threshold = float(m["value"]), float(cfg.get("threshold", 0.05))
        p_value = "p_value" in cfg.get("method", "")
        if (value < threshold) if p_value else (value >= threshold):
            out.append(str(cfg["column"]))
    return out


def incident_report(
    client,
    database: str,
    incident: Incident,
    reference_s: int,
    recent_s: int,
    out_dir: Path,
    rows: int = 5000,
) -> DriftReport:
    """The report of a drift incident: its model's last ``recent_s`` before it opened against its
    reference, in ``out_dir/<incident_id>.html``."""
    if not incident.signal.startswith("drift."):
        raise RaiwatchError(
            f"{incident.incident_id} is an incident of {incident.signal} ({incident.rule}); "
            "reports are for drift incidents (signal drift.*)"
        )
    current = (incident.opened_at - timedelta(seconds=recent_s), incident.opened_at)
    return write_report(
        client, database, incident.labels.get("model_id", ""), incident.labels.get("reference", ""),
        reference_s, current, out_dir / f"{incident.incident_id}.html", rows,
    )  # fmt: skip
