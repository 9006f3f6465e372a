"""`raiwatch reference build` and `monitors.drift.reference_file`: compare from the first event."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

from raiwatch.dev import synth

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "raiwatch.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def scenario(start: datetime, anomalies: list) -> synth.Scenario:
    return synth.Scenario(
        name="ref",
        seed=2 if anomalies else 1,
        start=start,
        duration="40m",
        models=[
            synth.Model(
                id="loans",
                kind="classifier",
                rate=8,
                version="2",
                features={"income": synth.Dist(type="lognormal", mu=10.6, sigma=0.5)},
                more_features=6,
                prediction=synth.Prediction(score=synth.Dist(type="normal", mean=0.6, sd=0.2)),
            )
        ],
        anomalies=anomalies,
    )


def test_a_built_reference_is_used_from_the_first_event(tmp_path: Path):
    validation = tmp_path / "validation.jsonl"
    synth.write(validation, scenario(datetime(2026, 10, 1, tzinfo=UTC), []))
    ref = tmp_path / "refs" / "loans.ref"
    p = cli("reference", "build", str(validation), "--out", str(ref))
    assert p.returncode == 0, p.stderr
    assert "loans" in p.stdout and "2@file-20261001T0000" in p.stdout and ref.stat().st_size > 0

    live = tmp_path / "live.jsonl"
    shift = synth.FeatureDrift(
        model="loans", feature="income", mode="scale", factor=1.5, start="10m", duration="20m"
    )
    synth.write(live, scenario(datetime(2026, 11, 2, 9, 0, tzinfo=UTC), [shift]))
    config = tmp_path / "raiwatch.yaml"
    config.write_text(f"monitors:\n  drift:\n    reference_file: {ref}\n")
    p = cli("replay", str(live), "--out", str(tmp_path / "out"), "--config", str(config), "--quiet")
    assert p.returncode == 0, p.stderr
    incidents = [orjson.loads(x) for x in (tmp_path / "out" / "incidents.jsonl").read_bytes().splitlines()]
    drift = [i for i in incidents if i["rule"] == "FeatureDrift"]
    assert [i["labels"]["feature"] for i in drift] == ["income"]  # within the first hour: no learning needed
    assert drift[0]["labels"]["reference"] == "2@file-20261001T0000"
    assert drift[0]["opened_at"] < "2026-11-02T09:20:00Z"

    # without the file, the first hour is spent learning: the shift falls inside it, nothing fires
    p = cli("replay", str(live), "--out", str(tmp_path / "out2"), "--quiet")
    assert p.returncode == 0 and (tmp_path / "out2" / "incidents.jsonl").read_bytes() == b""


def test_reference_mistakes_get_one_line(tmp_path: Path):
    p = cli("reference", "build", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "r"))
    assert p.returncode == 2 and "nope.jsonl" in p.stderr and "Traceback" not in p.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("{}\n")
    p = cli("reference", "build", str(empty), "--out", str(tmp_path / "r"))
    assert p.returncode == 2 and "200 valid events" in p.stderr
    config = tmp_path / "raiwatch.yaml"
    for target in (tmp_path / "missing.ref", empty):
        config.write_text(f"monitors:\n  drift:\n    reference_file: {target}\n")
        p = cli("replay", str(empty), "--out", str(tmp_path / "o"), "--config", str(config), "--quiet")
        assert p.returncode == 2 and "reference_file" in p.stderr and "Traceback" not in p.stderr
        assert p.stderr.count("\n") == 1
