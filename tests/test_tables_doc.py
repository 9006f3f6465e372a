"""storage/clickhouse/TABLES.md: current with the migrations, every table in it, and every example
query run on replayed data (with drift, an abuse campaign, a fairness shift, labels and garbage)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from raiwatch.dev import synth
from storage.clickhouse.tables_doc import notes
from tests.harness import ROOT, cli
from tests.test_rollups import run_all

DOC = ROOT / "storage" / "clickhouse" / "TABLES.md"
SETTINGS = "monitors:\n  drift:\n    reference_s: 600\n  abuse:\n    warmup_s: 300\n"


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tables")
    sc = synth.default_scenario(40_000, seed=3, garbage_fraction=0.002, drift=True, abuse=True, fairness=True)
    labelled = [
        msgspec.structs.replace(m, labels=synth.Labels(share=0.5, delay="2m", jitter="1m"))
        if m.id == "claims-triage" else m
        for m in sc.models
    ]  # fmt: skip
    events = tmp / "events.jsonl"
    synth.write(events, msgspec.structs.replace(sc, models=labelled))
    feedback = events.with_name("events.feedback.jsonl")
    assert feedback.exists()
    (tmp / "raiwatch.yaml").write_text(SETTINGS)
    out = tmp / "out"
    p = cli(
        "replay", str(events), "--feedback", str(feedback), "--out", str(out), "--quiet",
        "--config", str(tmp / "raiwatch.yaml"),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return out


def test_the_document_is_current(tmp_path):
    fresh = tmp_path / "TABLES.md"
    p = subprocess.run(
        [sys.executable, "-m", "storage.clickhouse.tables_doc", str(fresh)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert fresh.read_text() == DOC.read_text(), "run: python -m storage.clickhouse.tables_doc"


def test_every_example_runs_on_a_replay_and_finds_rows(replayed):
    described = notes()
    rows = run_all(replayed, {name: n["example"] for name, n in described.items()})
    empty = sorted(name for name, found in rows.items() if not found)
    assert empty == sorted(name for name, n in described.items() if n.get("empty_in_replay"))
