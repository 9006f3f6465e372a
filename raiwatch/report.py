"""Terminal tables for incidents, signals and query results (rich), or JSON lines."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from rich.console import Console
from rich.table import Table

from raiwatch.records import Incident

console = Console()


def print_incidents(incidents: Sequence[Incident], as_json: bool = False) -> None:
    if as_json:
        for inc in incidents:
            print(orjson.dumps(inc.to_contract()).decode())
        return
    if not incidents:
        console.print("no incidents")
        return
    t = Table(title=f"{len(incidents)} incident(s)")
    for col in ("id", "severity", "status", "opened (event time)", "rule", "summary", "runbook"):
        t.add_column(col, overflow="fold")
    for i in incidents:
        t.add_row(
            i.incident_id,
            i.severity,
            i.status,
            i.opened_at.isoformat(timespec="seconds"),
            i.rule,
            i.summary,
            i.runbook_url,
        )
    console.print(t)


def print_incident(inc: Incident, as_json: bool = False) -> None:
    if as_json:
        print(orjson.dumps(inc.to_contract(), option=orjson.OPT_INDENT_2).decode())
        return
    t = Table(show_header=False, title=inc.incident_id)
    for k, v in inc.to_contract().items():
        t.add_row(k, str(v))
    console.print(t)


def print_history(rows: Sequence[dict]) -> None:
    if not rows:
        return
    t = Table(title="history")
    cols = list(rows[0])
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*(str(r[c]) for c in cols))
    console.print(t)


def print_frame(df, as_json: bool = False, title: str | None = None) -> None:
    """A pandas DataFrame as a table (or one JSON object per row)."""
    if as_json:
        for rec in df.to_dict(orient="records"):
            print(orjson.dumps(rec, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode())
        return
    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c), overflow="fold")
    for row in df.itertuples(index=False):
        t.add_row(*(_fmt(v) for v in row))
    console.print(t)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
