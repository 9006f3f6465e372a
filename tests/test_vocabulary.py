"""One vocabulary: the record types, the JSON schemas of the contracts, the ClickHouse tables and the
SQL incident store name the same fields and the same values."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from sqlalchemy import inspect

from raiwatch.core import contracts
from raiwatch.core.records import (
    FEEDBACKS,
    SEVERITIES,
    STATUSES,
    FeedbackEvent,
    Incident,
    TelemetryEvent,
)
from storage.clickhouse import connect, migrate
from storage.clickhouse import writer as ch_writer
from storage.incidents import IncidentStore


def _fields(struct: type) -> dict[str, msgspec.structs.FieldInfo]:
    return {f.name: f for f in msgspec.structs.fields(struct)}


def _struct_matches_schema(struct: type, schema: dict, where: str) -> None:
    """Field names, required fields and nested objects of a record type against a JSON Schema object."""
    fields = _fields(struct)
    assert set(fields) == set(schema["properties"]), where
    required = {n for n, f in fields.items() if f.required}
    assert required == set(schema.get("required", ())), where
    for name, f in fields.items():
        info = msgspec.inspect.type_info(f.type)
        options = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
        for t in options:
            if isinstance(t, msgspec.inspect.StructType):  # a nested object: same check, one level down
                _struct_matches_schema(t.cls, schema["properties"][name], f"{where}.{name}")


@pytest.mark.parametrize(
    ("struct", "name"),
    [(TelemetryEvent, "telemetry-event.v1"), (FeedbackEvent, "feedback-event.v1")],
)
def test_event_records_mirror_their_contracts(struct: type, name: str):
    _struct_matches_schema(struct, contracts.schema(name), name)


def test_the_incident_record_mirrors_incident_v1_and_its_values():
    schema = contracts.schema("incident.v1")
    assert set(_fields(Incident)) - {"updated_at"} == set(schema["properties"])
    assert tuple(schema["properties"]["severity"]["enum"]) == SEVERITIES
    assert tuple(schema["properties"]["status"]["enum"]) == STATUSES
    assert set(schema["properties"]["feedback"]["enum"]) - {None} == set(FEEDBACKS)


def test_clickhouse_tables_have_the_columns_the_writer_writes(tmp_path_factory):
    client = connect(f"chdb://{tmp_path_factory.getbasetemp() / 'chdb'}", db := f"v_{uuid.uuid4().hex[:8]}")
    migrate(client, db)

    def columns(table: str) -> set[str]:
        q = "SELECT name FROM system.columns WHERE database = {d:String} AND table = {t:String}"
        return {r[0] for r in client.query(q, parameters={"d": db, "t": table}).result_rows}

    assert set(ch_writer.INCIDENT_COLUMNS) == columns("incidents") == set(_fields(Incident))
    assert set(ch_writer.SIGNAL_COLUMNS) == columns("signals")
    assert set(ch_writer.INGEST_COLUMNS) == columns("telemetry_events_in")
    assert set(ch_writer.REJECTED_COLUMNS) == columns("rejected_events")
    assert set(ch_writer.CHECKPOINT_COLUMNS) == columns("checkpoints")
    assert set(ch_writer.FEEDBACK_COLUMNS) == columns("feedback_events")


def test_the_incident_store_holds_every_incident_field_and_allows_exactly_the_values(tmp_path):
    store = IncidentStore(f"sqlite:///{tmp_path / 'i.db'}")
    cols = {c["name"] for c in inspect(store._engine).get_columns("incidents")}
    assert set(_fields(Incident)) <= cols
    checks = {c["name"]: c["sqltext"] for c in inspect(store._engine).get_check_constraints("incidents")}
    for values, column in ((SEVERITIES, "severity"), (STATUSES, "status"), (FEEDBACKS, "feedback")):
        text = next(t for name, t in checks.items() if column in name)
        assert all(f"'{v}'" in text for v in values), (column, text)
