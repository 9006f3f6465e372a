"""The drift monitor: learned reference, sliding comparison, calibration on stationary traffic,
independence from batching, and state that survives a restart."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import numpy as np
import pytest

from monitors.drift import DriftConfig, DriftMonitor
from raiwatch.core.codec import telemetry_codec
from raiwatch.core.columns import EventColumns
from raiwatch.dev import synth

WINDOW = 60


def scenario(hours: float, anomalies: list | None = None, seed: int = 3, rate: float = 6.0) -> synth.Scenario:
    return synth.Scenario(
        name="drift-test",
        seed=seed,
        start=datetime(2026, 11, 2, 8, 0, tzinfo=UTC),
        duration=f"{int(hours * 3600)}s",
        models=[
            synth.Model(
                id="loans",
                kind="classifier",
                rate=rate,
                version="1",
                features={
                    "income": synth.Dist(type="lognormal", mu=10.6, sigma=0.5),
                    "job": synth.Dist(type="categorical", values={"a": 0.6, "b": 0.3, "c": 0.1}),
                },
                more_features=20,
                prediction=synth.Prediction(score=synth.Dist(type="normal", mean=0.6, sd=0.2)),
            ),
            synth.Model(id="embedder", kind="other", rate=3, embedding_dim=8),
        ],
        anomalies=anomalies or [],
    )


def events(sc: synth.Scenario) -> list:
    lines = [line for line, _ in synth.generate(sc)]
    return telemetry_codec.decode_batch(lines).events


def run(evs: list, mon: DriftMonitor, batch: int = 1000, upto: int | None = None) -> list:
    """Feed events in batches, closing each window once the next one has events (like the clock)."""
    out = []
    opened: list[int] = []
    for i in range(0, len(evs) if upto is None else upto, batch):
        chunk = evs[i : i + batch]
        starts = [int(e.timestamp.timestamp()) // WINDOW * WINDOW for e in chunk]
        mon.observe(EventColumns(chunk, starts))
        for s in sorted(set(starts)):
            if s not in opened:
                opened.append(s)
        while len(opened) > 1:
            out += mon.close(opened.pop(0))
    return out + ([] if upto is not None else [x for s in opened for x in mon.close(s)])


def fired(signals: list, psi: float = 0.1, p: float = 1e-4) -> list:
    names = ("drift.feature", "drift.prediction", "drift.embedding")
    return [s for s in signals if s.signal in names and s.value > psi and (s.p_value or 1) < p]


@pytest.fixture(scope="module")
def stationary() -> list:
    return events(scenario(6))


def test_learns_then_compares(stationary):
    sig = run(stationary, DriftMonitor(WINDOW))
    first = min(s.ts for s in sig)
    assert first == datetime(2026, 11, 2, 9, 1, tzinfo=UTC)  # after the first hour (the reference)
    feats = {s.dims["feature"] for s in sig if s.signal == "drift.feature"}
    assert {"income", "job", "x01", "x20", "response.latency_ms"} <= feats and len(feats) == 23
    assert {s.dims["output"] for s in sig if s.signal == "drift.prediction"} == {"score", "label"}
    assert {s.dims["reference"] for s in sig if s.model_id == "loans"} == {"1@20261102T0800"}
    assert {s.dims["reference"] for s in sig if s.model_id == "embedder"} == {"any@20261102T0800"}
    income = [s for s in sig if s.signal == "drift.feature" and s.dims["feature"] == "income"]
    assert all(1500 < s.n < 2300 for s in income[5:])  # 5 windows x 60 s x 6 events/s


def test_stationary_traffic_calibration(stationary):
    """Six hours; a tabular model with 24 features and outputs and an embedding model; 300
    evaluations each: no evaluation passes a default rule's bar, no Page-Hinkley alarm, and
    adjusted p-values below 0.01 come in no more than about 1% of a model's evaluations."""
    sig = run(stationary, DriftMonitor(WINDOW))
    assert fired(sig) == []
    by_window: dict = {}
    for s in sig:
        if s.p_value is not None and s.signal != "drift.embedding_mmd":  # permutation p: below
            key = (s.model_id, s.ts)
            by_window[key] = min(by_window.get(key, 1.0), s.p_value)
    for model in ("loans", "embedder"):
        ps = [p for (m, _), p in by_window.items() if m == model]
        assert len(ps) == 300 and sum(p < 0.01 for p in ps) <= 3 + 0.01 * len(ps)
    mmd = [s.p_value for s in sig if s.signal == "drift.embedding_mmd"]
    assert len(mmd) == 60 and sum(p < 0.05 for p in mmd) <= 9  # once per 5 windows
    changes = [s for s in sig if s.signal == "drift.change"]
    assert len(changes) == 300 * 15 and not any(s.value for s in changes)  # 13 numeric, latency, score
    psis = [s.value for s in sig if s.signal == "drift.feature"]
    assert np.percentile(psis, 99) < 0.05  # the noise floor, well under the rule's 0.1


def _drift(feature: str, mode: str, **kw) -> synth.FeatureDrift:
    return synth.FeatureDrift(model="loans", feature=feature, mode=mode, start="90m", duration="30m", **kw)


@pytest.mark.parametrize(
    ("anomaly", "feature"),
    [
        (_drift("income", "scale", factor=1.25), "income"),
        (_drift("job", "new_category", share=0.15), "job"),
        (_drift("x03", "scale", factor=2), "x03"),
    ],
)
def test_a_shift_is_seen_within_minutes(anomaly, feature):
    sig = run(events(scenario(2.5, [anomaly])), DriftMonitor(WINDOW))
    hits = [s for s in fired(sig) if s.dims.get("feature") == feature]
    onset = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    assert hits and (min(s.ts for s in hits) - onset).total_seconds() <= 300
    others = {s.dims.get("feature") for s in fired(sig)} - {feature, None}
    assert others == set()


def test_online_detector_sees_a_scaled_feature():
    a = synth.FeatureDrift(
        model="loans", feature="income", mode="scale", factor=1.25, start="90m", duration="30m"
    )
    sig = run(events(scenario(2.5, [a])), DriftMonitor(WINDOW))
    hits = [s for s in sig if s.signal == "drift.change" and s.value]
    onset = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    assert hits and {s.dims["feature"] for s in hits} == {"income"}
    assert 0 < (min(s.ts for s in hits) - onset).total_seconds() <= 180


def test_embedding_shift():
    a = synth.EmbeddingDrift(model="embedder", shift=0.5, dimensions=2, start="90m", duration="30m")
    sig = run(events(scenario(2.5, [a])), DriftMonitor(WINDOW))
    hits = [s for s in fired(sig) if s.model_id == "embedder"]
    onset = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    assert hits and {s.signal for s in hits} == {"drift.embedding"}
    assert 0 < (min(s.ts for s in hits) - onset).total_seconds() <= 300
    mmd = [s for s in sig if s.signal == "drift.embedding_mmd" and onset.replace(minute=40) <= s.ts]
    assert min(s.p_value for s in mmd[:4]) < 0.05  # the kernel test sees it too (floor 2/101)
    assert not [s for s in fired(sig) if s.ts < onset]


def test_prediction_shift():
    a = synth.PredictionDrift(model="loans", shift=-0.1, start="90m", duration="30m")
    sig = run(events(scenario(2.5, [a])), DriftMonitor(WINDOW))
    assert {s.dims["output"] for s in fired(sig) if s.signal == "drift.prediction"} >= {"score"}


def test_missing_values_rate():
    a = synth.FeatureDrift(
        model="loans", feature="income", mode="missing", share=0.3, start="90m", duration="30m"
    )
    sig = run(events(scenario(2.5, [a])), DriftMonitor(WINDOW))
    miss = [s for s in sig if s.signal == "drift.missing_rate" and s.dims["feature"] == "income"]
    peak = max(miss, key=lambda s: s.value)
    assert peak.value == pytest.approx(0.3, abs=0.05) and peak.baseline == 0.0 and peak.p_value < 1e-10


def test_batching_does_not_change_the_signals():
    evs = events(scenario(1.5, seed=9))
    a = run(evs, DriftMonitor(WINDOW), batch=977)
    b = run(evs, DriftMonitor(WINDOW), batch=5000)
    assert msgspec.json.encode(a) == msgspec.json.encode(b) and len(a) > 0


@pytest.mark.parametrize("cut", [0.3, 0.8])  # while learning the reference, and after
def test_restart_continues_where_it_stopped(cut: float):
    evs = events(scenario(1.5, seed=11))
    whole = run(evs, DriftMonitor(WINDOW))
    first = DriftMonitor(WINDOW)
    upto = int(len(evs) * cut) // 1000 * 1000
    before = run(evs, first, upto=upto)
    snap = first.snapshot_dirty()
    # the restarted monitor re-reads from the first event of the oldest open window
    open_from = int(evs[upto - 1].timestamp.timestamp()) // WINDOW * WINDOW  # the one window still open
    resume = next(i for i, e in enumerate(evs) if int(e.timestamp.timestamp()) >= open_from)
    second = DriftMonitor(WINDOW)
    for model, state in snap.items():
        second.restore(model, state)
    after = run(evs[resume:], second)
    assert msgspec.json.encode(before + after) == msgspec.json.encode(whole)


@pytest.mark.parametrize("profile", [False, True])
def test_state_stays_bounded(profile: bool):
    mon = DriftMonitor(WINDOW, DriftConfig(reference_s=600, daily_profile=profile))
    evs = events(scenario(2, seed=5))
    run(evs, mon, upto=len(evs) // 2 // 1000 * 1000)
    st = mon._models["loans"]
    half = len(mon._encode(st))
    run(evs[len(evs) // 2 // 1000 * 1000 :], mon)
    # the daily profile grows by one hour of counts an hour during its first day, then no more
    hour = len(msgspec.msgpack.encode([w[0].tolist() for w in st.profile if w is not None][:1]))
    assert len(mon._encode(st)) <= half * 1.05 + (hour if profile else 0)
    assert len(st.profile) == (24 if profile else 0)


def test_columns_read_the_same_values_as_features_of():
    """The counting path reads events column by column; the learning path builds per-event rows."""
    from monitors.drift import _columns, build_reference, features_of

    sc = synth.default_scenario(3000, seed=2, garbage_fraction=0.0)
    evs = events(sc)
    for model in ("helpdesk-assistant", "claims-triage", "doc-embedder"):
        mine = [e for e in evs if e.model.id == model]
        rows = [features_of(e) for e in mine]
        ref = build_reference(rows, DriftConfig(), "r", "")
        assert ref.features or model == "doc-embedder"
        for f, col in zip(ref.features, _columns(ref, mine), strict=True):
            assert col == [r.get(f.name) for r in rows], f.name


def test_a_busy_model_is_counted_on_a_bounded_sample():
    """15 events/s = 900 a window: 600 are counted (smallest event-id hashes), whatever the batching."""
    evs = events(scenario(1.25, seed=4, rate=15))
    a = run(evs, DriftMonitor(WINDOW), batch=700)
    b = run(evs, DriftMonitor(WINDOW), batch=4000)
    assert msgspec.json.encode(a) == msgspec.json.encode(b)
    income = [s for s in a if s.signal == "drift.feature" and s.dims["feature"] == "income"]
    assert income and all(s.n <= 5 * 600 for s in income) and max(s.n for s in income) == 5 * 600
