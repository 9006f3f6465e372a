"""End to end: an instrumented OpenAI app -> OpenTelemetry Collector -> Kafka -> worker -> incidents.

The app is the real ``openai`` client under the official OpenAI instrumentation, exporting OTLP/HTTP
with the SDK's batch processors; its evaluator emits ``gen_ai.evaluation.result`` through the Logs
API. The collector is the real one (``raiwatch otel build-collector``: OTLP receiver + kafka
exporter, ``otlp_json``), when it is built on this machine. Without it the test produces what the
exporter would (one ``Export*ServiceRequest`` per message, ``otlp_proto``) with the SDK's own OTLP
encoder, and says so in its output. The worker is killed with SIGKILL midway and restarted; its
incidents must equal those of ``raiwatch replay --otlp`` over the same messages (collector path).
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from raiwatch.core import otlpnative
from raiwatch.dev import otelcol
from raiwatch.dev.otelapp import Call, OpenAIStub, OtelApp
from tests.harness import (
    cli,
    incident_keys,
    incidents_jsonl,
    lag,
    poll,
    query,
    read_topic,
    start_worker,
    stop_worker,
    store_incidents,
    wait_drained,
    write_config,
)
from tests.otelsdk import log_messages, span_messages

pytestmark = pytest.mark.kafka

MAPPING = """\
version: 1
tenant_id: tenant.id
user_id: user.id
evaluations:
  toxicity:
    safety: {category: toxicity, violation_labels: [toxic], violation_above: 0.8}
  relevance:
    quality: {favorable_labels: [relevant]}
"""
RULES = """\
groups:
  - name: otel
    rules:
      - alert: ToxicityHigh
        signal: safety.violation_rate
        group_by: [model_id, category]
        fire_when: lower > 0.05
        min_samples: 10
        for: 0s
        clear_when: value < 0.05
        severity: critical
        annotations:
          summary: "{{ model_id }}: toxicity {{ value | pct }} (n={{ n }})"
          runbook: safety-violation-rate.md
"""


def calls(n: int) -> list[Call]:
    out = []
    for i in range(n):
        toxic = i % 3 == 0
        out.append(
            Call(
                "FAIL now" if i % 50 == 49 else f"question {i} about item {i % 17}",
                tenant=("acme", "globex")[i % 2],
                user=f"u{i % 7}",
                verdicts={
                    "toxicity": ("toxic", 0.95) if toxic else ("ok", 0.02),
                    "relevance": ("relevant", 0.8),
                },
            )
        )
    return out


def make_traffic(bootstrap: str, spans_topic: str, logs_topic: str, tmp: Path, n: int) -> str:
    """The app's traffic into the two topics; the encoding the messages are in."""
    binary = otelcol.find()
    with OpenAIStub() as stub:
        if binary is not None:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            with otelcol.Collector(
                binary,
                bootstrap,
                tmp / "collector.log",
                OTLP_SPANS_TOPIC=spans_topic,
                OTLP_LOGS_TOPIC=logs_topic,
                OTLP_ENCODING="otlp_json",
            ) as col:
                app = OtelApp(
                    stub.url,
                    BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{col.http_endpoint}/v1/traces")),
                    BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{col.http_endpoint}/v1/logs")),
                )
                try:
                    assert app.run(calls(n)) == n // 50
                finally:
                    app.close()  # flushes the SDK's exporters; the collector flushes to Kafka on stop
            print(f"\nOTLP path: SDK -> OTLP/HTTP -> the collector ({binary}) -> Kafka, otlp_json")
            return "otlp_json"
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
        app = OtelApp(stub.url, SimpleSpanProcessor(spans), SimpleLogRecordProcessor(logs))
        try:
            app.run(calls(n))
        finally:
            app.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for m in span_messages(spans.get_finished_spans(), 64):
        producer.send(spans_topic, value=m, partition=0)
    for m in log_messages(logs.get_finished_logs(), 64):
        producer.send(logs_topic, value=m, partition=0)
    producer.flush()
    producer.close()
    print(
        "\nOTLP path: no collector built (raiwatch otel build-collector); "
        "the SDK's OTLP encoder -> Kafka, otlp_proto"
    )
    return "otlp_proto"


def test_otel_app_through_the_collector_opens_incidents_and_survives_kill_9(kafka_bootstrap, tmp_path):
    tag = uuid.uuid4().hex[:8]
    spans_topic, logs_topic, group = f"otlp_spans.{tag}", f"otlp_logs.{tag}", f"otel-{tag}"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "otel.yaml").write_text(RULES)
    (tmp_path / "otel.yaml").write_text(MAPPING)
    encoding = "otlp_json" if otelcol.find() is not None else "otlp_proto"
    otel = (
        f"otel:\n  spans_topic: {spans_topic}\n  logs_topic: {logs_topic}\n  encoding: {encoding}\n"
        f"  mapping: {tmp_path / 'otel.yaml'}\n  telemetry_topic: false\n"
    )
    config = write_config(
        tmp_path / "raiwatch.yaml",
        kafka_bootstrap,
        f"telemetry.{tag}",
        group,
        otel,
        size_s=2,
        allowed_lateness_s=2,
        watermark_confirm=1,
    )
    data, log = tmp_path / "data", tmp_path / "worker.log"
    rules = str(tmp_path / "rules")
    worker = start_worker(config, data, log, "--rules", rules)
    try:
        poll(lambda: "partitions assigned" in log.read_text(), 120, "the worker to join its group")
        n = 300
        assert make_traffic(kafka_bootstrap, spans_topic, logs_topic, tmp_path, n) == encoding
        total = sum(1 for r in read_topic(kafka_bootstrap, spans_topic, 10**9, timeout=5))
        assert total > 0
        # kill -9 once something is committed (or an incident is open), then a new worker goes on
        poll(
            lambda: (
                lag(kafka_bootstrap, group, spans_topic) is not None  # a first commit
                or "INCIDENT OPENED" in log.read_text()
            ),
            120,
            "a first commit",
        )
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        producer.send(spans_topic, value=b"\x0a\x05 not OTLP at all", partition=1).get(30)
        producer.close()
        worker = start_worker(config, data, log, "--rules", rules)
        wait_drained(kafka_bootstrap, group, spans_topic, worker, log)
        wait_drained(kafka_bootstrap, group, logs_topic, worker, log)
    finally:
        stop_worker(worker)
    text = log.read_text()
    assert "INCIDENT OPENED [critical]" in text, text[-3000:]
    incidents = store_incidents(data)
    assert {i["rule"] for i in incidents} == {"ToxicityHigh"}
    assert {i["labels"]["model_id"] for i in incidents} == {"gpt-4o"}
    # every successful call is one stored event (none lost, none twice), the FAIL calls with their error
    rows = query(data, "SELECT count() AS n, uniqExact(event_id) AS ids FROM raiwatch.telemetry_events")
    assert rows == [{"n": n, "ids": n}] or rows[0]["ids"] == n, rows
    (dead,) = read_topic(kafka_bootstrap, f"telemetry.{tag}.dlq", 1)
    why = b"not OTLP/JSON" if encoding == "otlp_json" else b"not an OTLP ExportTraceServiceRequest"
    assert dict(dead.headers)["reason"].startswith(why) and dead.value == b"\x0a\x05 not OTLP at all"
    if encoding != "otlp_json":  # the worker mapped otlp_proto with libotlpmap when make install built it
        built = (lib := otlpnative.library_path()) is not None and lib.is_file()
        assert ("are mapped by libotlpmap" in text) == built, text[:3000]
        return
    # replay of the same messages (the collector's otlp_json, one per line, in the order they were
    # produced across partitions: a replay is one source in event time) opens the same incidents
    spans_file, logs_file = tmp_path / "spans.jsonl", tmp_path / "logs.jsonl"
    for topic, path in ((spans_topic, spans_file), (logs_topic, logs_file)):
        records = sorted(
            read_topic(kafka_bootstrap, topic, 10**9, timeout=5), key=lambda r: (r.timestamp, r.offset)
        )
        path.write_bytes(b"".join(r.value + b"\n" for r in records if r.value.startswith(b"{")))
    out = tmp_path / "replay"
    p = cli(
        "replay",
        str(spans_file),
        "--otlp-logs",
        str(logs_file),
        "--rules",
        rules,
        "--config",
        str(config),
        "--out",
        str(out),
        "--quiet",
    )
    assert p.returncode == 0, p.stderr
    assert incident_keys(incidents_jsonl(out / "incidents.jsonl")) == incident_keys(incidents)
