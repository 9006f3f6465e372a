"""OTLP payloads made by the real OpenTelemetry SDK, for the OTLP tests.

Two producers, both the SDK end to end: ``app_payload`` runs the instrumented OpenAI app
(``raiwatch.dev.otelapp``: real client, official instrumentation, local stub model), and
``GenAISpans`` makes GenAI spans through the SDK's tracer API with chosen timestamps (event time
for window tests), as an instrumentation library does. Messages are encoded with the SDK's own
OTLP protobuf encoder, one ``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest`` per
Kafka message, as the Collector's kafka exporter frames ``otlp_proto``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from raiwatch.dev.otelapp import EVALUATION, Call, OpenAIStub, OtelApp

RESOURCE = {"service.name": "chat-api", "deployment.environment.name": "prod", "service.version": "1.4.2"}


def span_messages(spans: Sequence[Any], per_message: int) -> list[bytes]:
    """Finished SDK spans as exporter messages of ``per_message`` spans each."""
    return [
        encode_spans(spans[i : i + per_message]).SerializeToString()
        for i in range(0, len(spans), per_message)
    ]


def log_messages(logs: Sequence[Any], per_message: int) -> list[bytes]:
    return [
        encode_logs(logs[i : i + per_message]).SerializeToString() for i in range(0, len(logs), per_message)
    ]


def app_payload(calls: Sequence[Call], per_message: int = 50) -> tuple[list[bytes], list[bytes]]:
    """Span and log messages of the instrumented app making ``calls`` against the stub."""
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    with OpenAIStub() as stub:
        app = OtelApp(stub.url, SimpleSpanProcessor(spans), SimpleLogRecordProcessor(logs))
        try:
            app.run(calls)
        finally:
            app.close()
    return span_messages(spans.get_finished_spans(), per_message), log_messages(
        logs.get_finished_logs(), per_message
    )


class GenAISpans:
    """GenAI spans and evaluation results at chosen event times, through the SDK's APIs."""

    def __init__(self, resource: dict | None = None):
        res = Resource.create(resource or RESOURCE)
        self.spans, self.logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
        self.tp = TracerProvider(resource=res)
        self.tp.add_span_processor(SimpleSpanProcessor(self.spans))
        self.lp = LoggerProvider(resource=res)
        self.lp.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        self.tracer = self.tp.get_tracer("opentelemetry.instrumentation.openai_v2")
        self.logger = self.lp.get_logger("evaluator")

    def chat(
        self,
        start_s: float,
        model: str = "gpt-4o",
        duration_s: float = 0.5,
        error: str | None = None,
        evaluation: tuple[str, str | None, float | None] | None = None,
        as_span_event: bool = False,
        bare: bool = False,
        **attrs: Any,
    ) -> Any:
        """One chat operation at ``start_s`` (epoch seconds); ``evaluation`` = (name, label, score)
        emitted 1 s after it ends, as a log record in its context (or as a span event). ``bare``:
        only ``attrs``, none of the current GenAI conventions' (older or OpenInference spans)."""
        start = int(start_s * 1e9)
        end = start + int(duration_s * 1e9)
        a = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 30,
            "gen_ai.response.finish_reasons": ["stop"],
        }
        a = attrs if bare else {**a, **attrs}
        span = self.tracer.start_span(f"chat {model}", start_time=start, attributes=a)
        if error:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, error))
        if evaluation and as_span_event:
            span.add_event(EVALUATION, self._eval_attrs(*evaluation), timestamp=end)
        span.end(end_time=end)
        if evaluation and not as_span_event:
            self.logger.emit(
                event_name=EVALUATION,
                attributes=self._eval_attrs(*evaluation),
                timestamp=end + 1_000_000_000,
                context=set_span_in_context(span),
            )
        return span

    def evaluate(self, at_s: float, name: str, label: str | None, score: float | None, **attrs: Any) -> None:
        """An evaluation result with no span context (joined by ``gen_ai.response.id`` in ``attrs``)."""
        self.logger.emit(
            event_name=EVALUATION,
            attributes={**self._eval_attrs(name, label, score), **attrs},
            timestamp=int(at_s * 1e9),
        )

    def http(self, start_s: float) -> None:
        """A non-GenAI span (an HTTP server span)."""
        span = self.tracer.start_span(
            "GET /health",
            start_time=int(start_s * 1e9),
            attributes={"http.request.method": "GET", "http.route": "/health"},
        )
        span.end(end_time=int(start_s * 1e9) + 1000)

    @staticmethod
    def _eval_attrs(name: str, label: str | None, score: float | None) -> dict[str, Any]:
        a: dict[str, Any] = {"gen_ai.evaluation.name": name}
        if label is not None:
            a["gen_ai.evaluation.score.label"] = label
        if score is not None:
            a["gen_ai.evaluation.score.value"] = score
        return a

    def take(self, per_message: int = 100) -> tuple[list[bytes], list[bytes]]:
        """The span and log messages made since the last take."""
        spans, logs = self.spans.get_finished_spans(), self.logs.get_finished_logs()
        self.spans.clear()
        self.logs.clear()
        return span_messages(spans, per_message), log_messages(logs, per_message)
