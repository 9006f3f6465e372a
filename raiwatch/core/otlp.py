"""Decode the OpenTelemetry Collector's Kafka messages (OTLP spans and logs) into raiwatch's vocabulary.

One Kafka message from the Collector's ``kafka`` exporter is one ``ExportTraceServiceRequest``
(topic ``otlp_spans``) or ``ExportLogsServiceRequest`` (``otlp_logs``), encoded ``otlp_proto``
(protobuf) or ``otlp_json`` (OTLP/JSON: protobuf's JSON mapping with hex trace and span ids).
Protobuf is parsed by opentelemetry-proto's generated bindings, OTLP/JSON by orjson (read in the
shape the OTLP specification gives it); what is ours is the mapping (for ``otlp_proto`` also
compiled: ``otlpnative``, which maps exactly as this module, or hands the message back to it):

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
from typing import Any, Literal, Protocol

import msgspec
import orjson
from google.protobuf.message import DecodeError
from msgspec import UNSET
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from raiwatch.core import metrics, otlpnative
from raiwatch.core.codec import EARLIEST, LATEST, MAX_EVENT_BYTES, Decoded, Rejected
from raiwatch.core.otelmap import OtelMapping
from raiwatch.core.records import Model, Request, Response, TelemetryEvent

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
_ID_FIELDS = ("deployment", "feature", "tenant_id", "user_id", "session_id")
_IN_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
_OUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
_TEXTS = frozenset(
    {"input.value", "gen_ai.input.messages", "gen_ai.prompt", "output.value", "gen_ai.output.messages",
     "gen_ai.completion"}
)  # fmt: skip
_MAX_INT = 2**63 - 1  # NonNegInt's bound (an OTLP/JSON intValue can be any size)
_FEATURES = dict[str, float | str | bool | None]  # Request.features
_encode = msgspec.json.encode
_EVENTS = msgspec.json.Decoder(list[TelemetryEvent])


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


def _parse(raw: bytes, message: type, encoding: str) -> tuple[Any, str | None]:
    """The protobuf request in ``raw``, or None and why not."""
    what = message.DESCRIPTOR.name
    if not raw:
        return None, "empty message"
    req = message()
    try:
        req.ParseFromString(raw)
    except (DecodeError, ValueError, TypeError) as e:
        return None, f"not an OTLP {what} ({encoding}): {e}"
    except Exception as e:  # whatever else the input provokes is that input's problem
        return None, f"not an OTLP {what} ({encoding}): {type(e).__name__}: {e}"
    return req, None


def _proto_attrs(kvs: Any, wanted: frozenset[str]) -> dict[str, Any]:
    """The ``wanted`` attributes of a protobuf ``KeyValue`` list (the hot loop: each upb access counts)."""
    out = {}
    for kv in kvs:
        k = kv.key
        if k in wanted:
            v = kv.value
            s = v.string_value  # most are strings: one read instead of WhichOneof and getattr
            out[k] = s if s else _value(v)
    return out


def _first(attrs: dict[str, Any], res: dict[str, Any], names: Sequence[str]) -> Any:
    """The first of ``names`` present (not None, not ""), span attributes before resource attributes."""
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
            parts = m.get("parts")
            if not isinstance(parts, list):
                parts = ()  # (a dict's keys or a string's characters hold no text part either)
            text = [p.get("content") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
            return "\n".join(t for t in text if isinstance(t, str)) or None
    return None


class SpanDecoder(Protocol):
    """What ``Pipeline.process`` takes to read OTLP span messages (``OtlpSpans``)."""

    def decode_batch(
        self, raws: Sequence[bytes], origin: Callable[[int], str] | None = None
    ) -> SpansDecoded: ...


class OtlpSpans:
    """Decoder of the exporter's span messages into telemetry events (``decode_batch``, as ``Codec``)."""

    def __init__(
        self, mapping: OtelMapping | None = None, encoding: Encoding = "otlp_proto", native: bool = True
    ):
        """``native``: map otlp_proto messages with libotlpmap when it is built (``otlpnative``)."""
        self.mapping = m = mapping or OtelMapping()
        self.encoding = encoding
        self._model = m.names["model_id"]
        self._version = m.names.get("model_version") or ()
        self._ids = tuple((key, names) for key in _ID_FIELDS if (names := m.names.get(key)))
        self._segment_keys_ok = all(isinstance(k, str) for k in m.segments)  # else msgspec says why not
        read = set(_FIXED)  # the attributes whose values are read
        for names in (*m.names.values(), *m.features.values(), *m.segments.values()):
            read.update(names)
        if m.operations:
            read.add("gen_ai.operation.name")
        self._wanted = frozenset(read | _MARKERS)
        self._read = frozenset(read)
        self._flags = frozenset(_MARKERS - read)  # only their presence counts
        self._native = None  # libotlpmap (raiwatch.core.otlpnative), for otlp_proto when built
        lib = otlpnative.load() if native and encoding == "otlp_proto" and self._segment_keys_ok else None
        if lib is not None:
            self._native = otlpnative.NativeSpans(lib, self._native_config())

    @property
    def native(self) -> bool:
        """Whether otlp_proto messages are mapped by the compiled library."""
        return self._native is not None

    def _native_config(self) -> dict:
        m = self.mapping
        return {
            "read": sorted(self._read), "flags": sorted(self._flags), "markers": sorted(_MARKERS),
            "model": self._model, "version": self._version, "ids": self._ids,
            "in_tokens": _IN_TOKENS, "out_tokens": _OUT_TOKENS, "texts": sorted(_TEXTS),
            "features": list(m.features.items()), "segments": list(m.segments.items()),
            "operations": sorted(m.operations) or None, "segment_keys_ok": self._segment_keys_ok,
        }  # fmt: skip

    def _native_message(self, raw: bytes, i: int, out: SpansDecoded) -> bool:
        """Map one otlp_proto message with the library; False when Python must map it."""
        assert self._native is not None
        got = self._native.message(raw)
        if got is None:
            return False
        (_, not_genai, operation, no_model), array_, rids, ts = got
        if ts:
            try:  # the contract's checks, as Codec's (the library checked size, time and Unicode)
                events = _EVENTS.decode(array_.replace(b"\n", b","))
            except msgspec.DecodeError:  # never expected: it maps only what keeps the contract
                return False
            out.events += events
            out.raws += array_[1:-1].split(b"\n")
            out.indexes += [i] * len(events)
            out.ts += ts
        out.response_ids.update(rids)
        for reason, n in (("not_genai", not_genai), ("operation", operation), ("no_model", no_model)):
            if n:
                out.skipped[reason] += n
        return True

    def decode_batch(self, raws: Sequence[bytes], origin: Callable[[int], str] | None = None) -> SpansDecoded:
        out = SpansDecoded([], [], [], [], [], {}, [], Counter())
        read = self._json_message if self.encoding == "otlp_json" else self._proto_message
        for i, raw in enumerate(raws):
            if len(raw) > MAX_MESSAGE_BYTES:
                why = f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
                out.rejected.append(Rejected(bytes(raw), why, origin(i) if origin else "", i, "too_large"))
                continue
            if self._native is not None and self._native_message(raw, i, out):
                continue
            problems: list[str] = []
            spans, why = read(raw, i, out, problems)
            if why is not None:
                out.rejected.append(Rejected(bytes(raw), why, origin(i) if origin else "", i, "not_otlp"))
            elif problems:
                reason = f"{len(problems)} of {spans} spans rejected; the first: {problems[0]}"
                out.rejected.append(Rejected(bytes(raw), reason, origin(i) if origin else "", i, "schema"))
        for reason, n in out.skipped.items():
            metrics.OTLP_SKIPPED.labels("spans", reason).inc(n)
        return out

    def _proto_message(
        self, raw: bytes, i: int, out: SpansDecoded, problems: list[str]
    ) -> tuple[int, str | None]:
        """Map the spans of one ``otlp_proto`` message: how many it holds, or why it is not OTLP."""
        req, why = _parse(raw, ExportTraceServiceRequest, self.encoding)
        if req is None:
            return 0, why
        read, flags, n = self._read, self._flags, 0
        for rs in req.resource_spans:
            res = _proto_attrs(rs.resource.attributes, self._wanted)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    n += 1
                    attrs = {}
                    for kv in span.attributes:  # the hot loop: every upb access counts
                        k = kv.key
                        if k in read:
                            v = kv.value
                            if s := v.string_value:  # most values are strings
                                attrs[k] = s
                            elif v.WhichOneof("value") == "int_value":
                                attrs[k] = v.int_value
                            else:
                                attrs[k] = _value(v)
                        elif k in flags:
                            attrs[k] = True
                    self._span(span, attrs, res, i, out, problems)
        return n, None

    def _json_message(
        self, raw: bytes, i: int, out: SpansDecoded, problems: list[str]
    ) -> tuple[int, str | None]:
        """Map the spans of one ``otlp_json`` message: how many it holds, or why it is not OTLP/JSON
        (then nothing of it is kept)."""
        before = len(out.events), len(out.evaluations)
        wanted, n = self._wanted, 0
        try:
            doc = orjson.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError(f"a JSON {type(doc).__name__}, not an ExportTraceServiceRequest object")
            for rs in doc.get("resourceSpans") or ():
                res = _json_attrs((rs.get("resource") or {}).get("attributes"), None)
                for ss in rs.get("scopeSpans") or ():
                    for span in ss.get("spans") or ():
                        n += 1
                        attrs = {}
                        for kv in span.get("attributes") or ():  # _json_attrs, inline
                            k = kv["key"]
                            if k in wanted:
                                v = kv.get("value") or {}
                                s = v.get("stringValue") if type(v) is dict and len(v) == 1 else None
                                attrs[k] = s if s is not None else _json_value(v)
                        self._span(_JsonSpan(span), attrs, res, i, out, problems)
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as e:
            # not the OTLP/JSON shape (OverflowError: a time past any fixed64, too large for a float)
            k, e_ = before
            del out.events[k:], out.raws[k:], out.indexes[k:], out.ts[k:], out.evaluations[e_:]
            why = str(e) if isinstance(e, orjson.JSONDecodeError) else f"{type(e).__name__}: {e}"
            return n, "empty message" if not raw else f"not OTLP/JSON: {why}"
        return n, None

    def _span(
        self, span: Any, attrs: dict, res: dict, i: int, out: SpansDecoded, problems: list[str]
    ) -> None:
        """Map one span (a protobuf ``Span`` or a ``_JsonSpan``) whose wanted attributes are ``attrs``.

        The event is built with the record types' constructors, which do not validate: the few
        contract limits a mapped value can break are checked here, and an event that may break
        one goes through ``msgspec.convert`` (``_validated``), which decides and says why.
        """
        if attrs.keys().isdisjoint(_MARKERS):
            out.skipped["not_genai"] += 1
            return
        m = self.mapping
        op = attrs.get("gen_ai.operation.name")
        if m.operations and (not isinstance(op, str) or op not in m.operations):  # (a list is unhashable)
            out.skipped["operation"] += 1
            return
        get, rget = attrs.get, res.get
        for name in self._model:  # _first, inline (as below): the first present, span before resource
            model = get(name)
            if model is None:
                model = rget(name)
            if model is not None and model != "":
                break
        else:
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
        model_id = str(model)
        ok = len(model_id) <= 128
        version: Any = UNSET
        for name in self._version:
            v = get(name)
            if v is None:
                v = rget(name)
            if v is not None and v != "":
                if v != model:
                    version = str(v)
                    ok = ok and len(version) <= 128
                break
        ids = {}  # deployment, feature, tenant_id, user_id, session_id
        for key, names in self._ids:
            for name in names:
                v = get(name)
                if v is None:
                    v = rget(name)
                if v is not None and v != "":
                    ids[key] = v = str(v)
                    ok = ok and len(v) <= 128
                    break
        in_tokens = out_tokens = None
        for name in _IN_TOKENS:  # span attributes only
            if (v := get(name)) is not None and v != "":
                in_tokens = v if type(v) is int and v >= 0 else None
                break
        for name in _OUT_TOKENS:
            if (v := get(name)) is not None and v != "":
                out_tokens = v if type(v) is int and v >= 0 else None
                break
        if (in_tokens or 0) > _MAX_INT or (out_tokens or 0) > _MAX_INT:
            ok = False
        reasons = get("gen_ai.response.finish_reasons")
        finish = str(reasons[0] if isinstance(reasons, list) else reasons)[:64] if reasons else UNSET
        error = get("error.type")
        if error is None and span.status.code == 2:  # STATUS_CODE_ERROR
            error = span.status.message or "error"
        in_text = out_text = None
        if not attrs.keys().isdisjoint(_TEXTS):  # content capture is on
            in_text = get("input.value") or _text(get("gen_ai.input.messages"), "user")
            if in_text is None and isinstance(get("gen_ai.prompt"), str):
                in_text = attrs["gen_ai.prompt"]
            out_text = get("output.value") or _text(get("gen_ai.output.messages"), None)
            if out_text is None and isinstance(get("gen_ai.completion"), str):
                out_text = attrs["gen_ai.completion"]
            if (in_text and type(in_text) is not str) or (out_text and type(out_text) is not str):
                ok = False
        features: Any = UNSET
        if m.features:
            feats = {
                k: v if isinstance(v, str | int | float | bool) else str(v)
                for k, names in m.features.items()
                if (v := _first(attrs, res, names)) is not None
            }
            if feats:
                try:
                    features = msgspec.convert(feats, _FEATURES)  # ints become floats, as the contract's
                except msgspec.ValidationError:
                    features, ok = feats, False
        segments: Any = UNSET
        if m.segments:
            segs = {
                k: str(v) for k, names in m.segments.items() if (v := _first(attrs, res, names)) is not None
            }
            if segs:
                segments = segs
                if not self._segment_keys_ok or max(map(len, segs.values())) > 128:
                    ok = False
        request = response = UNSET
        if in_text or in_tokens is not None or features:
            request = Request(in_text or UNSET, UNSET if in_tokens is None else in_tokens, features=features)
        latency = (end - start) / 1e6 if end >= start else UNSET
        if (
            out_tokens is not None
            or latency is not UNSET
            or finish is not UNSET
            or error is not None
            or out_text
        ):
            response = Response(
                UNSET if out_tokens is None else out_tokens,
                latency,
                finish,
                None if error is None else str(error)[:512],
                text=out_text or UNSET,
            )
        event = TelemetryEvent(
            1,
            event_id,
            datetime.fromtimestamp(start / 1e9, UTC),
            Model(model_id, version, "llm"),
            **ids,
            request=request,
            response=response,
            segments=segments,
        )
        if not ok:
            try:
                event = _validated(event)
            except msgspec.ValidationError as e:
                problems.append(f"span {span.name!r} ({event_id}): schema: {e}")
                return
        out.events.append(event)
        out.raws.append(_encode(event))
        out.indexes.append(i)
        out.ts.append(start / 1e9)
        rid = get("gen_ai.response.id")
        if rid:
            out.response_ids[event_id] = str(rid)
        if span.events:  # most spans have none
            for name, ts, ev_attrs in _events(span):
                if name == EVALUATION:
                    e = _evaluation(ev_attrs, ts, event_id, i)
                    if e is not None:
                        out.evaluations.append(e)


def _validated(event: TelemetryEvent) -> TelemetryEvent:
    """``event`` checked by msgspec against the contract (``ValidationError`` says where it breaks it).

    Converted from a dict in the order the fields were first mapped (a request's tokens before its
    text), so that of two broken fields the same one is named.
    """
    doc = msgspec.to_builtins(event)
    request = doc.get("request")
    if request and "tokens" in request:
        doc["request"] = {"tokens": request.pop("tokens"), **request}
    return msgspec.convert(doc, TelemetryEvent)


def _events(span: Any) -> list[tuple[str, int, dict[str, Any]]]:
    """A span's events: name, time, attributes."""
    if isinstance(span, _JsonSpan):
        return [
            (se.get("name", ""), int(se.get("timeUnixNano") or 0), _json_attrs(se.get("attributes"), None))
            for se in span.events
        ]
    return [
        (se.name, se.time_unix_nano, {kv.key: _value(kv.value) for kv in se.attributes}) for se in span.events
    ]


# -- OTLP/JSON (the exporter's otlp_json): orjson's dicts, read in the shape the OTLP spec gives
# (camelCase keys, hex ids, 64-bit integers as strings, enums as integers); protobuf's own JSON
# reader (json_format) reads the same at about a hundredth of the speed.


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
    """The ``wanted`` attributes (all when None) of an OTLP/JSON ``KeyValue`` list."""
    out: dict[str, Any] = {}
    if not kvs:
        return out
    for kv in kvs:
        k = kv["key"]
        if wanted is None or k in wanted:
            v = kv.get("value") or {}
            s = v.get("stringValue") if type(v) is dict and len(v) == 1 else None  # most are strings
            out[k] = s if s is not None else _json_value(v)
    return out


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
    def events(self) -> Any:
        return self.d.get("events")

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
                req, why = _parse(raw, ExportLogsServiceRequest, self.encoding)
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
