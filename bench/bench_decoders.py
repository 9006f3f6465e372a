"""Sources of the monitors' columns, on the bench's events, in microseconds an event.

    .venv/bin/python bench/bench_decoders.py [--events 200000] [--repeat 3]

Today (``structs``): msgspec decodes each event into a struct (``Codec.decode_batch``, with its
validation), ``EventColumns`` then reads every column the monitors use out of the structs, and
groups the events by (window, model) in Python. The candidates for issue 23's decoder, which
emits columns with no Python object per event, end at the same columns, grouped on integer codes
with numpy:

- ``chdb``: ClickHouse's JSONEachRow reader in the embedded engine raiwatch already loads, the
  batch handed over as a file (in /dev/shm when there is one), the result read as Arrow;
- ``pyarrow``: pyarrow's JSON reader with an explicit schema. It cannot read the open maps
  (``segments``, ``safety.scores``), so it ends with fewer columns than the others;
- ``polars``: ``polars.read_ndjson``, open objects inferred as structs, when polars is installed
  (it is not a dependency).

Each candidate's columns are compared with the structs' on every event: the line says whether
they agree (the first difference otherwise). Batches of 20,000, as the replay reads them; the
best of ``--repeat`` runs; CPU is every thread's (chdb and polars may use several).

Two more lines split today's figure: msgspec decoding each line into its struct and nothing else
(``structs only``), and msgspec building the same structs from a msgpack copy of the batch, where
there is no JSON to parse (``structs from msgpack``): what the Python objects themselves cost.

Today's figure includes the validation ``decode_batch`` does on the way (types, lengths,
enumerations, time range, one reason per rejected event); the candidates' do not, and a columnar
decoder would have to do it as well. Last, the bench lists the values the contract refuses that
chdb's reader takes (a quoted number, 1 for true, a null, a missing required field), with the
strictest JSON input settings it has.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.json as pajson  # noqa: E402
from bench_monitors import BATCH, START, WINDOW_S  # noqa: E402  (the same events, windows and batches)
from msgspec import UNSET  # noqa: E402

from raiwatch.core.codec import telemetry_codec  # noqa: E402
from raiwatch.core.columns import EventColumns  # noqa: E402
from raiwatch.core.records import TelemetryEvent  # noqa: E402
from raiwatch.dev import synth  # noqa: E402

B = TypeVar("B")
# The columns EventColumns gives the monitors, and what the pipeline reads itself (id, time).
CH_STRUCTURE = (
    "event_id String, timestamp DateTime64(3, 'UTC'), model Tuple(id String), tenant_id Nullable(String), "
    "request Tuple(text Nullable(String)), "
    "response Tuple(finish_reason Nullable(String), "
    "prediction Tuple(label Nullable(String), score Nullable(Float64))), "
    "safety Tuple(scores Map(String, Float64), violations Array(String), action Nullable(String)), "
    "segments Map(String, String), outcome Tuple(favorable Nullable(Bool))"
)  # fmt: skip
CH_SETTINGS = "max_threads = 1, date_time_input_format = 'best_effort'"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def grouped(ms: np.ndarray, model: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Window starts, and a group id per event for its (window, model), from integer codes."""
    starts = ms // (WINDOW_S * 1000) * WINDOW_S
    codes = model.dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)
    _, group = np.unique(starts * (int(codes.max(initial=0)) + 1) + codes, return_inverse=True)
    return starts, group


def structs(batch: list[bytes]) -> dict[str, Any]:
    """Today's path: structs, then every column EventColumns has, then the (window, model) groups."""
    decoded = telemetry_codec.decode_batch(batch)
    starts = [int(t // WINDOW_S) * WINDOW_S for t in decoded.ts]
    cols = EventColumns(decoded.events, starts)
    out = {
        "event_id": [e.event_id for e in decoded.events],
        "start": starts,
        "groups": cols.groups,
        "model": cols.model,
        "tenant": cols.tenant,
        "segments": cols.segments,
        "favorable": cols.favorable,
        "prediction": cols.prediction,
        "safety": cols.safety,
        "action": cols.action,
        "finish_reason": cols.finish_reason,
        "prompt": cols.prompt,
    }
    return out


class Chdb:
    """ClickHouse's JSON reader in the embedded engine; the batch reaches it as a file."""

    def __init__(self, folder: str):
        import chdb

        self.conn = chdb.connect(":memory:")
        self.path = os.path.join(folder, "batch.jsonl")

    def __call__(self, batch: list[bytes]) -> dict[str, Any]:
        with open(self.path, "wb") as f:
            f.write(b"\n".join(batch))
        sql = f"SELECT * FROM file('{self.path}', JSONEachRow, $${CH_STRUCTURE}$$) SETTINGS {CH_SETTINGS}"
        t = pa.ipc.open_file(pa.BufferReader(self.conn.query(sql, "Arrow").bytes())).read_all()
        t = t.combine_chunks()
        ms = t.column("timestamp").cast(pa.int64()).to_numpy()
        model = t.column("model").chunk(0).field("id")
        starts, group = grouped(ms, model)
        return {"table": t, "start": starts, "group": group, "model": model}

    def close(self) -> None:
        self.conn.close()


PA_SCHEMA = pa.schema([
    ("event_id", pa.string()),
    ("timestamp", pa.timestamp("ms", tz="UTC")),
    ("model", pa.struct([("id", pa.string())])),
    ("tenant_id", pa.string()),
    ("request", pa.struct([("text", pa.string())])),
    ("response", pa.struct([
        ("finish_reason", pa.string()),
        ("prediction", pa.struct([("label", pa.string()), ("score", pa.float64())])),
    ])),
    ("safety", pa.struct([("violations", pa.list_(pa.string())), ("action", pa.string())])),
    ("outcome", pa.struct([("favorable", pa.bool_())])),
])  # fmt: skip


def pyarrow_json(batch: list[bytes]) -> dict[str, Any]:
    """pyarrow's JSON reader, explicit schema, no open maps (segments, safety.scores)."""
    t = pajson.read_json(
        io.BytesIO(b"\n".join(batch)),
        read_options=pajson.ReadOptions(use_threads=False, block_size=64 << 20),
        parse_options=pajson.ParseOptions(explicit_schema=PA_SCHEMA, unexpected_field_behavior="ignore"),
    ).combine_chunks()
    ms = t.column("timestamp").cast(pa.int64()).to_numpy()
    model = t.column("model").chunk(0).field("id")
    starts, group = grouped(ms, model)
    return {"table": t, "start": starts, "group": group, "model": model}


def polars_ndjson(batch: list[bytes]) -> dict[str, Any]:
    """polars' NDJSON reader, every object inferred as a struct (open maps too)."""
    import polars as pl

    df = pl.read_ndjson(io.BytesIO(b"\n".join(batch)))
    ms = df.get_column("timestamp").str.to_datetime(time_zone="UTC", time_unit="ms").cast(pl.Int64).to_numpy()
    model = df.get_column("model").struct.field("id").to_arrow()
    starts, group = grouped(ms, model)
    return {"table": df.to_arrow(), "start": starts, "group": group, "model": model}


# What the contract refuses, each as one event: (what, the event's JSON after its common fields).
LAX_CASES = (
    ("request.tokens as a quoted number", ',"request":{"tokens":"8"}'),
    ("response.latency_ms as a quoted number", ',"response":{"latency_ms":"12.5"}'),
    ("request.tokens as true", ',"request":{"tokens":true}'),
    ("outcome.favorable as 1", ',"outcome":{"favorable":1}'),
    ("tenant_id as a number", ',"tenant_id":42'),
    ("request.tokens as 8.5", ',"request":{"tokens":8.5}'),
    ("request.tokens negative", ',"request":{"tokens":-3}'),
    ("segments as a list", ',"segments":["a"]'),
    ("tenant_id null", ',"tenant_id":null'),
)
LAX_STRUCTURE = (
    "event_id String, timestamp DateTime64(3, 'UTC'), model Tuple(id Nullable(String)), "
    "tenant_id Nullable(String), request Tuple(tokens Nullable(UInt32)), "
    "response Tuple(latency_ms Nullable(Float64)), segments Map(String, String), "
    "outcome Tuple(favorable Nullable(Bool))"
)
STRICT_JSON = (
    "input_format_json_read_bools_as_numbers = 0, input_format_json_read_bools_as_strings = 0, "
    "input_format_json_read_numbers_as_strings = 0, input_format_json_read_objects_as_strings = 0, "
    "input_format_json_read_arrays_as_strings = 0, date_time_input_format = 'best_effort'"
)


def laxness(chdb: Chdb) -> list[tuple[str, bool]]:
    """Per case the contract refuses (msgspec does, checked here): whether chdb's reader took it."""
    head = '{"schema_version":1,"event_id":"e1","timestamp":"2026-03-02T09:00:00Z","model":{"id":"m"}'
    cases = [(what, head + tail + "}") for what, tail in LAX_CASES]
    cases.append(("model.id missing", head.replace('{"id":"m"}', "{}") + "}"))
    out = []
    for what, line in cases:
        assert telemetry_codec.decode_batch([line.encode()]).rejected, f"the contract takes {what}"
        with open(chdb.path, "w") as f:
            f.write(line + "\n")
        sql = f"SELECT * FROM file('{chdb.path}', JSONEachRow, $${LAX_STRUCTURE}$$) SETTINGS {STRICT_JSON}"
        try:
            chdb.conn.query(sql, "TabSeparated")
        except Exception:  # the reader refused it, as the contract does
            out.append((what, False))
        else:
            out.append((what, True))
    return out


def _field(t: pa.Table, path: str) -> list:
    """A (possibly nested) column as Python values: ``"response.prediction.label"``."""
    head, *rest = path.split(".")
    col = t.column(head).combine_chunks()
    for name in rest:
        col = col.field(name)
    return col.to_pylist()


def agreement(ref: dict[str, Any], got: dict[str, Any], maps: bool) -> str:
    """``agree`` when a candidate's columns equal the structs' on every event, else the first difference."""
    t: pa.Table = got["table"]
    unset = lambda v: None if v is UNSET else v  # noqa: E731
    checks: dict[str, tuple[list, list]] = {
        "event_id": (ref["event_id"], _field(t, "event_id")),
        "window": (ref["start"], got["start"].tolist()),
        "model": (ref["model"], got["model"].to_pylist()),
        "tenant": (ref["tenant"], [v or "" for v in _field(t, "tenant_id")]),
        "favorable": ([unset(v) for v in ref["favorable"]], _field(t, "outcome.favorable")),
        "action": ([unset(v) for v in ref["action"]], _field(t, "safety.action")),
        "finish_reason": ([unset(v) for v in ref["finish_reason"]], _field(t, "response.finish_reason")),
        "prompt": (ref["prompt"], [v or "" for v in _field(t, "request.text")]),
        "prediction.score": (
            [p.score if p else None for p in ref["prediction"]],
            _field(t, "response.prediction.score"),
        ),
        "groups": (
            sorted(map(tuple, ref["groups"].values())),
            sorted(tuple(np.flatnonzero(got["group"] == g).tolist()) for g in np.unique(got["group"])),
        ),
    }
    if maps:
        checks["segments"] = (
            [dict(s) for s in ref["segments"]],
            [_as_dict(v) for v in _field(t, "segments")],
        )
        checks["safety.scores"] = (
            [dict(s.scores) if s and s.scores else {} for s in ref["safety"]],
            [_as_dict(v) for v in _field(t, "safety.scores")],
        )
    for name, (want, have) in checks.items():
        if want != have:
            at = next((i for i, (a, b) in enumerate(zip(want, have, strict=False)) if a != b), len(want))
            return f"differ: {name} at event {at}"
    return "agree"


def _as_dict(v: Any) -> dict:
    """An Arrow map (list of pairs) or struct (dict with None for absent keys) as a dict."""
    if v is None:
        return {}
    if isinstance(v, dict):
        return {k: x for k, x in v.items() if x is not None}
    return dict(v)


def timed(fn: Callable[[B], Any], batches: list[B], repeat: int) -> tuple[float, float]:
    """Best wall seconds over ``repeat`` runs through every batch, and that run's CPU seconds."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), cpu_s()
        for b in batches:
            fn(b)
        best = min(best, (time.perf_counter() - t0, cpu_s() - c0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir=shm) as scratch:
        path = Path(tmp) / "events.jsonl"
        synth.write(path, synth.default_scenario(args.events, start=START))
        lines = path.read_bytes().splitlines()
        batches = [lines[i : i + BATCH] for i in range(0, len(lines), BATCH)]
        n = len(lines)
        print(f"{n:,} events, batches of {BATCH:,}, best of {args.repeat}")
        chdb = Chdb(scratch)
        candidates: list[tuple[str, Callable[[list[bytes]], Any], bool]] = [
            ("chdb JSONEachRow -> Arrow", chdb, True),
            ("pyarrow.json, no open maps", pyarrow_json, False),
        ]
        try:
            import polars  # noqa: F401
        except ImportError:
            print("polars is not installed: its line is left out")
        else:
            candidates.append(("polars.read_ndjson", polars_ndjson, True))
        wall, cpu = timed(structs, batches, args.repeat)
        base = wall
        today = "structs + EventColumns (today)"
        print(f"{today:<32} {wall / n * 1e6:6.2f} µs/event  CPU {cpu / n * 1e6:6.2f}")
        one = msgspec.json.Decoder(TelemetryEvent).decode
        wall, _ = timed(lambda b: [one(r) for r in b], batches, args.repeat)
        print(f"{'  structs only (msgspec)':<32} {wall / n * 1e6:6.2f} µs/event")
        packed = [msgspec.msgpack.encode(telemetry_codec.decode_batch(b).events) for b in batches]
        wall, _ = timed(msgspec.msgpack.Decoder(list[TelemetryEvent]).decode, packed, args.repeat)
        print(f"{'  structs from msgpack':<32} {wall / n * 1e6:6.2f} µs/event  (no JSON to parse)")
        for name, fn, maps in candidates:
            verdicts = (agreement(structs(b), fn(b), maps) for b in batches)
            verdict = next((v for v in verdicts if v != "agree"), "agree")
            wall, cpu = timed(fn, batches, args.repeat)
            print(
                f"{name:<32} {wall / n * 1e6:6.2f} µs/event  CPU {cpu / n * 1e6:6.2f}  "
                f"{base / wall:4.2f}x today's speed; columns {verdict} with the structs'"
            )
        taken = [what for what, took in laxness(chdb) if took]
        print(f"chdb's reader takes {len(taken)} of the events the contract refuses: {'; '.join(taken)}")
        chdb.close()


if __name__ == "__main__":
    main()
