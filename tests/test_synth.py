"""The scenario generator: reproducible, contract-valid, and it injects what its truth says."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import msgspec
import numpy as np
import orjson
import pytest

from raiwatch.core.codec import feedback_codec, telemetry_codec
from raiwatch.core.errors import ConfigError
from raiwatch.dev import synth

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "bench" / "scenarios").glob("*.yaml"))

SMALL = """
name: small
seed: 1
start: 2026-11-02T10:00:00Z
duration: 40m
garbage: 0.01
diurnal: {amplitude: 0.3}
models:
  - id: chat
    kind: llm
    rate: 10
    tenants: {a: 0.9, b: 0.1}
    languages: {en: 0.7, tr: 0.3}
    prompts: [hello there, where is my order]
    safety: {categories: {toxicity: 0.01, self_harm: 0.002}, blocking: [self_harm]}
  - id: loans
    kind: classifier
    rate: 10
    features:
      income: {type: lognormal, mu: 10, sigma: 0.5}
      job: {type: categorical, values: {salaried: 0.7, contract: 0.3}}
    prediction: {score: {type: normal, mean: 0.6, sd: 0.2}, labels: [deny, approve]}
    segments: {band: {young: 0.5, old: 0.5}}
    labels: {share: 0.5, delay: 2m, jitter: 1m, accuracy: 0.9}
  - id: ranker
    kind: ranker
    rate: 2
    features: {position: {type: uniform, low: 1, high: 10, integer: true}}
    prediction: {score: {type: uniform}, labels: [skip, show]}
anomalies:
  - {kind: safety_spike, model: chat, category: self_harm, rate: 0.5, tenant: b, start: 5m, duration: 5m}
  - {kind: abuse_campaign, model: chat, accounts: 5, per_minute: 30, paraphrase: true,
     start: 10m, duration: 5m}
  - {kind: block_rate_shift, model: chat, attribute: language, group: tr, factor: 20,
     start: 15m, duration: 5m}
  - {kind: feature_drift, model: loans, feature: job, mode: new_category, category: gig, share: 0.5,
     start: 5m, duration: 5m}
  - {kind: feature_drift, model: loans, feature: income, mode: missing, share: 0.5, start: 10m, duration: 5m}
  - {kind: prediction_drift, model: ranker, shift: 0.3, start: 5m, duration: 5m}
  - {kind: fairness_shift, model: loans, attribute: band, group: old, factor: 0.2, start: 15m, duration: 5m}
  - {kind: label_quality_drop, model: loans, accuracy: 0.3, start: 20m, duration: 5m}
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    p = tmp_path / "small.yaml"
    p.write_text(SMALL)
    return p


def _files(events: Path) -> list[bytes]:
    return [p.read_bytes() for p in (events, synth.feedback_path(events), synth.truth_path(events))]


def test_same_seed_same_bytes_other_seed_other_bytes(small: Path, tmp_path: Path):
    sc = synth.load_scenario(small)
    synth.write(tmp_path / "one.jsonl", sc)
    synth.write(tmp_path / "two.jsonl", synth.load_scenario(small))
    assert _files(tmp_path / "one.jsonl") == _files(tmp_path / "two.jsonl")
    synth.write(tmp_path / "three.jsonl", msgspec.structs.replace(sc, seed=2))
    assert (tmp_path / "three.jsonl").read_bytes() != (tmp_path / "one.jsonl").read_bytes()


def test_output_is_contract_valid_and_in_time_order(small: Path, tmp_path: Path):
    truth = synth.write(tmp_path / "ev.jsonl", synth.load_scenario(small))
    lines = (tmp_path / "ev.jsonl").read_bytes().splitlines()
    res = telemetry_codec.decode_batch(lines)
    assert len(res.events) == truth["valid"] and len(res.rejected) == truth["malformed"] > 0
    stamps = [e.timestamp for e in res.events]
    assert stamps == sorted(stamps)
    assert {e.model.kind for e in res.events} == {"llm", "classifier", "ranker"}
    labels = synth.feedback_path(tmp_path / "ev.jsonl").read_bytes().splitlines()
    fb = feedback_codec.decode_batch(labels)
    assert len(fb.events) == truth["labels"] > 0 and not fb.rejected
    ids = {e.event_id for e in res.events}
    assert sum(f.event_id in ids for f in fb.events) >= 0.95 * len(fb.events)  # the rest: garbled events


def _span(events: list[dict], minute0: int, minute1: int) -> list[dict]:
    return [e for e in events if minute0 <= int(e["timestamp"][14:16]) < minute1]


def test_anomalies_are_injected_where_the_truth_says(small: Path, tmp_path: Path):
    truth = synth.write(tmp_path / "ev.jsonl", msgspec.structs.replace(synth.load_scenario(small), garbage=0))
    assert [a["family"] for a in truth["anomalies"]] == [
        "safety", "abuse", "fairness", "drift", "drift", "drift", "fairness", "quality"
    ]  # fmt: skip
    assert truth["anomalies"][0]["dims"] == {"category": "self_harm", "tenant_id": "b"}
    assert truth["anomalies"][3]["dims"] == {"feature": "job"}
    events = [orjson.loads(line) for line in (tmp_path / "ev.jsonl").read_bytes().splitlines()]
    chat = [e for e in events if e.get("model", {}).get("id") == "chat" and "safety" in e]

    def share(evs, pred):
        return sum(map(pred, evs)) / max(len(evs), 1)

    def self_harm(e):
        return "self_harm" in e["safety"]["violations"]

    b = [e for e in chat if e.get("tenant_id") == "b"]
    assert share(_span(b, 5, 10), self_harm) > 0.3 > 0.05 > share(_span(b, 25, 40), self_harm)
    campaign = [e for e in _span(chat, 10, 15) if e["user_id"].startswith("new-")]
    assert 100 < len(campaign) < 200  # 30 a minute for 5 minutes
    assert len({e["request"]["text"] for e in campaign}) > 10  # paraphrased, not one template
    assert len({e["user_id"] for e in campaign}) <= 5
    tr = [e for e in chat if e["segments"]["language"] == "tr"]
    blocked = lambda e: e["safety"]["action"] == "blocked"  # noqa: E731
    assert share(_span(tr, 15, 20), blocked) > 0.025 > 0.008 > share(_span(tr, 25, 40), blocked)  # 0.2% x 20
    loans = [e for e in events if e.get("model", {}).get("id") == "loans" and "request" in e]
    assert 0.3 < share(_span(loans, 5, 10), lambda e: e["request"]["features"]["job"] == "gig") < 0.7
    assert share(_span(loans, 25, 40), lambda e: e["request"]["features"]["job"] == "gig") == 0
    assert share(_span(loans, 10, 15), lambda e: e["request"]["features"]["income"] is None) > 0.3
    old = [e for e in loans if e.get("segments", {}).get("band") == "old"]
    fav = lambda e: e["outcome"]["favorable"]  # noqa: E731
    assert share(_span(old, 15, 20), fav) < 0.5 * share(_span(old, 25, 40), fav)
    by_id = {e["event_id"]: e for e in loans}
    agree = Counter()
    for line in synth.feedback_path(tmp_path / "ev.jsonl").read_bytes().splitlines():
        fb = orjson.loads(line)
        ev = by_id.get(fb["event_id"])
        if ev:
            minute = int(ev["timestamp"][14:16])
            key = "drop" if 20 <= minute < 25 else "normal"
            agree[key, fb["label"] == ev["response"]["prediction"]["label"]] += 1
    drop = agree["drop", True] / (agree["drop", True] + agree["drop", False])
    normal = agree["normal", True] / (agree["normal", True] + agree["normal", False])
    assert drop < 0.5 < 0.8 < normal


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenarios_load(path: Path):
    sc = synth.load_scenario(path)
    assert sc.models and synth.seconds(sc.duration) >= 3 * 3600


def test_the_benchmark_has_two_long_clean_runs_and_six_scenarios():
    scs = [synth.load_scenario(p) for p in SCENARIOS]
    clean = [s for s in scs if not s.anomalies]
    assert len(scs) >= 6 and len(clean) >= 2
    for s in clean:
        assert synth.seconds(s.duration) >= 6 * 3600 and len(s.models) >= 3
        assert sum(m.rate for m in s.models) >= 15
    kinds = {a.__struct_config__.tag for s in scs for a in s.anomalies}
    assert kinds == set(synth.FAMILY)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("duration: 40m", "duration: 40m\nspeed: 3"), "unknown field `speed`"),
        (("model: chat, category: self_harm", "model: chatt, category: self_harm"), "model 'chatt'"),
        (("feature: job", "feature: jobs"), "no feature 'jobs'"),
        (("tenant: b", "tenant: c"), "no tenant 'c'"),
        (("attribute: band", "attribute: bands"), "no segment 'bands'"),
        (("rate: 0.5, tenant", "tenant"), "give either rate or factor"),
        (("start: 20m, duration: 5m", "start: 38m, duration: 5m"), "ends after the scenario"),
        (("start: 2026-11-02T10:00:00Z", "start: 2026-11-02T10:00:00"), "time zone"),
        (("duration: 40m", "duration: 40 minutes"), "duration"),
    ],
)
def test_a_bad_scenario_names_the_problem(tmp_path: Path, edit: tuple[str, str], message: str):
    p = tmp_path / "bad.yaml"
    p.write_text(SMALL.replace(*edit, 1))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as e:
        synth.load_scenario(p)
    assert str(p) in str(e.value)


def cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "raiwatch.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def test_generate_command(small: Path, tmp_path: Path):
    out = tmp_path / "gen" / "events.jsonl"
    p = cli("generate", str(out), "--scenario", str(small), "--seed", "5", "--start", "2026-12-01T00:00:00Z")
    assert p.returncode == 0, p.stderr
    assert "labels to" in p.stdout and "8 anomalies" in p.stdout
    truth = orjson.loads(synth.truth_path(out).read_bytes())
    assert truth["seed"] == 5 and truth["start"] == "2026-12-01T00:00:00+00:00"
    assert truth["anomalies"][0]["start"] == "2026-12-01T00:05:00+00:00"
    p = cli("generate", str(out), "--scenario", str(small), "--events", "100")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--events" in p.stderr
    p = cli("generate", str(tmp_path), "--scenario", str(small))
    assert p.returncode == 2 and "is a folder" in p.stderr
    p = cli("generate", str(out), "--scenario", str(tmp_path / "nope.yaml"))
    assert p.returncode == 2 and "nope.yaml" in p.stderr and "Traceback" not in p.stderr


def test_generate_without_a_scenario_writes_the_demos_traffic_for_a_worker(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
):
    """`raiwatch generate OUT` is what `raiwatch demo` streams: its four anomalies, its 0.5% of
    malformed lines, ending minutes before now so that a live worker's age limit lets it in."""
    import uuid

    from raiwatch.core.config import load_config
    from raiwatch.wiring import build_pipeline

    out = tmp_path / "demo.jsonl"
    p = cli("generate", str(out))
    assert p.returncode == 0, p.stderr
    truth = orjson.loads(synth.truth_path(out).read_bytes())
    start = datetime.fromisoformat(truth["start"])
    demo = msgspec.structs.replace(synth.demo_scenario(), start=start)  # the demo's, from the same minute
    assert truth["anomalies"] == synth.truth(demo) and len(truth["anomalies"]) == 4
    assert truth["valid"] > synth.DEMO_EVENTS * 0.99 and 250 < truth["malformed"] < 350  # 0.5%, as the demo
    assert "4 anomalies" in p.stdout

    decoded = telemetry_codec.decode_batch(out.read_bytes().splitlines())
    assert len(decoded.rejected) == truth["malformed"]
    first = min(range(len(decoded.ts)), key=decoded.ts.__getitem__)
    last = max(range(len(decoded.ts)), key=decoded.ts.__getitem__)
    cfg = load_config(data_dir=str(tmp_path / "data"))
    chdb = f"chdb://{tmp_path_factory.getbasetemp() / 'chdb'}"  # one engine path per process
    ch = msgspec.structs.replace(cfg.clickhouse, dsn=chdb, database=f"gen_{uuid.uuid4().hex[:8]}")
    worker = build_pipeline(msgspec.structs.replace(cfg, clickhouse=ch), live=True)  # its wall clock: now
    res = worker.process([decoded.raws[first], decoded.raws[last]], [0, 0])
    assert res.rejected == []  # neither too old (ingest.max_age_s) nor ahead of the clock

    p = cli("generate", str(out), "--events", "400", "--start", "2019-11-04T09:00:00Z", "--garbage", "0")
    assert p.returncode == 0, p.stderr
    truth = orjson.loads(synth.truth_path(out).read_bytes())
    assert (truth["start"], truth["malformed"]) == ("2019-11-04T09:00:00+00:00", 0)  # --start, --garbage kept


def test_embedding_drift_truth_keeps_its_scope(tmp_path: Path):
    sc = synth.Scenario(
        name="emb",
        start=synth.datetime(2026, 11, 2, tzinfo=synth.UTC),
        duration="10m",
        models=[synth.Model(id="emb", kind="other", rate=5, embedding_dim=4)],
        anomalies=[synth.EmbeddingDrift(model="emb", shift=3, dimensions=2, start="5m", duration="5m")],
    )
    truth = synth.write(tmp_path / "e.jsonl", sc)
    (a,) = truth["anomalies"]
    assert a["dims"] == {} and a["dimensions"] == 2 and a["family"] == "drift"
    vecs = [orjson.loads(x)["request"]["embedding"] for x in (tmp_path / "e.jsonl").read_bytes().splitlines()]
    late = np.array(vecs[len(vecs) // 2 + 100 :])
    assert late[:, 0].mean() > 0.6 and late[:, 1].mean() > 0.6 and abs(late[:, 3].mean()) < 0.1  # 3 x 0.3


def test_the_annotated_example_in_the_scenarios_readme_is_a_valid_scenario(tmp_path: Path):
    import re

    text = (ROOT / "bench" / "scenarios" / "README.md").read_text()
    example = tmp_path / "example.yaml"
    example.write_text(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    sc = synth.load_scenario(example)
    kinds = {a.__struct_config__.tag for a in sc.anomalies}
    assert kinds == set(synth.FAMILY)  # the example shows every kind of anomaly
