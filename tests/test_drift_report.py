"""`raiwatch incidents report ID`: Evidently's drift report for a drift incident, linked from `show`."""

from __future__ import annotations

from pathlib import Path

import orjson

from raiwatch.dev import synth
from tests.harness import cli


def test_evidently_report_of_a_drift_incident(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    synth.write(events, synth.default_scenario(24_000, seed=5, rate_per_s=15, drift=True))
    config = tmp_path / "raiwatch.yaml"
    config.write_text("monitors:\n  drift:\n    reference_s: 600\n")
    out = tmp_path / "out"
    p = cli("replay", str(events), "--out", str(out), "--config", str(config), "--quiet")
    assert p.returncode == 0, p.stderr
    incidents = [orjson.loads(x) for x in (out / "incidents.jsonl").read_bytes().splitlines()]
    (drift,) = [i for i in incidents if i["labels"].get("feature") == "claim_amount"]
    safety = next(i for i in incidents if i["signal"].startswith("safety."))

    where = ("--data-dir", str(out), "--config", str(config))
    p = cli("incidents", "report", drift["incident_id"], *where)
    assert p.returncode == 0, p.stderr
    assert "columns drifted" in p.stdout and "Evidently: 0 of" not in p.stdout
    html = out / "reports" / f"{drift['incident_id']}.html"
    text = html.read_text()
    assert len(text) > 10_000 and "claim_amount" in text
    p = cli("incidents", "show", drift["incident_id"], *where)
    assert f"drift report: file://{html.resolve()}" in p.stdout

    p = cli("incidents", "report", safety["incident_id"], *where)
    assert p.returncode == 2 and "reports are for drift" in p.stderr and "Traceback" not in p.stderr
