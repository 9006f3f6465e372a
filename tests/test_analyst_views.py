"""The analysts' views and saved queries, on data a replay produced: each number checked against
the raw events or the incidents it summarises, in every output format."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import orjson
import pandas as pd
import pytest
import yaml

from dashboards.generate import render
from raiwatch.dev import synth
from tests.harness import ROOT, cli, incidents_jsonl, query

DASHBOARDS = ROOT / "dashboards"

VIEWS = ("safety_rates_daily", "drift_daily", "fairness_daily", "incidents_weekly")
SETTINGS = "monitors:\n  drift:\n    reference_s: 600\n"


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("views")
    events = tmp / "events.jsonl"
    synth.write(events, synth.default_scenario(40_000, seed=21, drift=True, fairness=True))
    (tmp / "raiwatch.yaml").write_text(SETTINGS)
    out = tmp / "out"
    p = cli("replay", str(events), "--out", str(out), "--quiet", "--config", str(tmp / "raiwatch.yaml"))
    assert p.returncode == 0, p.stderr
    return out


def saved(out: Path, name: str, *args: str) -> list[dict]:
    p = cli("query", "--data-dir", str(out), "--saved", name, "--format", "json", *args)
    assert p.returncode == 0, p.stderr
    return [orjson.loads(line) for line in p.stdout.splitlines() if line.strip()]


def test_every_view_column_is_documented(replayed):
    rows = query(
        replayed,
        "SELECT table, name, comment FROM system.columns WHERE database = 'raiwatch' AND table IN "
        f"({', '.join(repr(v) for v in VIEWS)})",
    )
    assert {r["table"] for r in rows} == set(VIEWS)
    assert [r for r in rows if not r["comment"]] == []


def test_daily_safety_rates_add_up_to_the_stored_events(replayed):
    rows = saved(replayed, "safety-daily", "--param", "model_id=helpdesk-assistant")
    assert rows and {r["model_id"] for r in rows} == {"helpdesk-assistant"}
    direct = query(
        replayed,
        "SELECT toString(toDate(ts)) AS day, c AS category, count() AS k "
        "FROM raiwatch.telemetry_events FINAL ARRAY JOIN violations AS c "
        "WHERE model_id = 'helpdesk-assistant' GROUP BY day, category",
    )
    counted = {(r["day"][:10], r["category"]): round(r["violations"]) for r in rows}
    for r in direct:
        assert counted[(r["day"], r["category"])] == r["k"]
    spike = max(rows, key=lambda r: r["worst_window_rate"])
    assert spike["category"] == "self_harm" and spike["worst_window_rate"] > 0.08  # the demo's spike


def test_daily_fairness_matches_the_events_and_names_the_shifted_group(replayed):
    rows = saved(replayed, "fairness-daily", "--param", "model_id=claims-triage")
    direct = query(
        replayed,
        "SELECT segments['age_band'] AS g, count() AS n, sum(favorable) AS f "
        "FROM raiwatch.telemetry_events FINAL WHERE model_id = 'claims-triage' "
        "AND favorable IS NOT NULL AND mapContains(segments, 'age_band') GROUP BY g",
    )
    by_group = {r["group_name"]: r for r in rows if r["attribute"] == "age_band"}
    assert {g: r["decisions"] for g, r in by_group.items()} == {r["g"]: r["n"] for r in direct}
    best = max(r["f"] / r["n"] for r in direct)
    for r in direct:
        assert by_group[r["g"]]["ratio"] == pytest.approx(r["f"] / r["n"] / best, abs=1e-3)
    assert min(by_group.values(), key=lambda r: r["ratio"])["group_name"] == "65+"  # the demo's shift
    assert by_group["65+"]["min_window_ratio"] < 0.8  # caught by the 10-minute windows


def test_daily_drift_shows_the_drifted_feature_first(replayed):
    rows = saved(replayed, "drift-daily", "--param", "model_id=claims-triage")
    assert rows[0]["feature"] == "claim_amount" and rows[0]["drifted_windows"] > 0
    assert all(r["windows"] > 0 and r["max_psi"] >= r["mean_psi"] for r in rows)


def test_weekly_incidents_count_every_incident_of_the_replay(replayed):
    rows = saved(replayed, "incidents-weekly")
    want = Counter(i["rule"] for i in incidents_jsonl(replayed / "incidents.jsonl"))
    assert {r["rule"]: r["incidents"] for r in rows} == dict(want)
    assert all(r["unrated"] == r["incidents"] and r["precision"] is None for r in rows)


def test_output_formats_carry_the_same_rows(replayed, tmp_path):
    as_json = pd.DataFrame(saved(replayed, "events-hourly"))
    csv = cli("query", "--data-dir", str(replayed), "--saved", "events-hourly", "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    from_csv = pd.read_csv(io.StringIO(csv.stdout))
    assert list(from_csv.columns) == list(as_json.columns)
    assert from_csv["requests"].tolist() == as_json["requests"].tolist()
    out = tmp_path / "hourly.parquet"
    pq = cli(
        "query",
        "--data-dir",
        str(replayed),
        "--saved",
        "events-hourly",
        "--format",
        "parquet",
        "--out",
        str(out),
    )
    assert pq.returncode == 0 and f"rows written to {out}" in pq.stderr, pq.stderr
    assert pd.read_parquet(out)["requests"].tolist() == as_json["requests"].tolist()
    assert (
        sum(as_json["requests"])
        == query(replayed, "SELECT count() AS n FROM raiwatch.telemetry_events FINAL")[0]["n"]
    )
    table = cli("query", "--data-dir", str(replayed), "--saved", "incidents-weekly")
    assert table.returncode == 0 and table.stdout.startswith("┏") and table.stdout.count("\n") > 4


def test_query_mistakes_get_one_line(replayed):
    for args, says in (
        (["--saved", "nope"], "no saved query 'nope'; there are:"),
        (["--saved", "safety-daily", "--param", "nope=1"], "has no parameter 'nope'"),
        (["--saved", "safety-daily", "--param", "model_id"], "write NAME=VALUE"),
        (["--saved", "safety-daily", "--format", "parquet"], "add --out FILE.parquet"),
        (["SELECT nope FROM raiwatch.signals"], "ClickHouse refused the query"),
    ):
        p = cli("query", "--data-dir", str(replayed), *args)
        assert p.returncode == 2 and says in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    listed = cli("query", "--data-dir", str(replayed), "--list")
    assert listed.returncode == 0
    assert {ln.split()[0] for ln in listed.stdout.splitlines()} == {
        "safety-daily", "drift-daily", "fairness-daily", "incidents-weekly", "events-hourly"
    }  # fmt: skip


# -- Grafana dashboards (dashboards/generate.py) ------------------------------------------------

MODELS = "'helpdesk-assistant', 'claims-triage', 'doc-embedder'"
MACROS = (  # the grafana-clickhouse-datasource macros, over all of the replay's time
    (re.compile(r"\$__timeInterval\((\w+)\)"), r"toStartOfInterval(\1, INTERVAL 60 second)"),
    (
        re.compile(r"\$__timeFilter\((\w+)\)"),
        r"(\1 >= toDateTime64('2000-01-01 00:00:00', 3) AND \1 <= now64())",
    ),
    (re.compile(r"\$__fromTime"), "toDateTime('2000-01-01 00:00:00')"),
    (re.compile(r"\$\{model:singlequote\}"), MODELS),
)


def _dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def _clickhouse_queries(board: dict) -> list[str]:
    found = [t["rawSql"] for p in board["panels"] for t in p.get("targets") or () if "rawSql" in t]
    found += [
        a["target"]["rawSql"]
        for a in board.get("annotations", {}).get("list", [])
        if "rawSql" in a.get("target", {})
    ]
    found += [v["query"] for v in board.get("templating", {}).get("list", []) if v.get("type") == "query"]
    return found


def test_generated_dashboards_are_current_and_use_the_provisioned_sources():
    assert {name: p.read_text() for name, p in ((n, DASHBOARDS / n) for n in render())} == render()
    sources = yaml.safe_load((ROOT / "deploy" / "compose" / "grafana" / "datasources.yaml").read_text())
    provisioned = {d["uid"] for d in sources["datasources"]}
    for name, board in _dashboards().items():
        assert board["uid"].startswith("raiwatch-") and board["title"], name
        for panel in board["panels"]:
            if panel.get("type") != "row":
                assert panel["datasource"]["uid"] in provisioned, (name, panel["title"])
                assert panel["targets"], (name, panel["title"])


def test_every_dashboard_query_runs_on_the_schema_and_the_main_panels_show_data(replayed):
    rows_of: dict[str, int] = {}
    for name, board in _dashboards().items():
        for sql in _clickhouse_queries(board):
            for pattern, repl in MACROS:
                sql = pattern.sub(repl, sql)
            assert "$" not in sql, sql  # every macro and variable replaced
            p = cli("query", "--data-dir", str(replayed), "--format", "json", sql)
            assert p.returncode == 0, f"{name}: {sql}\n{p.stderr}"
            rows_of[sql] = len(p.stdout.splitlines())
    shown = [sql for sql, n in rows_of.items() if n]
    for must in (
        "safety.violation_rate",
        "drift.feature",
        "fairness_metrics",
        "raiwatch.incidents FINAL",
        "events_1h",
    ):
        assert any(must in sql for sql in shown), must  # these panels have data on the replay


def test_every_promql_expression_parses_and_names_metrics_the_worker_exports(tmp_path):
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (deploy/system-deps.sh installs prometheus)")
    from prometheus_client import REGISTRY

    import raiwatch.core.metrics  # noqa: F401  registers the worker's metrics

    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
        "info": ("_info",),
    }
    exported = {m.name + end for m in REGISTRY.collect() for end in suffixes.get(m.type, ("",))}
    exprs = [t["expr"] for b in _dashboards().values() for p in b["panels"] for t in p.get("targets") or ()
             if "expr" in t]  # fmt: skip
    assert len(exprs) >= 15
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}  # fmt: skip
    path = tmp_path / "exprs.yaml"
    path.write_text(yaml.safe_dump(rules))
    p = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    for e in exprs:
        for metric in re.findall(r"raiwatch_\w+", e):
            assert metric in exported, metric


# -- raiwatch report ----------------------------------------------------------------------------


def test_the_html_report_has_a_plot_per_family_and_every_incident(replayed, tmp_path):
    import matplotlib.image

    out = tmp_path / "report"
    p = cli("report", "--data-dir", str(replayed), "--out", str(out))
    assert p.returncode == 0 and str(out / "index.html") in p.stdout, p.stderr
    page = (out / "index.html").read_text()
    for name in ("events", "safety", "drift", "fairness"):
        assert f'<img src="{name}.png"' in page
        pixels = matplotlib.image.imread(out / f"{name}.png")
        assert pixels.shape[0] > 300 and pixels.std() > 0.05, name  # drawn, not blank
    incidents = incidents_jsonl(replayed / "incidents.jsonl")
    assert page.count("runbook</a>") == len(incidents) > 0
    assert "threshold (0.05)" in page  # SafetyViolationRateHigh's, drawn on the safety plot
    narrow = cli("report", "--data-dir", str(replayed), "--out", str(tmp_path / "r2"),
                 "--since", incidents[0]["opened_at"], "--until", incidents[0]["opened_at"])  # fmt: skip
    assert narrow.returncode == 2 and "is not before" in narrow.stderr
    on_a_file = cli("report", "--data-dir", str(replayed), "--out", str(out / "index.html"))
    assert on_a_file.returncode == 2 and "is a file" in on_a_file.stderr
