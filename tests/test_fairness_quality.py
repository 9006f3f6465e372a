"""Fairness and label-based quality: agreement with Fairlearn, the label join's edge cases, restarts.

Fairlearn's ``MetricFrame`` computes the same per-group rates offline on a DataFrame of the same
events and labels; the monitors must agree to 1e-9.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, precision_score, recall_score

from monitors.fairness import FairnessConfig, FairnessMonitor
from monitors.quality import QualityConfig, QualityMonitor
from raiwatch.core import metrics
from raiwatch.core.codec import feedback_codec, telemetry_codec
from raiwatch.core.columns import EventColumns

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
W = 60


def _lines(rows: list[dict], start: datetime = T0) -> list[bytes]:
    """Telemetry events from ``{id, age, sex, fav, label, score}`` rows, 0.01 s apart."""
    lines = []
    for i, r in enumerate(rows):
        ev = {
            "schema_version": 1,
            "event_id": r["id"],
            "timestamp": (start + timedelta(seconds=i * 0.01)).isoformat(),
            "model": {"id": r.get("model", "loan"), "version": "v1"},
            "segments": {"age_band": r["age"], "sex": r["sex"]},
            "response": {"prediction": {"label": r["label"], "score": r["score"]}},
            "outcome": {"favorable": r["fav"]},
        }
        lines.append(orjson.dumps(ev))
    return lines


def _events(rows: list[dict], start: datetime = T0) -> list:
    decoded = telemetry_codec.decode_batch(_lines(rows, start))
    assert not decoded.rejected
    return decoded.events


def _labels(rows: list[tuple[str, str | None, bool | None]], at: datetime) -> list:
    lines = [
        orjson.dumps({"schema_version": 1, "event_id": eid, "timestamp": at.isoformat(), "label": label,
                      "favorable": fav})
        for eid, label, fav in rows
    ]  # fmt: skip
    return feedback_codec.decode_batch(lines).events


def _start(t: datetime) -> int:
    return int(t.timestamp()) // W * W


def _population(n: int, seed: int) -> pd.DataFrame:
    """Decisions with group-dependent favourable rates, and true outcomes with errors per group."""
    rng = np.random.default_rng(seed)
    age = rng.choice(["18-34", "35-49", "50-64", "65+"], size=n, p=[0.35, 0.3, 0.22, 0.13])
    sex = rng.choice(["female", "male"], size=n)
    base = {"18-34": 0.7, "35-49": 0.75, "50-64": 0.72, "65+": 0.5}
    fav = rng.random(n) < np.array([base[a] for a in age]) - (sex == "female") * 0.05
    wrong = rng.random(n) < np.where(age == "65+", 0.2, 0.08)
    truth = np.where(wrong, ~fav, fav)
    score = np.clip(np.where(fav, 0.5 + rng.random(n) / 2, rng.random(n) / 2), 0, 1).round(4)
    return pd.DataFrame({
        "id": [f"e{seed}-{i}" for i in range(n)], "age": age, "sex": sex, "fav": fav, "truth": truth,
        "label": np.where(fav, "approve", "deny"), "truth_label": np.where(truth, "approve", "deny"),
        "score": score,
    })  # fmt: skip


def _by(signals, name: str) -> dict[tuple[str, str], object]:
    return {(s.dims["attribute"], s.dims["group"]): s for s in signals if s.signal == name}


def test_group_rates_and_disparities_agree_with_fairlearn():
    df = _population(6000, seed=1)
    mon = FairnessMonitor(W, FairnessConfig(detect_windows=1, horizon_windows=1, min_group=50,
                                            pairs=[("age_band", "sex")]))  # fmt: skip
    events = _events(df.to_dict("records"))
    mon.observe(EventColumns(events, [_start(T0)] * len(events)))
    out = mon.close(_start(T0))
    rates = _by(out, "fairness.favorable_rate")
    disparity = _by(out, "fairness.disparity")
    intersection = df["age"] + "&" + df["sex"]
    for attr, feature in (("age_band", df["age"]), ("sex", df["sex"]), ("age_band&sex", intersection)):
        mf = MetricFrame(
            metrics=selection_rate, y_true=df["truth"], y_pred=df["fav"], sensitive_features=feature
        )
        for group, expected in mf.by_group.items():
            s = rates[attr, group]
            assert s.value == pytest.approx(expected, abs=1e-9)
            assert s.n == int((feature == group).sum())
        ratios = {g: s.value / s.baseline for (a, g), s in disparity.items() if a == attr}
        assert min(ratios.values()) == pytest.approx(
            demographic_parity_ratio(df["truth"], df["fav"], sensitive_features=feature), abs=1e-9
        )
        diffs = [s.baseline - s.value for (a, _), s in disparity.items() if a == attr]
        assert max(diffs) == pytest.approx(
            demographic_parity_difference(df["truth"], df["fav"], sensitive_features=feature), abs=1e-9
        )
    assert disparity["age_band", "65+"].p_value < 1e-6  # 0.5 against 0.75 on hundreds: clear
    (rows,) = [r for t, _, r in mon.drain_rows() if t == "fairness_metrics"]
    row = next(r for r in rows if r[2] == "age_band" and r[3] == "65+")
    assert row[10] == "35-49" and row[11] == int((df["age"] == "35-49").sum())  # the reference and its size


def test_quality_and_error_rates_per_group_agree_with_fairlearn():
    df = _population(5000, seed=2)
    cfg = QualityConfig(detect_windows=5, group_windows=5, min_labels=30)
    mon = QualityMonitor(W, cfg)
    events = _events(df.to_dict("records"))
    w0 = _start(T0)
    mon.observe(EventColumns(events, [w0] * len(events)))
    mon.close(w0)
    mon.observe_feedback(_labels(list(zip(df["id"], df["truth_label"], df["truth"], strict=True)), T0))
    out = mon.close(w0 + W)

    def one(name: str):
        (s,) = [s for s in out if s.signal == name]
        return s

    assert one("quality.accuracy").value == pytest.approx(accuracy_score(df["truth"], df["fav"]), abs=1e-9)
    assert one("quality.precision").value == pytest.approx(precision_score(df["truth"], df["fav"]), abs=1e-9)
    assert one("quality.recall").value == pytest.approx(recall_score(df["truth"], df["fav"]), abs=1e-9)
    assert one("quality.accuracy").n == len(df)
    for name, fn in (
        ("true_positive_rate", true_positive_rate),
        ("false_positive_rate", false_positive_rate),
    ):
        got = _by(out, f"quality.{name}")
        for attr, feature in (("age_band", df["age"]), ("sex", df["sex"])):
            mf = MetricFrame(metrics=fn, y_true=df["truth"], y_pred=df["fav"], sensitive_features=feature)
            best = mf.by_group.max() if name == "true_positive_rate" else mf.by_group.min()
            compared = {g: s for (a, g), s in got.items() if a == attr}
            assert len(compared) == len(mf.by_group) - 1  # every group but the best
            for group, s in compared.items():
                assert s.value == pytest.approx(mf.by_group[group], abs=1e-9)
                assert s.baseline == pytest.approx(best, abs=1e-9)
    tpr = _by(out, "quality.true_positive_rate")
    assert tpr["age_band", "65+"].value < tpr["age_band", "65+"].baseline
    ece = one("quality.calibration_error")
    score = df["score"].astype(np.float32).astype(np.float64)  # the join keeps scores as float32
    conf = np.maximum(score, 1 - score)
    bins = np.minimum((conf * 10).astype(int), 9)
    right = df["fav"] == df["truth"]
    expected = sum(abs(conf[bins == b].sum() - right[bins == b].sum()) for b in range(10)) / len(df)
    assert ece.value == pytest.approx(expected, abs=1e-9) and ece.n == len(df)


def _counts() -> dict[str, float]:
    return {
        r: metrics.LABELS.labels(r)._value.get()
        for r in ("joined", "duplicate", "early", "unmatched", "expired")
    }


def _delta(before: dict[str, float]) -> dict[str, int]:
    return {k: int(v - before[k]) for k, v in _counts().items() if v != before[k]}


def test_the_join_counts_early_late_duplicate_and_missing_labels():
    cfg = QualityConfig(retention_s=10 * W, early_s=3 * W, min_labels=1)
    mon = QualityMonitor(W, cfg)
    rows = [{"id": f"x{i}", "age": "18-34", "sex": "male", "fav": True, "label": "approve", "score": 0.9}
            for i in range(6)]  # fmt: skip
    before = _counts()
    w0 = _start(T0)
    # x0's label comes before its event; "ghost" names no event at all
    mon.observe_feedback(_labels([("x0", "approve", True), ("ghost", "deny", False)], T0))
    mon.close(w0 - W)
    assert _delta(before) == {"early": 2}
    ev = _events(rows)
    mon.observe(EventColumns(ev, [w0] * len(ev)))
    out = mon.close(w0)
    assert _delta(before) == {"early": 2, "joined": 1}  # x0 joined when its event's window closed
    assert [(s.dims, s.value) for s in out if s.signal == "quality.labels"] == [({"result": "joined"}, 1)]
    # x1 labelled twice (the second, disagreeing, label is a duplicate and changes nothing)
    mon.observe_feedback(_labels([("x1", "approve", True), ("x1", "deny", False), ("x2", "deny", False)], T0))
    out = mon.close(w0 + W)
    assert _delta(before) == {"early": 2, "joined": 3, "duplicate": 1}
    (acc,) = [s for s in out if s.signal == "quality.accuracy"]
    assert (acc.n, acc.value) == (3, pytest.approx(2 / 3))  # x0 and x1 right, x2 wrong
    for k in range(2, 5):  # the ghost label waits early_s, then is unmatched
        mon.close(w0 + k * W)
    assert _delta(before)["unmatched"] == 1
    # the unlabelled events expire after retention_s; a label after that is unmatched too
    out = [s for k in range(5, 12) for s in mon.close(w0 + k * W)]
    assert _delta(before)["expired"] == 3  # x3, x4, x5
    assert [s.value for s in out if s.signal == "quality.labels" and s.dims == {"result": "expired"}] == [3]
    mon.observe_feedback(_labels([("x4", "approve", True)], T0))
    for k in range(12, 17):
        mon.close(w0 + k * W)
    assert _delta(before) == {"early": 3, "joined": 3, "duplicate": 1, "unmatched": 2, "expired": 3}
    assert mon._pending.size == 0 and not mon._early  # nothing left behind: the state is bounded


def _traffic(windows: int, seed: int) -> list[tuple[list, list]]:
    """Per window: events, and labels for events of two to four windows before (some twice, some early)."""
    rng = random.Random(seed)
    out, made = [], []
    for k in range(windows):
        df = _population(300, seed=1000 * seed + k)
        events = _events(df.to_dict("records"), T0 + timedelta(seconds=k * W))
        made.append(df)
        labels = []
        for back in (2, 3, 4):
            if k - back >= 0:
                old = made[k - back].sample(frac=0.3, random_state=rng.randrange(1 << 30))
                labels += list(zip(old["id"], old["truth_label"], old["truth"], strict=True))
        if k + 1 < windows:
            labels.append((f"e{1000 * seed + k + 1}-0", "approve", True))  # the next window's: early
        labels += labels[:5]  # redelivered
        out.append((events, _labels(labels, T0 + timedelta(seconds=k * W))))
    return out


def test_join_state_survives_a_restart_in_any_row_order_and_the_index_changes_nothing():
    cfg = QualityConfig(
        retention_s=6 * W, detect_windows=4, group_windows=4, horizon_windows=8, min_labels=20
    )
    traffic = _traffic(14, seed=5)

    def run(mon: QualityMonitor, part: list, k0: int, store: dict | None = None) -> list:
        got = []
        for k, (events, labels) in enumerate(part, start=k0):
            mon.observe_feedback(labels)
            mon.observe(EventColumns(events, [_start(T0) + k * W] * len(events)))
            got += mon.close(_start(T0) + k * W)
            if store is not None:
                store.update(mon.snapshot_dirty())
        return got

    def monitor(seal_every: int) -> QualityMonitor:
        mon = QualityMonitor(W, cfg)
        mon._pending.seal_every = seal_every  # the lookup index, rebuilt every few windows here
        return mon

    expected = run(monitor(10_000), traffic, 0)  # never indexed: one search per chunk
    store: dict[str, bytes] = {}
    got = run(monitor(3), traffic[:9], 0, store)
    second = monitor(2)
    keys = list(store)
    random.Random(3).shuffle(keys)  # ClickHouse returns rows in no particular order
    for key in keys:
        second.restore(key, store[key])
    got += run(second, traffic[9:], 9)
    assert got == expected
    assert any(s.signal == "quality.true_positive_rate" for s in expected)
    ring = {k for k in store if "\x1f" in k}
    assert len(ring) <= 2 * 6 + 8 + 1  # bounded by the ring slots, not by the history


def test_a_restarted_worker_joins_labels_of_events_it_read_before(tmp_path, tmp_path_factory):
    """Through the pipeline and ClickHouse checkpoints: events before a restart, their labels after."""
    import msgspec

    from raiwatch.core.config import load_config
    from raiwatch.wiring import build_pipeline

    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    cfg = load_config(data_dir=str(tmp_path / "data"))
    chdb = tmp_path_factory.getbasetemp() / "chdb"  # one embedded engine path per process
    db = f"fq_{uuid.uuid4().hex[:8]}"
    ch = msgspec.structs.replace(cfg.clickhouse, dsn=f"chdb://{chdb}", database=db)
    cfg = msgspec.structs.replace(cfg, clickhouse=ch)
    df = _population(600, seed=9)
    t0 = now - timedelta(minutes=30)

    def raws(part: pd.DataFrame, at: datetime) -> list[bytes]:
        return _lines(part.to_dict("records"), at)

    def label_raws(part: pd.DataFrame, at: datetime) -> list[bytes]:
        rows = zip(part["id"], part["truth_label"], part["truth"], strict=True)
        return [
            orjson.dumps({"schema_version": 1, "event_id": i, "timestamp": at.isoformat(), "label": lab,
                          "favorable": bool(f)})
            for i, lab, f in rows
        ]  # fmt: skip

    first = build_pipeline(cfg, live=True)
    first.wall = lambda: now.timestamp()
    first.process(raws(df.iloc[:300], t0), [0] * 300)
    first.process(raws(df.iloc[300:], t0 + timedelta(minutes=2)), [0] * 300)  # closes the first window
    fb = first.process_feedback(label_raws(df.iloc[:100], t0 + timedelta(minutes=2)), [1] * 100)
    assert fb.windows[0] == _start(t0 + timedelta(minutes=2))  # held until the label's window closes
    first.process(raws(_population(40, seed=10), t0 + timedelta(minutes=4)), [0] * 40)  # closes the second
    first.flush()

    second = build_pipeline(cfg, live=True)  # a restart: state only from ClickHouse
    second.wall = lambda: now.timestamp()
    second.process(raws(_population(10, seed=11), t0 + timedelta(minutes=5)), [0] * 10)
    second.process_feedback(label_raws(df.iloc[100:400], t0 + timedelta(minutes=5)), [1] * 300)
    # 40 events move the watermark (a partition's position is the median of its last 31 timestamps)
    later = _population(40, seed=12)
    out = second.process(raws(later, t0 + timedelta(minutes=7)), [0] * 40).signals
    second.flush()
    joined = [s for s in out if s.signal == "quality.labels" and s.dims == {"result": "joined"}]
    assert [s.value for s in joined] == [300]  # every label of an event read before the restart
    (acc,) = [s for s in out if s.signal == "quality.accuracy"]
    assert acc.n == 400  # the 100 labels joined before the restart still count: the aggregates came back
    (row,) = second.writer.client.query(
        f"SELECT max(labels) FROM {db}.quality_metrics FINAL WHERE attribute = '' AND model_id = 'loan'"
    ).result_rows
    assert row[0] == 400


def test_one_language_blocked_refused_and_redacted_more_is_named_and_small_groups_are_not():
    rng = np.random.default_rng(4)
    lines = []
    langs = rng.choice(["en", "de", "tr", "ja"], size=8000, p=[0.6, 0.25, 0.14, 0.01])
    for i, lang in enumerate(langs):
        hot = lang in ("tr", "ja")  # ja: extreme too, but about 80 events, under min_group
        action = rng.choice(
            ["allowed", "blocked", "redacted"], p=[0.8, 0.12, 0.08] if hot else [0.96, 0.02, 0.02]
        )
        finish = "refusal" if rng.random() < (0.1 if hot else 0.02) else "stop"
        at = (T0 + timedelta(seconds=i * 0.005)).isoformat()
        lines.append(orjson.dumps({
            "schema_version": 1, "event_id": f"l{i}", "timestamp": at,
            "model": {"id": "chat"}, "segments": {"language": lang},
            "safety": {"violations": [], "action": str(action)}, "response": {"finish_reason": finish},
        }))  # fmt: skip
    events = telemetry_codec.decode_batch(lines).events
    mon = FairnessMonitor(W, FairnessConfig(detect_windows=1))
    mon.observe(EventColumns(events, [_start(T0)] * len(events)))
    out = mon.close(_start(T0))
    for name in ("block_rate", "redaction_rate", "refusal_rate"):
        got = _by(out, f"fairness.{name}")
        assert (
            got["language", "tr"].p_value < 1e-6
            and got["language", "tr"].value > 2 * got["language", "tr"].baseline
        )
        assert got["language", "en"].p_value > 0.5  # the others are not blamed for tr's excess
        assert ("language", "ja") not in got  # too small to compare, however extreme


@pytest.mark.parametrize("runbook", ["fairness.md", "quality.md"])
def test_the_runbook_queries_run_on_the_schema(runbook: str, tmp_path_factory):
    import re
    from pathlib import Path

    from storage.clickhouse import connect, migrate

    text = (Path(__file__).parents[1] / "alert_rules" / "runbooks" / runbook).read_text()
    queries = re.findall(r"```sql\n(.*?)```", text, re.S)
    assert len(queries) >= 2
    db = f"rb_{uuid.uuid4().hex[:8]}"
    client = connect(f"chdb://{tmp_path_factory.getbasetemp() / 'chdb'}", db)
    migrate(client, db)
    for q in queries:
        sql = q.replace("raiwatch.", f"{db}.").replace("'MODEL'", "'loan'").replace("'ATTR'", "'sex'")
        client.query(sql.replace("'GROUP'", "'female'"))  # raises on a column or table that is not there
