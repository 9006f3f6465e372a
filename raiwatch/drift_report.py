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
    path: Path
    reference_rows: int
    current_rows: int
    columns: int
    drifted: int

    def summary(self) -> str:
        return (
            f"Evidently: {self.drifted} of {self.columns} columns drifted "
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
    incident: Incident,
    reference_s: int,
    recent_s: int,
    out_dir: Path,
    rows: int = 5000,
) -> DriftReport:
    """Evidently's DataDriftPreset on the incident's model: ``recent_s`` before it opened against
    its reference; the HTML in ``out_dir/<incident_id>.html``."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    if not incident.signal.startswith("drift."):
        raise RaiwatchError(f"{incident.incident_id} is a {incident.signal} incident; reports are for drift")
    model = incident.labels.get("model_id", "")
    ref_start, ref_end = reference_span(incident.labels.get("reference", ""), reference_s)
    reference = _frame(client, database, model, ref_start, ref_end, rows)
    current = _frame(
        client, database, model, incident.opened_at - timedelta(seconds=recent_s), incident.opened_at, rows
    )
    if reference.empty or current.empty:
        which = "reference" if reference.empty else "recent"
        raise RaiwatchError(
            f"no {which} events of {model} in telemetry_events "
            "(expired by events_ttl_days, or another data dir?)"
        )
    columns = [c for c in reference.columns if c in current.columns and reference[c].notna().any()]
    snap = Report([DataDriftPreset()]).run(current_data=current[columns], reference_data=reference[columns])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = (out_dir / f"{incident.incident_id}.html").resolve()
    snap.save_html(str(path))
    counts = [m for m in snap.dict()["metrics"] if m["metric_name"].startswith("DriftedColumnsCount")]
    drifted = int(counts[0]["value"]["count"]) if counts else 0
    return DriftReport(path, len(reference), len(current), len(columns), drifted)
