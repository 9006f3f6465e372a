"""Decode + map of OTLP span messages against decoding telemetry-event.v1, for the same requests.

    .venv/bin/python bench/otlp.py [--requests 50000] [--per-message 100] [--content] [--wall]

The requests are GenAI chat spans made by the OpenTelemetry SDK's tracer (attributes as the
OpenAI instrumentation sets them, in a request span as an app has), encoded with the SDK's OTLP
encoder into ``ExportTraceServiceRequest`` messages of ``--per-message`` spans (``otlp_proto``,
as the Collector's kafka exporter frames them). The same requests as telemetry-event.v1 are the
JSON lines the OTLP mapping produced, decoded by ``telemetry_codec`` as the pipeline does.
``--content``: prompts and answers captured on the spans (``gen_ai.input/output.messages``).
Best of 3 runs of each, in one process, in CPU time (the process's own: on a shared machine wall
time also counts the waits for a core; ``--wall`` times in wall time); the target is a ratio of
at least 0.5.

``otlp_proto`` is mapped by libotlpmap (``raiwatch/core/otlpnative.py``: the mapping compiled,
Go on the Collector's own pdata) when ``make install`` built it, and the Python mapping is timed
beside it. The two "bound" lines time what a mapping in Python has to do first, with nothing
mapped: parsing each message (opentelemetry-proto's generated classes; orjson) and reading every
span attribute's key and string value. Their ratios are the most a Python mapping could reach.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from google.protobuf.json_format import MessageToDict  # noqa: E402
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from raiwatch.core.codec import telemetry_codec  # noqa: E402
from raiwatch.core.otelmap import from_dict  # noqa: E402
from raiwatch.core.otlp import OtlpSpans  # noqa: E402

T0 = 1_772_452_800  # 2026-03-02T12:00:00Z


def make(requests: int, per_message: int, content: bool) -> list[bytes]:
    res = Resource.create({"service.name": "chat-api", "deployment.environment.name": "prod"})
    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=res)
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("opentelemetry.instrumentation.openai_v2")
    for i in range(requests):
        start = (T0 + i // 50) * 10**9 + (i % 50) * 10**7
        attrs = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": ("gpt-4o", "gpt-4o-mini")[i % 2],
            "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.response.id": f"chatcmpl-{i:012d}",
            "gen_ai.response.finish_reasons": ["stop"], "gen_ai.usage.input_tokens": 40 + i % 300,
            "gen_ai.usage.output_tokens": 120 + i % 500, "server.address": "api.openai.com",
            "tenant.id": f"tenant-{i % 40}", "user.id": f"user-{i % 5000}",
        }  # fmt: skip
        if content:
            text = f"question {i} about order {i % 977}"
            part = f'{{"type":"text","content":"{text}"}}'
            attrs["gen_ai.input.messages"] = f'[{{"role":"user","parts":[{part}]}}]'
            attrs["gen_ai.output.messages"] = (
                '[{"role":"assistant","parts":[{"type":"text","content":"an answer of a few words"}],'
                '"finish_reason":"stop"}]'
            )
        span = tracer.start_span("chat gpt-4o", start_time=start, attributes=attrs)
        span.end(end_time=start + 800_000_000 + (i % 97) * 10**6)
    spans = mem.get_finished_spans()
    requests_ = [encode_spans(spans[i : i + per_message]) for i in range(0, len(spans), per_message)]
    mem.clear()  # the provider lives on (its atexit hook): without this every span would, and the
    tp.shutdown()  # garbage collector would walk them all while the decoders run
    return requests_


def otlp_json(request: object) -> bytes:
    """A request as the exporter's otlp_json writes it: protobuf JSON with hex ids, enums as numbers
    (the SDK has no OTLP/JSON encoder; the Collector's is Go)."""
    doc = MessageToDict(request, use_integers_for_enums=True)

    def hexify(d: object) -> None:
        if isinstance(d, dict):
            for k, v in d.items():
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                    d[k] = base64.b64decode(v).hex()
                else:
                    hexify(v)
        elif isinstance(d, list):
            for x in d:
                hexify(x)

    hexify(doc)
    return orjson.dumps(doc)


def read_attributes(messages: list[bytes]) -> None:
    """Parse each message and read every span attribute's key and string value (no mapping)."""
    for raw in messages:
        for rs in ExportTraceServiceRequest.FromString(raw).resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    for kv in span.attributes:
                        kv.key, kv.value.string_value  # noqa: B018


def read_json_attributes(messages: list[bytes]) -> None:
    """The same for OTLP/JSON messages."""
    for raw in messages:
        for rs in orjson.loads(raw)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    for kv in span["attributes"]:
                        kv["key"], kv["value"].get("stringValue")


CLOCK = time.process_time


def best(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--per-message", type=int, default=100)
    ap.add_argument("--content", action="store_true")
    ap.add_argument("--wall", action="store_true", help="time in wall time instead of CPU time")
    args = ap.parse_args()
    if args.wall:
        global CLOCK
        CLOCK = time.perf_counter
    requests = make(args.requests, args.per_message, args.content)
    messages = [r.SerializeToString() for r in requests]
    json_messages = [otlp_json(r) for r in requests]
    mapping = from_dict({"version": 1, "tenant_id": "tenant.id", "user_id": "user.id"})
    codec, json_codec = OtlpSpans(mapping), OtlpSpans(mapping, "otlp_json")
    py_codec = OtlpSpans(mapping, native=False)
    assert json_codec.decode_batch(json_messages).raws == codec.decode_batch(messages).raws
    assert py_codec.decode_batch(messages).raws == codec.decode_batch(messages).raws
    decoded = codec.decode_batch(messages)
    assert len(decoded.events) == args.requests and not decoded.rejected
    lines = decoded.raws  # the same requests as telemetry-event.v1 JSON
    batches = [lines[i : i + 5000] for i in range(0, len(lines), 5000)]
    json_s = best(lambda: [telemetry_codec.decode_batch(b) for b in batches])
    otlp_s = best(lambda: codec.decode_batch(messages))
    otlp_py_s = best(lambda: py_codec.decode_batch(messages))
    otlp_json_s = best(lambda: json_codec.decode_batch(json_messages))
    floor_s = best(lambda: read_attributes(messages))
    floor_json_s = best(lambda: read_json_attributes(json_messages))
    n = args.requests
    mb = sum(map(len, messages)) / 1e6
    content, clock = ", content captured" if args.content else "", "wall" if args.wall else "CPU"
    print(f"{n:,} requests; {len(messages):,} OTLP messages of {args.per_message} spans ({mb:.1f} MB)"
          f"{content}; {clock} time")  # fmt: skip
    print(f"decode telemetry-event.v1 JSON : {n / json_s:>9,.0f} requests/s ({json_s:.2f} s)")
    how = "libotlpmap" if codec.native else "Python (libotlpmap not built: make install with Go)"
    print(f"decode + map otlp_proto, {how:<9}: {n / otlp_s:>9,.0f} requests/s ({otlp_s:.2f} s)"
          f"  ratio {json_s / otlp_s:.2f} (target >= 0.50)")  # fmt: skip
    print(f"decode + map otlp_proto, Python   : {n / otlp_py_s:>9,.0f} requests/s ({otlp_py_s:.2f} s)"
          f"  ratio {json_s / otlp_py_s:.2f}")  # fmt: skip
    print(f"decode + map otlp_json, Python    : {n / otlp_json_s:>9,.0f} requests/s ({otlp_json_s:.2f} s)"
          f"  ratio {json_s / otlp_json_s:.2f}")  # fmt: skip
    print(f"Python's bound, otlp_proto: parse + read : {n / floor_s:>9,.0f} requests/s ({floor_s:.2f} s)"
          f"  ratio {json_s / floor_s:.2f}")  # fmt: skip
    print(f"Python's bound, otlp_json: parse + read  : {n / floor_json_s:>9,.0f} requests/s"
          f" ({floor_json_s:.2f} s)  ratio {json_s / floor_json_s:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
