"""The OTLP source in process: decode and map SDK-made messages, skip, reject, hold, join."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import orjson
import pytest

from raiwatch.core import metrics
from raiwatch.core.config import load_config
from raiwatch.core.otelmap import from_dict, lint
from raiwatch.core.otlp import OtlpLogs, OtlpSpans
from raiwatch.dev import otelcol
from raiwatch.dev.otelapp import Call
from raiwatch.evaljoin import EvaluationJoin
from raiwatch.wiring import build_pipeline
from streams.offsets import OffsetTracker
from tests.harness import ROOT, cli
from tests.otelsdk import GenAISpans, app_payload

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()  # a fixed event time: nothing depends on today
MAPPING = {
    "version": 1,
    "tenant_id": "tenant.id",
    "user_id": "user.id",
    "segments": {"plan": "app.plan"},
    "features": {"prompt_chars": "app.prompt_chars"},
    "evaluations": {
        "toxicity": {
            "safety": {"category": "toxicity", "violation_labels": ["toxic"], "violation_above": 0.8}
        },
        "guardrail": {
            "safety": {
                "category": "jailbreak",
                "violation_labels": ["blocked"],
                "action_labels": {"blocked": "blocked", "pass": "allowed"},
            }
        },
        "relevance": {"quality": {"favorable_labels": ["relevant"]}},
    },
}


def skipped(reason: str) -> float:
    return metrics.OTLP_SKIPPED.labels("spans", reason)._value.get()


def test_the_instrumented_openai_app_maps_to_telemetry_events():
    calls = [Call(f"question {i}", tenant="globex", user=f"u{i % 3}") for i in range(4)] + [
        Call("please FAIL")
    ]
    span_msgs, log_msgs = app_payload(calls, per_message=100)
    before = skipped("not_genai")
    d = OtlpSpans(from_dict(MAPPING)).decode_batch(span_msgs)
    assert not d.rejected and len(d.events) == 5 and set(d.indexes) == {0}
    assert skipped("not_genai") - before == 5  # the app's own HTTP spans: skipped and counted
    ok = d.events[0]
    assert ok.model.id == "gpt-4o" and ok.model.version == "gpt-4o-2025-01-01" and ok.model.kind == "llm"
    assert (ok.deployment, ok.feature, ok.tenant_id, ok.user_id) == ("prod", "chat-api", "globex", "u0")
    assert ok.request.text == "question 0" and ok.request.tokens == 2
    assert ok.response.text == "reply to: question 0" and ok.response.tokens == 4
    assert ok.response.finish_reason == "stop" and ok.response.error is None and ok.response.latency_ms > 0
    assert len(ok.event_id) == 48 and d.response_ids[ok.event_id].startswith("chatcmpl-")
    failed = d.events[-1]
    assert failed.response.error and failed.response.tokens is msgspec.UNSET
    # the raw bytes stored for each event are the telemetry contract's JSON
    assert msgspec.json.decode(d.raws[0])["model"] == {
        "id": "gpt-4o",
        "version": "gpt-4o-2025-01-01",
        "kind": "llm",
    }
    assert log_msgs == []  # no evaluator ran


def test_openinference_and_older_attribute_names_map_too():
    sdk = GenAISpans()
    sdk.chat(
        T0,
        bare=True,
        **{
            "llm.model_name": "claude-3",
            "openinference.span.kind": "LLM",
            "llm.token_count.prompt": 7,
            "llm.token_count.completion": 9,
            "input.value": "hi",
            "output.value": "ho",
        },
    )
    sdk.chat(
        T0 + 1,
        bare=True,
        **{"gen_ai.system": "openai", "gen_ai.request.model": "gpt-3.5", "gen_ai.conversation.id": "conv-9"},
    )
    spans, _ = sdk.take()
    a, b = OtlpSpans().decode_batch(spans).events
    assert (a.model.id, a.request.tokens, a.response.tokens, a.request.text, a.response.text) == (
        "claude-3",
        7,
        9,
        "hi",
        "ho",
    )
    assert b.model.id == "gpt-3.5" and b.session_id == "conv-9"


def test_segments_features_and_operations_come_from_the_mapping():
    sdk = GenAISpans()
    sdk.chat(T0, **{"app.plan": "free", "app.prompt_chars": 120})
    sdk.chat(T0, **{"gen_ai.operation.name": "embeddings"})
    spans, _ = sdk.take()
    before = skipped("operation")
    (ev,) = OtlpSpans(from_dict({**MAPPING, "operations": ["chat"]})).decode_batch(spans).events
    assert ev.segments == {"plan": "free"} and ev.request.features == {"prompt_chars": 120}
    assert skipped("operation") - before == 1


@pytest.mark.parametrize("native", [True, False])
def test_odd_attribute_shapes_are_read_not_raised(native):
    """An operation name that is a list (unhashable) under an operations filter, and GenAI messages
    whose ``parts`` is a number: the Python mapping raised on both (the worker would have stopped)."""
    sdk = GenAISpans()
    sdk.chat(T0, **{"gen_ai.operation.name": ["chat"]})
    sdk.chat(T0, **{"gen_ai.input.messages": '[{"role": "user", "parts": 5}]', "input.value": ""})
    spans, _ = sdk.take()
    before = skipped("operation")
    codec = OtlpSpans(from_dict({**MAPPING, "operations": ["chat"]}), native=native)
    (ev,) = codec.decode_batch(spans).events
    assert skipped("operation") - before == 1
    assert ev.request.text is msgspec.UNSET and ev.request.tokens == 12


def test_a_malformed_message_is_rejected_with_its_reason_and_the_rest_go_on():
    sdk = GenAISpans()
    sdk.chat(T0)
    good, _ = sdk.take()
    msgs = [b"\x0a\xff\xff\xff garbage", good[0], b"", b'{"resourceSpans": 3}']
    d = OtlpSpans().decode_batch(msgs, lambda i: f"otlp_spans/0@{i}")
    # JSON on a topic configured otlp_proto is not OTLP either
    assert [r.source for r in d.rejected] == ["otlp_spans/0@0", "otlp_spans/0@2", "otlp_spans/0@3"]
    assert all(r.kind == "not_otlp" and r.raw == msgs[r.index] for r in d.rejected)
    assert "not an OTLP ExportTraceServiceRequest" in d.rejected[0].reason
    assert d.rejected[1].reason == "empty message"
    assert len(d.events) == 1 and d.indexes == [1]
    j = OtlpSpans(encoding="otlp_json").decode_batch([b'{"resourceSpans": 3}', b"{not json"])
    assert len(j.rejected) == 2 and "not OTLP/JSON" in j.rejected[1].reason
    # OTLP/JSON writes 64-bit integers as strings: one past any fixed64 is not OTLP either
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "chat",
            "startTimeUnixNano": "1772452800000000000", "endTimeUnixNano": "1" + "0" * 400,
            "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                           {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}]}  # fmt: skip
    huge = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    (r,) = OtlpSpans(encoding="otlp_json").decode_batch([huge]).rejected
    assert r.kind == "not_otlp" and r.reason.startswith("not OTLP/JSON: OverflowError")


def test_otlp_json_as_the_exporter_writes_it():
    # OTLP/JSON: camelCase keys, hex ids, int64 as strings (one span of the Collector's otlp_json)
    msg = (
        b'{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},'
        b'"scopeSpans":[{"scope":{},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",'
        b'"spanId":"eee19b7ec3c1b174","name":"chat gpt-4o","kind":3,'
        b'"startTimeUnixNano":"1772452800000000000","endTimeUnixNano":"1772452800250000000",'
        b'"attributes":[{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}},'
        b'{"key":"gen_ai.request.model","value":{"stringValue":"gpt-4o"}},'
        b'{"key":"gen_ai.usage.input_tokens","value":{"intValue":"11"}}],"status":{}}]}]}]}'
    )
    (ev,) = OtlpSpans(encoding="otlp_json").decode_batch([msg]).events
    assert ev.event_id == "5b8efff798038103d269b633813fc60ceee19b7ec3c1b174"
    assert ev.timestamp == datetime(2026, 3, 2, 12, 0, tzinfo=UTC) and ev.response.latency_ms == 250.0
    assert ev.request.tokens == 11 and ev.feature == "svc"


def test_mapping_lint_names_file_and_line(tmp_path):
    p = tmp_path / "otel.yaml"
    p.write_text(
        "version: 1\ntenant_id: [tenant.id]\nevaluations:\n  tox:\n    safety:\n      violation_above: 2\n"
        "  rel:\n    qualty: {}\nbogus: 1\n"
    )
    problems = lint(p)
    assert any(x.startswith(f"{p}:6: evaluations.tox.safety.violation_above") for x in problems), problems
    assert any(x.startswith(f"{p}:8: evaluations.rel") and "qualty" in x for x in problems), problems
    assert any(x.startswith(f"{p}:9: ") and "bogus" in x for x in problems), problems
    p.write_text("version: 1\ntenant_id: tenant.id\n")
    assert lint(p) == []
    p.write_text("version: 1\ntenant_id: [a\n")
    (syntax,) = lint(p)
    assert syntax.startswith(f"{p}:3: YAML syntax error: ") and "line 2" in syntax, syntax
    # a YAML bomb is refused before anything walks it, as in a rule file
    p.write_text(
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [{', '.join([f'*{q}'] * 10)}]\n" for q, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
    )
    (bomb,) = lint(p)
    assert bomb.startswith(f"{p}:6: YAML refused: too large once aliases are expanded"), bomb


@pytest.fixture
def pipeline(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()

    def make(**windows):
        cfg = load_config(data_dir=str(base / f"o-{uuid.uuid4().hex[:8]}"))
        ch = msgspec.structs.replace(
            cfg.clickhouse, dsn=f"chdb://{base / 'chdb'}", database=f"o_{uuid.uuid4().hex[:8]}", rollups=False
        )
        w = msgspec.structs.replace(cfg.windows, watermark_confirm=1, **windows)
        pipe = build_pipeline(msgspec.structs.replace(cfg, clickhouse=ch, windows=w))
        pipe.evaluations = EvaluationJoin(from_dict(MAPPING))
        return pipe

    return make


def test_a_message_is_held_until_the_latest_window_its_spans_fed_is_written(pipeline):
    pipe = pipeline(size_s=60, allowed_lateness_s=0)
    sdk = GenAISpans()
    sdk.chat(T0 + 10)  # window T0
    sdk.chat(T0 + 70)  # window T0 + 60, in the same message
    sdk.http(T0 + 71)
    (one,), _ = sdk.take()
    sdk.chat(T0 + 75)
    (two,), _ = sdk.take()
    codec = OtlpSpans(from_dict(MAPPING))
    tracker = OffsetTracker()
    res = pipe.process([one, two], [0, 0], codec=codec)
    assert res.windows == [T0 + 60, T0 + 60] and res.rejected == []
    tracker.hold(0, [100, 101], res.windows, res.durable)
    res.durable.result()
    assert pipe.open_windows() == {T0, T0 + 60} or pipe.open_windows() == {T0 + 60}
    assert tracker.committable(pipe.open_windows()) == {0: 100}  # window T0 + 60 still open
    sdk.chat(T0 + 200)
    (three,), _ = sdk.take()
    later = pipe.process([three], [0], codec=codec)  # moves the watermark past T0 + 120
    later.durable.result()
    assert T0 + 60 not in pipe.open_windows()
    assert tracker.committable(pipe.open_windows()) == {0: 102}


def test_evaluations_join_their_operation_in_either_order_and_late_ones_become_labels(pipeline):
    pipe = pipeline(size_s=60, allowed_lateness_s=30)
    sdk = GenAISpans()
    # evaluation after its span, in its context; as a span event; before its span, by response id
    sdk.chat(T0 + 1, evaluation=("toxicity", "toxic", 0.95), **{"tenant.id": "acme"})
    sdk.chat(T0 + 2, evaluation=("guardrail", "blocked", None), as_span_event=True)
    sdk.chat(T0 + 3, evaluation=("relevance", "relevant", 0.7))
    sdk.chat(T0 + 4, evaluation=("unknown-eval", "x", 0.1))
    spans, logs = sdk.take()
    sdk.evaluate(T0 + 6, "toxicity", "ok", 0.1, **{"gen_ai.response.id": "resp-5"})
    early, _ = ([], None)
    _, early = sdk.take()
    sdk.chat(T0 + 5, **{"gen_ai.response.id": "resp-5"})
    late_span, _ = sdk.take()
    spans_codec, logs_codec = OtlpSpans(from_dict(MAPPING)), OtlpLogs()
    r1 = pipe.process_evaluations(early, [0], codec=logs_codec)
    assert r1.windows == [T0]  # held until the window of the evaluation closes
    pipe.process(spans, [0], codec=spans_codec)
    pipe.process_evaluations(logs, [0], codec=logs_codec)
    pipe.process(late_span, [0], codec=spans_codec)
    join = pipe.evaluations
    assert join.held == 5
    held = {ev.event_id: ev for evs in join._held.values() for ev in evs.values()}
    by_ts = sorted(held.values(), key=lambda e: e.timestamp)
    assert by_ts[0].safety.violations == ["toxicity"] and by_ts[0].safety.scores == {"toxicity": 0.95}
    assert by_ts[1].safety.violations == ["jailbreak"] and by_ts[1].safety.action == "blocked"
    assert not by_ts[2].safety and not by_ts[3].safety
    assert by_ts[4].safety.violations == [] and by_ts[4].safety.scores == {"toxicity": 0.1}
    assert join.counts == {"joined": 3, "early": 1, "label": 1, "unmapped": 1}
    feedback_before = pipe.feedback_in
    # the window closes: its operations reach the safety monitor with their verdicts
    sdk.chat(T0 + 400)
    spans, _ = sdk.take()
    res = pipe.process(spans, [0], codec=spans_codec)
    res.durable.result()
    rates = {
        (s.dims.get("category"), s.dims.get("tenant_id")): (s.value, s.n)
        for s in res.signals
        if s.signal == "safety.violation_rate"
    }
    assert rates[("toxicity", None)] == (pytest.approx(1 / 3), 3)
    assert rates[("jailbreak", None)] == (pytest.approx(1 / 3), 3)
    # an evaluation of a counted operation arrives late: a label, and so is a quality evaluation
    first = by_ts[0]
    sdk.evaluate(T0 + 401, "toxicity", "toxic", 0.99, **{"gen_ai.response.id": "resp-5"})
    sdk.evaluate(T0 + 402, "relevance", "irrelevant", 0.1, **{"gen_ai.response.id": "resp-5"})
    sdk.evaluate(T0 + 403, "toxicity", "toxic", 0.99, **{"gen_ai.response.id": "never-seen"})
    _, logs = sdk.take()
    res = pipe.process_evaluations(logs, [0], codec=logs_codec)
    res.durable.result()
    assert join.counts["label"] == 3 and join.counts["early"] == 2
    assert pipe.feedback_in - feedback_before == 2
    assert first.event_id in held
    pipe.close_all()
    assert join.counts["unmatched"] == 1  # the never-seen operation's evaluation gave up
    assert join.held == 0


def test_held_operations_are_bounded(pipeline):
    pipe = pipeline(size_s=60, allowed_lateness_s=30)
    pipe.evaluations.max_held = 3
    sdk = GenAISpans()
    for i in range(5):
        sdk.chat(T0 + i * 61)  # five windows
    spans, _ = sdk.take()
    pipe.process(spans, [0], codec=OtlpSpans())
    assert pipe.evaluations.held <= 3 and pipe.evaluations.counts["released_early"] >= 2


def test_otel_lint_on_the_command_line(tmp_path):
    ok = cli("otel", "lint", str(ROOT / "deploy" / "otelcol" / "otel-mapping.yaml"))
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 1"), ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nsegments:\n  plan: []\n")
    p = cli("otel", "lint", str(bad))
    assert p.returncode == 1 and p.stdout.startswith(f"{bad}:3: segments.plan: give an attribute name")
    # a worker refuses to start on a mapping that does not lint: one line, exit 2
    cfg = tmp_path / "raiwatch.yaml"
    cfg.write_text(f"otel:\n  spans_topic: otlp_spans\n  mapping: {bad}\n")
    p = cli("replay", str(bad), "--otlp", "--config", str(cfg), "--out", str(tmp_path / "out"), "--quiet")
    assert p.returncode == 2 and p.stderr.startswith(
        "raiwatch: error: the OpenTelemetry mapping does not lint"
    )
    assert "Traceback" not in p.stderr


@pytest.mark.skipif(otelcol.find() is None, reason="no collector built here (raiwatch otel build-collector)")
def test_the_collector_accepts_the_shipped_config_and_refuses_a_broken_one(tmp_path):
    binary = otelcol.find()
    ok = otelcol.validate(binary, otelcol.CONFIG)
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "collector.yaml"
    broken.write_text(otelcol.CONFIG.read_text().replace("partition_traces_by_id", "partition_spans_by_id"))
    p = otelcol.validate(binary, broken)
    assert p.returncode != 0 and "partition_spans_by_id" in p.stderr


def test_an_early_quality_evaluation_becomes_a_label_once_its_operation_comes(pipeline):
    pipe = pipeline(size_s=60, allowed_lateness_s=30)
    sdk = GenAISpans()
    sdk.evaluate(T0 + 3, "relevance", "relevant", 0.9, **{"gen_ai.response.id": "resp-q"})
    _, early = sdk.take()
    sdk.chat(T0 + 1, **{"gen_ai.response.id": "resp-q"})
    spans, _ = sdk.take()
    pipe.process_evaluations(early, [0], codec=OtlpLogs())
    before = pipe.feedback_in
    res = pipe.process(spans, [0], codec=OtlpSpans(from_dict(MAPPING)))
    res.durable.result()
    assert pipe.evaluations.counts == {"early": 1, "joined": 1}
    assert pipe.feedback_in - before == 1  # the label went to the quality monitor's join
    assert res.windows == [T0]  # the message waits for the window its label counts in
