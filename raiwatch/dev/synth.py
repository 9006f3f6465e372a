"""Synthetic telemetry (telemetry-event.v1) with injected anomalies and their ground truth.

Used by the demo, the tests and the benchmarks. Deterministic for a seed. Three models: an
LLM assistant with safety classifier output, a tabular classifier with fairness segments,
and an embedding model whose events carry nothing but an embedding. Clean traffic violates
each safety category at well under 1%; a ``SafetySpike`` raises one category for one model
(optionally one tenant) over an interval. A fraction of lines can be made malformed on
purpose, each kind of damage a real producer causes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

CATEGORIES = ("toxicity", "self_harm", "hate", "pii", "prompt_injection", "jailbreak")
BLOCKING = {"self_harm", "prompt_injection", "jailbreak", "hate"}
TENANTS = ("northwind", "globex", "initech", "umbrella", "hooli")
TENANT_WEIGHTS = (0.35, 0.25, 0.2, 0.12, 0.08)
PROMPTS = (
    "my export to csv keeps failing",
    "how do I reset my password",
    "summarise this invoice",
    "why was my card declined",
    "translate this paragraph to german",
    "write a polite reminder email",
    "what are your opening hours",
    "cancel my subscription please",
    "the app crashes on login",
)
GARBAGE_KINDS = ("truncated", "not_json", "missing_model", "wrong_type", "naive_timestamp", "bad_score")


@dataclass(frozen=True)
class SafetySpike:
    """``category`` violations for ``model_id`` rise to ``rate`` during [start, end)."""

    model_id: str
    category: str
    start: datetime
    end: datetime
    rate: float
    tenant_id: str | None = None
    kind: str = "safety_spike"


@dataclass
class Scenario:
    """What to generate: ``events`` at ``rate_per_s`` of event time from ``start``."""

    events: int = 60_000
    rate_per_s: float = 40.0
    start: datetime = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    seed: int = 7
    base_violation_rate: float = 0.004
    garbage_fraction: float = 0.0
    spikes: list[SafetySpike] = field(default_factory=list)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.events / self.rate_per_s)

    def at_fraction(self, f: float) -> datetime:
        return self.start + (self.end - self.start) * f


def recent_start(events: int, rate_per_s: float, now: datetime | None = None) -> datetime:
    """A start time so that the scenario ends a few minutes before ``now`` (whole minutes, UTC)."""
    now = now or datetime.now(UTC)
    start = now - timedelta(seconds=events / rate_per_s) - timedelta(minutes=5)
    return start.replace(second=0, microsecond=0)


def default_scenario(
    events: int = 60_000,
    seed: int = 7,
    garbage_fraction: float = 0.0,
    rate_per_s: float = 40.0,
    start: datetime | None = None,
) -> Scenario:
    """Clean traffic with one 8-minute self-harm spike on the assistant, from 40% of the timeline."""
    sc = Scenario(events=events, seed=seed, garbage_fraction=garbage_fraction, rate_per_s=rate_per_s)
    if start is not None:
        sc.start = start
    start = sc.at_fraction(0.40)
    sc.spikes.append(
        SafetySpike("helpdesk-assistant", "self_harm", start, min(sc.end, start + timedelta(minutes=8)), 0.12)
    )
    return sc


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _llm(rng: random.Random, i: int, ts: datetime, sc: Scenario) -> dict:
    tenant = rng.choices(TENANTS, TENANT_WEIGHTS)[0]
    scores = {c: round(rng.random() * 0.1, 3) for c in CATEGORIES}
    violations = [c for c in CATEGORIES if rng.random() < sc.base_violation_rate]
    for sp in sc.spikes:
        if (
            sp.model_id == "helpdesk-assistant"
            and sp.start <= ts < sp.end
            and (sp.tenant_id is None or sp.tenant_id == tenant)
            and sp.category not in violations
            and rng.random() < sp.rate
        ):
            violations.append(sp.category)
    for c in violations:
        scores[c] = round(0.8 + rng.random() * 0.2, 3)
    action = "blocked" if BLOCKING.intersection(violations) else "redacted" if violations else "allowed"
    text = rng.choice(PROMPTS)
    return {
        "schema_version": 1,
        "event_id": f"evt-{sc.seed}-{i:08d}",
        "timestamp": _iso(ts),
        "model": {"id": "helpdesk-assistant", "version": "2026-10-20", "kind": "llm"},
        "deployment": "prod-eu",
        "feature": "chat",
        "tenant_id": tenant,
        "user_id": f"u{rng.randrange(4000):05d}",
        "session_id": f"s-{rng.randrange(20000):05d}",
        "client": {"ip_hash": f"{rng.getrandbits(32):08x}", "user_agent_family": "firefox"},
        "request": {"text": text, "tokens": len(text.split()) + 2, "language": "en"},
        "response": {
            "tokens": 0 if action == "blocked" else rng.randrange(20, 400),
            "latency_ms": round(rng.lognormvariate(6.5, 0.4), 1),
            "finish_reason": "content_filter" if action == "blocked" else "stop",
        },
        "safety": {"scores": scores, "violations": violations, "action": action},
        "segments": {"language": "en", "region": rng.choice(("eu", "na", "apac"))},
        "outcome": {"favorable": action == "allowed"},
    }


def _classifier(rng: random.Random, i: int, ts: datetime, sc: Scenario) -> dict:
    amount = round(rng.lognormvariate(7.2, 0.8), 2)
    score = round(min(1.0, max(0.0, rng.gauss(0.7, 0.15))), 3)
    return {
        "schema_version": 1,
        "event_id": f"evt-{sc.seed}-{i:08d}",
        "timestamp": _iso(ts),
        "model": {"id": "claims-triage", "version": "1.4.2", "kind": "classifier"},
        "deployment": "prod-eu",
        "feature": "claims-intake",
        "tenant_id": rng.choice(("insurer-9", "insurer-4")),
        "user_id": f"c{rng.randrange(9000):05d}",
        "request": {
            "features": {
                "claim_amount": amount,
                "policy_age_days": rng.randrange(30, 3000),
                "channel": rng.choice(("mobile", "web", "phone")),
                "prior_claims": rng.randrange(0, 4),
            }
        },
        "response": {
            "latency_ms": round(rng.uniform(10, 40), 1),
            "prediction": {"label": "fast_track" if score > 0.5 else "review", "score": score},
        },
        "segments": {
            "age_band": rng.choice(("18-34", "35-49", "50-64", "65+")),
            "region": rng.choice(("west", "east", "north", "south")),
        },
        "outcome": {"favorable": score > 0.5},
    }


def _embedder(rng: random.Random, i: int, ts: datetime, sc: Scenario) -> dict:
    return {
        "schema_version": 1,
        "event_id": f"evt-{sc.seed}-{i:08d}",
        "timestamp": _iso(ts),
        "model": {"id": "doc-embedder", "kind": "other"},
        "request": {"embedding": [round(rng.gauss(0, 0.3), 3) for _ in range(8)]},
    }


def _garbage(rng: random.Random, good: bytes) -> tuple[bytes, str]:
    kind = rng.choice(GARBAGE_KINDS)
    if kind == "truncated":
        return good[: len(good) // 2], kind
    if kind == "not_json":
        return b"<html>502 Bad Gateway</html>", kind
    obj = orjson.loads(good)
    if kind == "missing_model":
        del obj["model"]
    elif kind == "wrong_type":
        obj["response"] = {"latency_ms": "fast"}
    elif kind == "naive_timestamp":
        obj["timestamp"] = obj["timestamp"].rstrip("Z")
    else:
        obj["safety"] = {"scores": {"toxicity": 7}}
    return orjson.dumps(obj), kind


def generate(sc: Scenario) -> Iterator[tuple[bytes, bool]]:
    """Yield ``(line, is_valid)`` for every event of the scenario, in event-time order (with jitter)."""
    rng = random.Random(sc.seed)
    step = 1.0 / sc.rate_per_s
    makers = (_llm, _classifier, _embedder)
    weights = (0.6, 0.3, 0.1)
    for i in range(sc.events):
        ts = sc.start + timedelta(seconds=i * step + rng.uniform(0, step))
        make = rng.choices(makers, weights)[0]
        line = orjson.dumps(make(rng, i, ts, sc))
        if sc.garbage_fraction and rng.random() < sc.garbage_fraction:
            line, _ = _garbage(rng, line)
            yield line, False
        else:
            yield line, True


def write(path: str | Path, sc: Scenario) -> dict:
    """Write the scenario as JSON lines to ``path`` and its ground truth beside it; return the truth."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    valid = bad = 0
    with path.open("wb") as f:
        for line, ok in generate(sc):
            f.write(line + b"\n")
            valid += ok
            bad += not ok
    truth = {
        "events": sc.events,
        "valid": valid,
        "malformed": bad,
        "seed": sc.seed,
        "start": sc.start.isoformat(),
        "end": sc.end.isoformat(),
        "anomalies": [
            {**asdict(s), "start": s.start.isoformat(), "end": s.end.isoformat()} for s in sc.spikes
        ],
    }
    truth_path(path).write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2))
    return truth


def truth_path(events_path: str | Path) -> Path:
    p = Path(events_path)
    return p.with_name(p.name.removesuffix(".jsonl") + ".truth.json")
