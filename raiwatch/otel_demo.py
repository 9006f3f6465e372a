"""``raiwatch demo --otel``: an OpenTelemetry-instrumented LLM app's traffic turning into incidents.

The app (``raiwatch.dev.otelapp``: the real ``openai`` client under the official OpenAI
instrumentation, against a local stub model) answers requests for two tenants while its guardrail
emits ``gen_ai.evaluation.result`` events; halfway through, one tenant's traffic turns toxic and
its error rate rises. The SDK exports OTLP/HTTP to the OpenTelemetry Collector (when one is built:
``raiwatch otel build-collector``), which writes to the local Kafka broker with its kafka
exporter; without a collector the SDK's own OTLP encoder writes the same messages. A worker reads
the two topics with the shipped example mapping and short windows (event time is the wall clock
here), and the incidents it opens are printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from raiwatch.demo import _prepare, _wait_drained, console
from raiwatch.dev import localkafka, otelcol
from raiwatch.dev.otelapp import Call, OpenAIStub, OtelApp

SPANS, LOGS = "otlp_spans", "otlp_logs"
# event time is the wall clock: 1,200 requests at 40 a second are 30 s of it, so the toxic half
# spans three of the demo's 5 s windows, more than the rule's ``for: 10s`` (unpaced, the stub
# answers them all in a few seconds, within one or two windows, and the rule never fires)
PER_SECOND = 40.0
EXPORT_MS = 500  # the SDK exporters' batch delay without a collector (its default is 5 s)
RULES = """\
groups:
  - name: otel-demo
    rules:
      - alert: ToxicityRateHigh
        signal: safety.violation_rate
        group_by: [model_id, category, tenant_id]
        fire_when: lower > 0.05
        min_samples: 20
        for: 10s
        clear_when: value < 0.05
        severity: critical
        annotations:
          summary: >-
            {{ model_id }}: {{ category }} rate of tenant {{ tenant_id }} {{ value | pct }}
            (95% CI {{ lower | pct }}-{{ upper | pct }}, n={{ n }})
          runbook: safety-violation-rate.md#one-tenant
"""


def traffic(n: int) -> list[Call]:
    """``n`` requests; from the middle on, every third of globex's answers is judged toxic."""
    calls = []
    for i in range(n):
        tenant = ("acme", "globex")[i % 2]
        spike = i >= n // 2 and tenant == "globex"
        toxic = (i % 3 == 0) if spike else (i % 97 == 0)
        calls.append(
            Call(
                f"how do I reset the password of account {i % 311}?",
                tenant=tenant,
                user=f"{tenant}-user-{i % 23}",
                verdicts={"toxicity": ("toxic", 0.93) if toxic else ("ok", 0.03)},
            )
        )
    return calls


def run_otel_demo(data_dir: Path, requests: int = 1200) -> int:
    data_dir = data_dir.resolve()
    _prepare(data_dir)
    (data_dir / "rules").mkdir()
    (data_dir / "rules" / "otel-demo.yaml").write_text(RULES)
    config = data_dir / "raiwatch.yaml"
    config.write_text(
        "kafka:\n  group_id: raiwatch-otel-demo\n  session_timeout_s: 10\n"
        "windows:\n  size_s: 5\n  allowed_lateness_s: 5\n  idle_close_s: 3\n"
        f"otel:\n  spans_topic: {SPANS}\n  logs_topic: {LOGS}\n  telemetry_topic: false\n"
        f"  mapping: {otelcol.DEPLOY / 'otel-mapping.yaml'}\n"
    )
    binary = otelcol.find()
    console.print("[bold]1/4[/] starting Apache Kafka (KRaft, single node)")
    localkafka.install()
    broker = localkafka.LocalKafka(data_dir / "kafka", die_with_parent=True)  # as `raiwatch demo`'s
    bootstrap = broker.start()
    worker = None
    try:
        env = dict(os.environ, RAIWATCH_KAFKA_BOOTSTRAP=bootstrap, RAIWATCH_DATA_DIR=str(data_dir))
        log_path = data_dir / "worker.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "raiwatch.cli", "run", "--config", str(config),
                 "--rules", str(data_dir / "rules"), "--metrics-port", "0"],
                env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=localkafka.parent_death_signal(),
            )  # fmt: skip
        console.print(f"[bold]2/4[/] worker reading {SPANS} and {LOGS} (pid {worker.pid}, log {log_path})")
        path = "the OpenTelemetry Collector" if binary else "the SDK's OTLP encoder (no collector built)"
        console.print(f"[bold]3/4[/] {requests} requests of the instrumented OpenAI app -> {path} -> Kafka")
        _send(traffic(requests), bootstrap, binary, data_dir)
        console.print("[bold]4/4[/] waiting for the worker to close its windows")
        _wait_drained(log_path, worker, requests)
    finally:
        if worker and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        broker.stop()
    p = subprocess.run(
        [sys.executable, "-m", "raiwatch.cli", "incidents", "list", "--data-dir", str(data_dir)],
        capture_output=True, text=True,
    )  # fmt: skip
    console.print(p.stdout or p.stderr)
    return 0


def _send(calls: list[Call], bootstrap: str, binary: Path | None, data_dir: Path) -> None:
    with OpenAIStub() as stub:
        if binary is not None:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            with otelcol.Collector(binary, bootstrap, data_dir / "collector.log") as col:
                app = OtelApp(
                    stub.url,
                    BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{col.http_endpoint}/v1/traces")),
                    BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{col.http_endpoint}/v1/logs")),
                )
                try:
                    app.run(calls, PER_SECOND)
                finally:
                    app.close()
            return
        from kafka import KafkaProducer
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # exported while the app runs, every half second, as through a Collector: spans and their
        # evaluations reach Kafka together. Sent all spans first, the logs partition could be
        # caught up (idle) when the spans were read, so their windows closed before the
        # evaluations came, which became labels, and the incident never opened (a CI run)
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        app = OtelApp(
            stub.url,
            BatchSpanProcessor(_KafkaSpans(producer), schedule_delay_millis=EXPORT_MS),
            BatchLogRecordProcessor(_KafkaLogs(producer), schedule_delay_millis=EXPORT_MS),
        )
        try:
            app.run(calls, PER_SECOND)
        finally:
            app.close()  # flushes both processors
            producer.flush()
            producer.close()


class _KafkaSpans(SpanExporter):
    """Spans as the Collector's kafka exporter frames ``otlp_proto``: one request a message."""

    def __init__(self, producer: Any):
        self.producer = producer

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.producer.send(SPANS, value=encode_spans(spans).SerializeToString(), partition=0)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.producer.flush()


class _KafkaLogs(LogRecordExporter):
    """Log records (the evaluations) framed as ``_KafkaSpans`` frames spans."""

    def __init__(self, producer: Any):
        self.producer = producer

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.producer.send(LOGS, value=encode_logs(batch).SerializeToString(), partition=0)
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.producer.flush(timeout_millis / 1000)
        return True

    def shutdown(self) -> None:
        self.producer.flush()
