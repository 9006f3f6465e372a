"""An OpenTelemetry-instrumented LLM app, for the OTLP tests and ``raiwatch demo --otel``.

Everything on the producing side is the real thing — the ``openai`` client, the official
OpenAI instrumentation (``opentelemetry-instrumentation-openai-v2``, GenAI conventions), the
OpenTelemetry SDK and its OTLP exporters, the Logs API for ``gen_ai.evaluation.result`` — except
the model: ``OpenAIStub`` is a small local HTTP server that answers the Chat Completions API.
Tenant and user ride in OpenTelemetry baggage, which the SDK's ``BaggageSpanProcessor`` copies
onto every span (how an app tags spans it does not create itself).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

EVALUATION = "gen_ai.evaluation.result"


class OpenAIStub:
    """A local OpenAI-compatible server: ``POST /v1/chat/completions`` answers every prompt.

    The reply and its token counts derive from the prompt, its id from the prompt and the call's
    number (unique, as a real API's); a prompt containing ``FAIL``
    gets an HTTP 500 (the instrumentation records ``error.type``). Serves on 127.0.0.1 only.
    """

    def __init__(self) -> None:
        self.calls = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                stub.calls += 1
                prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
                if "FAIL" in prompt:
                    self._send(500, {"error": {"message": "stub failure", "type": "server_error"}})
                    return
                digest = hashlib.sha256(prompt.encode()).hexdigest()
                answer = f"reply to: {prompt[:60]}"
                self._send(200, {
                    "id": f"chatcmpl-{stub.calls:08d}{digest[:16]}",  # unique, as a real API's
                    "object": "chat.completion",
                    "created": 1_700_000_000,
                    "model": f"{body.get('model', 'model')}-2025-01-01",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": answer}}],
                    "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(answer.split()),
                              "total_tokens": len(prompt.split()) + len(answer.split())},
                })  # fmt: skip

            def _send(self, status: int, doc: dict) -> None:
                b = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self) -> OpenAIStub:
        threading.Thread(target=self.server.serve_forever, name="openai-stub", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Call:
    """One request of the app: who asks what; ``verdicts`` are what its evaluator will say
    (evaluation name -> (label, score))."""

    prompt: str
    tenant: str = "acme"
    user: str = "u1"
    model: str = "gpt-4o"
    verdicts: dict[str, tuple[str | None, float | None]] | None = None


class OtelApp:
    """The instrumented app: an OpenAI client whose calls make GenAI spans, and an evaluator that
    emits ``gen_ai.evaluation.result`` log records joined by ``gen_ai.response.id``.

    ``span_processor`` / ``log_processor`` are the SDK processors to export with (an OTLP/HTTP
    exporter to a Collector, or an in-memory one). Content capture is on, as a team that wants
    abuse and text drift would set it (``store_text`` still decides what raiwatch keeps).
    """

    def __init__(self, base_url: str, span_processor: Any, log_processor: Any, service: str = "chat-api",
                 environment: str = "prod", version: str = "1.4.2"):  # fmt: skip
        os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
        os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
        import openai
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
        from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        resource = Resource.create(
            {"service.name": service, "deployment.environment.name": environment, "service.version": version}
        )
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
        self.tracer_provider.add_span_processor(span_processor)
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(log_processor)
        self.instrumentor = OpenAIInstrumentor()
        self.instrumentor.instrument(
            tracer_provider=self.tracer_provider, logger_provider=self.logger_provider
        )
        self.tracer = self.tracer_provider.get_tracer("raiwatch-demo-app")
        self.evaluator = self.logger_provider.get_logger("raiwatch-demo-evaluator")
        self.client = openai.OpenAI(base_url=base_url, api_key="stub", max_retries=0)

    def run(self, calls: Sequence[Call], per_second: float | None = None) -> int:
        """Make the calls (each under a request span carrying tenant and user as baggage) and
        evaluate each answer, at most ``per_second`` of them a second; the number of failed calls."""
        import openai
        from opentelemetry import baggage, context

        failed = 0
        start = time.monotonic()
        for i, c in enumerate(calls):
            if per_second:  # event time is the wall clock: pacing spreads the calls over windows
                time.sleep(max(0.0, start + i / per_second - time.monotonic()))
            token = context.attach(
                baggage.set_baggage("user.id", c.user, baggage.set_baggage("tenant.id", c.tenant))
            )
            try:
                with self.tracer.start_as_current_span("POST /chat"):
                    try:
                        r = self.client.chat.completions.create(
                            model=c.model, messages=[{"role": "user", "content": c.prompt}]
                        )
                    except openai.APIError:
                        failed += 1
                        continue
                    for name, (label, score) in (c.verdicts or {}).items():
                        self.evaluate(name, r.id, label, score)
            finally:
                context.detach(token)
        return failed

    def evaluate(
        self,
        name: str,
        response_id: str,
        label: str | None,
        score: float | None,
        timestamp: int | None = None,
    ) -> None:
        """Emit one ``gen_ai.evaluation.result`` through the Logs API (as a guardrail or judge would);
        ``timestamp`` in ns (default: now)."""
        attrs: dict[str, Any] = {"gen_ai.evaluation.name": name, "gen_ai.response.id": response_id}
        if label is not None:
            attrs["gen_ai.evaluation.score.label"] = label
        if score is not None:
            attrs["gen_ai.evaluation.score.value"] = score
        self.evaluator.emit(event_name=EVALUATION, attributes=attrs, timestamp=timestamp)

    def flush(self) -> None:
        self.tracer_provider.force_flush()
        self.logger_provider.force_flush()

    def close(self) -> None:
        self.flush()
        self.instrumentor.uninstrument()
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
