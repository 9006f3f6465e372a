"""Decode the OpenTelemetry Collector's Kafka messages (OTLP spans and logs) into raiwatch's vocabulary.

One Kafka message from the Collector's ``kafka`` exporter is one ``ExportTraceServiceRequest``
(topic ``otlp_spans``) or ``ExportLogsServiceRequest`` (``otlp_logs``), encoded ``otlp_proto``
(protobuf) or ``otlp_json`` (OTLP/JSON: protobuf's JSON mapping with hex trace and span ids).
Protobuf is parsed by opentelemetry-proto's generated bindings, OTLP/JSON by orjson (read in the
shape the OTLP specification gives it); what is ours is the mapping:

- A **GenAI span** (it carries ``gen_ai.operation.name``, ``gen_ai.provider.name``,
  ``gen_ai.system``, ``llm.model_name`` or ``openinference.span.kind``) that names a model is one
  ``TelemetryEvent``: ``event_id`` = trace id + span id (hex), ``timestamp`` = span start,
  ``response.latency_ms`` = span duration, the rest as ``OtelMapping`` says (module
  ``raiwatch.core.otelmap``; the README has the table). Every other span is *skipped*: counted by
  reason, never rejected.
- A ``gen_ai.evaluation.result`` (a log record, or a span event from older SDKs) is an
  ``Evaluation``, to be joined to its operation by span id or ``gen_ai.response.id``; other log
  records are skipped and counted.

Like ``codec.Codec`` the decoders never raise on input: a message that is not OTLP, or a span
whose mapped event breaks the telemetry contract, becomes a ``Rejected`` with the message's
bytes and why. ``Decoded.indexes`` holds the index of the *message* each event came from; one
message usually yields many events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal, Protocol

import msgspec
import orjson

from raiwatch.core import metrics
from raiwatch.core.codec import EARLIEST, LATEST, MAX_EVENT_BYTES, Decoded, Rejected
from raiwatch.core.otelmap import OtelMapping
from raiwatch.core.records import TelemetryEvent

Encoding = Literal["otlp_proto", "otlp_json"]
ENCODINGS: tuple[str, ...] = ("otlp_proto", "otlp_json")
EVALUATION = "gen_ai.evaluation.result"
MAX_MESSAGE_BYTES = 64 * MAX_EVENT_BYTES  # the exporter's messages hold many spans
_EARLIEST_NS, _LATEST_NS = int(EARLIEST.timestamp() * 1e9), int(LATEST.timestamp() * 1e9)
_MARKERS = frozenset(
    {
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.system",
        "llm.model_name",
        "openinference.span.kind",
    }
)
# the attributes read whatever the mapping says (besides the markers)
_FIXED = frozenset(
    {
        "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.completion_tokens", "llm.token_count.prompt", "llm.token_count.completion",
        "gen_ai.response.finish_reasons", "gen_ai.response.id", "error.type",
        "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.prompt", "gen_ai.completion",
        "input.value", "output.value",
    }
)  # fmt: skip
_encode = msgspec.json.encode
_SCALARS = frozenset({"string_value", "int_value", "double_value", "bool_value"})


class Evaluation(msgspec.Struct, gc=False):
    """One ``gen_ai.evaluation.result``: which operation it judges, and its verdict."""

    name: str
    ts: float  # epoch seconds
    event_id: str  # trace id + span id (hex) of its context, "" when it has none
    response_id: str  # gen_ai.response.id, "" when absent
    label: str | None
    score: float | None
    index: int  # the message it came in


class SpansDecoded(Decoded):
    """``Decoded`` plus what spans carry beside events."""

    response_ids: dict[str, str]  # event_id -> gen_ai.response.id
    evaluations: list[Evaluation]  # span events (older SDKs)
    skipped: Counter  # spans not mapped, by reason


class LogsDecoded(msgspec.Struct):
    evaluations: list[Evaluation]
    rejected: list[Rejected]
    skipped: Counter


def _value(v: Any) -> Any:
    """The Python value of an ``AnyValue`` (arrays as lists; maps and bytes as None)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which in ("kvlist_value", "bytes_value"):
        return None
    return getattr(v, which)


@cache
def _proto() -> tuple[type[Exception], type, type]:
    """protobuf's DecodeError and the two OTLP request messages, imported on first use: only the
    OTLP input needs them, and the generated protobuf modules are slow to import."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    return DecodeError, ExportTraceServiceRequest, ExportLogsServiceRequest


def _parse(raw: bytes, kind: Literal["trace", "logs"], encoding: str) -> tuple[Any, str | None]:
    """The protobuf request (``Export{Trace,Logs}ServiceRequest``) in ``raw``, or None and why not."""
    decode_error, trace, logs = _proto()
    message = trace if kind == "trace" else logs
    what = message.DESCRIPTOR.name
    if not raw:
        return None, "empty message"
    req = message()
    try:
        req.ParseFromString(raw)
    except (decode_error, ValueError, TypeError) as e:
        return None, f"not an OTLP {what} ({encoding}): {e}"
    except Exception as e:  # whatever else the input provokes is that input's problem
        return None, f"not an OTLP {what} ({encoding}): {type(e).__name__}: {e}"
    return req, None


def _first(attrs: dict[str, Any], res: dict[str, Any], names: Sequence[str]) -> Any:
    for n in names:
        v = attrs.get(n)
        if v is None:
            v = res.get(n)
        if v is not None and v != "":
            return v
    return None


def _text(messages: Any, role: str | None) -> str | None:
    """The text parts of the last message (of ``role``, when given) of GenAI ``*.messages`` JSON."""
    if not isinstance(messages, str):
        return None
    try:
        msgs = orjson.loads(messages)
    except orjson.JSONDecodeError:
        return messages
    if not isinstance(msgs, list):
        return None
    for m in reversed(msgs):
        if isinstance(m, dict) and (role is None or m.get("role") == role):
            parts = m.get("parts") or []
            text = [p.get("content") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
            return "\n".join(t for t in text if isinstance(t, str)) or None
    return None


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


class SpanDecoder(Protocol):
    """What ``Pipeline.process`` takes to read OTLP span messages (``OtlpSpans``)."""

    def decode_batch(
        self, raws: Sequence[bytes], origin: Callable[[int], str] | None = None
    ) -> SpansDecoded: ...


class OtlpSpans:
    """Decoder of the exporter's span messages into telemetry events (``decode_batch``, as ``Codec``)."""

    def __init__(self, mapping: OtelMapping | None = None, encoding: Encoding = "otlp_proto"):
        self.mapping = m = mapping or OtelMapping()
        self.encoding = encoding
        self._names = {k: v for k, v in m.names.items() if v}
        wanted = set(_MARKERS) | set(_FIXED)
        for names in (*m.names.values(), *m.features.values(), *m.segments.values()):
            wanted.update(names)
        self._wanted = frozenset(wanted)

    def decode_batch(self, raws: Sequence[bytes], origin: Callable[[int], str] | None = None) -> SpansDecoded:
        out = SpansDecoded([], [], [], [], [], {}, [], Counter())
        json = self.encoding == "otlp_json"
        for i, raw in enumerate(raws):
            problems: list[str] = []
            spans = 0
            if len(raw) > MAX_MESSAGE_BYTES:
                why = f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
                out.rejected.append(Rejected(bytes(raw), why, origin(i) if origin else "", i, "too_large"))
                continue
            if json:
                before = len(out.events), len(out.evaluations)
                try:
                    for res, span in _json_spans(raw):
                        spans += 1
                        attrs = _json_attrs(span.get("attributes"), self._wanted)
                        self._span(_JsonSpan(span), attrs, res, i, out, problems)
                except (ValueError, TypeError, AttributeError, KeyError) as e:  # not the OTLP/JSON shape
                    n, k = before
                    del out.events[n:], out.raws[n:], out.indexes[n:], out.ts[n:], out.evaluations[k:]
                    why = str(e) if isinstance(e, orjson.JSONDecodeError) else f"{type(e).__name__}: {e}"
                    why = "empty message" if not raw else f"not OTLP/JSON: {why}"
                    out.rejected.append(Rejected(bytes(raw), why, origin(i) if origin else "", i, "not_otlp"))
                    continue
            else:
                req, why = _parse(raw, "trace", self.encoding)
                if req is None:
                    out.rejected.append(Rejected(bytes(raw), why, origin(i) if origin else "", i, "not_otlp"))
                    continue
                for rs in req.resource_spans:
                    res = self._attrs(rs.resource.attributes)
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            spans += 1
                            self._span(span, self._attrs(span.attributes), res, i, out, problems)
            if problems:
                reason = f"{len(problems)} of {spans} spans rejected; the first: {problems[0]}"
                out.rejected.append(Rejected(bytes(raw), reason, origin(i) if origin else "", i, "schema"))
        for reason, n in out.skipped.items():
            metrics.OTLP_SKIPPED.labels("spans", reason).inc(n)
        return out

    def _attrs(self, kvs: Any) -> dict[str, Any]:
        """The wanted attributes of a protobuf ``KeyValue`` list (the hot loop: each upb access counts)."""
        wanted, out = self._wanted, {}
        for kv in kvs:
            k = kv.key
            if k in wanted:
                v = kv.value
                which = v.WhichOneof("value")
                out[k] = getattr(v, which) if which in _SCALARS else _value(v)
        return out

    def _span(
        self, span: Any, attrs: dict, res: dict, i: int, out: SpansDecoded, problems: list[str]
    ) -> None:
        """Map one span (a protobuf ``Span`` or a ``_JsonSpan``) whose wanted attributes are ``attrs``."""
        if attrs.keys().isdisjoint(_MARKERS):
            out.skipped["not_genai"] += 1
            return
        m, names = self.mapping, self._names
        op = attrs.get("gen_ai.operation.name")
        if m.operations and op not in m.operations:
            out.skipped["operation"] += 1
            return
        model = _first(attrs, res, names["model_id"])
        if model is None:
            out.skipped["no_model"] += 1
            return
        tid, sid = span.trace_id, span.span_id
        if len(tid) != 16 or len(sid) != 8:
            problems.append(f"span {span.name!r}: trace id or span id of the wrong length")
            return
        event_id = tid.hex() + sid.hex()
        start, end = span.start_time_unix_nano, span.end_time_unix_nano
        if not _EARLIEST_NS <= start < _LATEST_NS:
            problems.append(f"span {span.name!r} ({event_id}): start time {start} ns is outside 1971-2200")
            return
        ev: dict[str, Any] = {
            "schema_version": 1,
            "event_id": event_id,
            "timestamp": datetime.fromtimestamp(start / 1e9, UTC),
            "model": {"id": str(model), "kind": "llm"},
        }
        version = _first(attrs, res, names.get("model_version", ()))
        if version is not None and version != model:
            ev["model"]["version"] = str(version)
        for key in ("deployment", "feature", "tenant_id", "user_id", "session_id"):
            if key in names and (v := _first(attrs, res, names[key])) is not None:
                ev[key] = str(v)
        request: dict[str, Any] = {}
        response: dict[str, Any] = {}
        tokens = _int(_first(attrs, {}, ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                                         "llm.token_count.prompt")))  # fmt: skip
        if tokens is not None:
            request["tokens"] = tokens
        tokens = _int(_first(attrs, {}, ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                                         "llm.token_count.completion")))  # fmt: skip
        if tokens is not None:
            response["tokens"] = tokens
        if end >= start:
            response["latency_ms"] = (end - start) / 1e6
        reasons = attrs.get("gen_ai.response.finish_reasons")
        if reasons:
            response["finish_reason"] = str(reasons[0] if isinstance(reasons, list) else reasons)[:64]
        error = attrs.get("error.type")
        if error is None and span.status.code == 2:  # STATUS_CODE_ERROR
            error = span.status.message or "error"
        if error is not None:
            response["error"] = str(error)[:512]
        text = attrs.get("input.value") or _text(attrs.get("gen_ai.input.messages"), "user")
        if text is None and isinstance(attrs.get("gen_ai.prompt"), str):
            text = attrs["gen_ai.prompt"]
        if text:
            request["text"] = text
        text = attrs.get("output.value") or _text(attrs.get("gen_ai.output.messages"), None)
        if text is None and isinstance(attrs.get("gen_ai.completion"), str):
            text = attrs["gen_ai.completion"]
        if text:
            response["text"] = text
        if m.features:
            feats = {
                k: v for k, names_ in m.features.items() if (v := _first(attrs, res, names_)) is not None
            }
            if feats:
                request["features"] = {k: v if isinstance(v, str | int | float | bool) else str(v)
                                       for k, v in feats.items()}  # fmt: skip
        if request:
            ev["request"] = request
        if response:
            ev["response"] = response
        if m.segments:
            segs = {k: _str(_first(attrs, res, names_)) for k, names_ in m.segments.items()}
            segs = {k: v for k, v in segs.items() if v is not None}
            if segs:
                ev["segments"] = segs
        try:
            event = msgspec.convert(ev, TelemetryEvent)
        except msgspec.ValidationError as e:
            problems.append(f"span {span.name!r} ({event_id}): schema: {e}")
            return
        out.events.append(event)
        out.raws.append(_encode(event))
        out.indexes.append(i)
        out.ts.append(start / 1e9)
        rid = attrs.get("gen_ai.response.id")
        if rid:
            out.response_ids[event_id] = str(rid)
        for name, ts, ev_attrs in _events(span):
            if name == EVALUATION:
                e = _evaluation(ev_attrs, ts, event_id, i)
                if e is not None:
                    out.evaluations.append(e)


def _events(span: Any) -> list[tuple[str, int, dict[str, Any]]]:
    """A span's events: name, time, attributes (most spans have none: answered without a loop)."""
    if isinstance(span, _JsonSpan):
        evs = span.d.get("events")
        if not evs:
            return []
        return [
            (se.get("name", ""), int(se.get("timeUnixNano") or 0), _json_attrs(se.get("attributes"), None))
            for se in evs
        ]
    evs = span.events
    if not evs:
        return []
    return [(se.name, se.time_unix_nano, {kv.key: _value(kv.value) for kv in se.attributes}) for se in evs]


# -- OTLP/JSON (the exporter's otlp_json): orjson's dicts, read in the shape the OTLP spec gives
# (camelCase keys, hex ids, 64-bit integers as strings, enums as integers); protobuf's own JSON
# reader (json_format) reads the same at about a hundredth of the speed.


def _json_spans(raw: bytes) -> Iterator[tuple[dict[str, Any], dict]]:
    doc = orjson.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON {type(doc).__name__}, not an ExportTraceServiceRequest object")
    for rs in doc.get("resourceSpans") or ():
        res = _json_attrs((rs.get("resource") or {}).get("attributes"), None)
        for ss in rs.get("scopeSpans") or ():
            for span in ss.get("spans") or ():
                yield res, span


def _json_value(v: dict) -> Any:
    for k, x in v.items():
        if k == "stringValue" or k == "boolValue" or k == "doubleValue":
            return x
        if k == "intValue":
            return int(x)
        if k == "arrayValue":
            return [_json_value(y) for y in x.get("values") or ()]
        return None  # kvlistValue, bytesValue
    return None


def _json_attrs(kvs: Any, wanted: frozenset[str] | None) -> dict[str, Any]:
    if not kvs:
        return {}
    return {
        kv["key"]: _json_value(kv.get("value") or {}) for kv in kvs if wanted is None or kv["key"] in wanted
    }


def _json_log_records(raw: bytes) -> Iterator[tuple[dict[str, Any], str, int, bytes, bytes]]:
    """Each log record of an OTLP/JSON ExportLogsServiceRequest: attributes, event name, time, ids."""
    doc = orjson.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON {type(doc).__name__}, not an ExportLogsServiceRequest object")
    for rl in doc.get("resourceLogs") or ():
        for sl in rl.get("scopeLogs") or ():
            for rec in sl.get("logRecords") or ():
                ts = int(rec.get("timeUnixNano") or 0) or int(rec.get("observedTimeUnixNano") or 0)
                tid, sid = bytes.fromhex(rec.get("traceId") or ""), bytes.fromhex(rec.get("spanId") or "")
                yield _json_attrs(rec.get("attributes"), None), rec.get("eventName") or "", ts, tid, sid


class _JsonStatus:
    __slots__ = ("code", "message")

    def __init__(self, d: dict):
        code = d.get("code") or 0
        self.code = 2 if code == "STATUS_CODE_ERROR" else code
        self.message = d.get("message") or ""


class _JsonSpan:
    """The fields of an OTLP/JSON span that the mapping reads, as a protobuf ``Span`` names them."""

    __slots__ = ("d",)

    def __init__(self, d: dict):
        self.d = d

    @property
    def name(self) -> str:
        return str(self.d.get("name", ""))

    @property
    def trace_id(self) -> bytes:
        return bytes.fromhex(self.d.get("traceId") or "")

    @property
    def span_id(self) -> bytes:
        return bytes.fromhex(self.d.get("spanId") or "")

    @property
    def start_time_unix_nano(self) -> int:
        return int(self.d.get("startTimeUnixNano") or 0)

    @property
    def end_time_unix_nano(self) -> int:
        return int(self.d.get("endTimeUnixNano") or 0)

    @property
    def status(self) -> _JsonStatus:
        return _JsonStatus(self.d.get("status") or {})


def _evaluation(attrs: dict[str, Any], ts_ns: int, event_id: str, index: int) -> Evaluation | None:
    name = attrs.get("gen_ai.evaluation.name")
    if not isinstance(name, str) or not name:
        return None
    score = attrs.get("gen_ai.evaluation.score.value")
    label = attrs.get("gen_ai.evaluation.score.label")
    return Evaluation(
        name=name,
        ts=ts_ns / 1e9,
        event_id=event_id,
        response_id=str(attrs.get("gen_ai.response.id") or ""),
        label=None if label is None else str(label),
        score=float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None,
        index=index,
    )


class OtlpLogs:
    """Decoder of the exporter's log messages into evaluations (``gen_ai.evaluation.result`` events)."""

    def __init__(self, encoding: Encoding = "otlp_proto"):
        self.encoding = encoding

    def decode_batch(self, raws: Sequence[bytes], origin: Callable[[int], str] | None = None) -> LogsDecoded:
        out = LogsDecoded([], [], Counter())
        for i, raw in enumerate(raws):
            if len(raw) > MAX_MESSAGE_BYTES:
                why = f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
                out.rejected.append(Rejected(bytes(raw), why, origin(i) if origin else "", i, "too_large"))
                continue
            if self.encoding == "otlp_json":
                try:
                    records = list(_json_log_records(raw))
                except (ValueError, TypeError, AttributeError, KeyError) as e:  # not the OTLP/JSON shape
                    why = str(e) if isinstance(e, orjson.JSONDecodeError) else f"{type(e).__name__}: {e}"
                    why = "empty message" if not raw else f"not OTLP/JSON: {why}"
                    out.rejected.append(Rejected(bytes(raw), why, origin(i) if origin else "", i, "not_otlp"))
                    continue
            else:
                req, why = _parse(raw, "logs", self.encoding)
                if req is None:
                    out.rejected.append(Rejected(bytes(raw), why, origin(i) if origin else "", i, "not_otlp"))
                    continue
                records = [
                    (
                        {kv.key: _value(kv.value) for kv in rec.attributes},
                        rec.event_name,
                        rec.time_unix_nano or rec.observed_time_unix_nano,
                        rec.trace_id,
                        rec.span_id,
                    )
                    for rl in req.resource_logs
                    for sl in rl.scope_logs
                    for rec in sl.log_records
                ]
            bad = 0
            for attrs, event_name, ts, tid, sid in records:
                if (event_name or attrs.get("event.name")) != EVALUATION:
                    out.skipped["not_evaluation"] += 1
                    continue
                if not _EARLIEST_NS <= ts < _LATEST_NS:
                    bad += 1
                    continue
                event_id = tid.hex() + sid.hex() if len(tid) == 16 and len(sid) == 8 else ""
                e = _evaluation(attrs, ts, event_id, i)
                if e is None:
                    out.skipped["no_name"] += 1
                else:
                    out.evaluations.append(e)
            if bad:
                reason = f"{bad} evaluation results with a time outside 1971-2200"
                out.rejected.append(Rejected(bytes(raw), reason, origin(i) if origin else "", i, "bad_time"))
        for reason, n in out.skipped.items():
            metrics.OTLP_SKIPPED.labels("logs", reason).inc(n)
        return out
