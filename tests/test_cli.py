"""The command line as people use it: help, lint, config errors, on-call actions, migrations."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from raiwatch.dev import synth
from storage.clickhouse import render_migrations
from tests.harness import cli, query

COMMANDS = [
    ["replay"], ["run"], ["produce"], ["generate"], ["rules", "lint"], ["incidents", "list"],
    ["incidents", "show"], ["incidents", "ack"], ["incidents", "resolve"], ["incidents", "feedback"],
    ["db", "migrate"], ["query"], ["demo"], ["kafka"], ["reference", "build"], ["incidents", "report"],
]  # fmt: skip


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_says_what_it_does(cmd: list[str]):
    p = cli(*cmd, "--help")
    assert p.returncode == 0, p.stderr
    description = p.stdout.split("\n\n")[1]
    assert description[0].isupper() and description.rstrip().endswith("."), description


def test_lint_the_shipped_rules_and_a_bad_file(tmp_path: Path):
    p = cli("rules", "lint")
    assert p.returncode == 0 and p.stdout.startswith("ok: 27 rules"), p.stdout + p.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        signal: safety.violation_rate\n"
        "        group_by: [model_id, category]\n        fire_when: lower > 0.05\n        min_samples: 10\n"
        "        clear_when: value < 0.05\n        severity: critical\n        inhibited_by: [Nope]\n"
        "        annotations: {summary: x, runbook: safety-violation-rate.md}\n"
    )
    p = cli("rules", "lint", str(bad))
    assert p.returncode == 1
    assert f"{bad}:4: inhibited_by names 'Nope', which is no loaded alert" in p.stdout


@pytest.mark.parametrize(
    ("change", "line", "reason"),
    [
        (
            ("signal: safety.violation_rate", "signal: safety.violaton_rate"),
            5,
            "signal 'safety.violaton_rate' is emitted by no monitor: this rule could never fire "
            "(did you mean 'safety.violation_rate'?)",
        ),
        (
            ("fire_when: lower > 0.05", "fire_when: lower > 5"),
            7,
            "fire_when: `lower > 5` compares safety.violation_rate, a ratio in [0, 1], with 5: it is "
            "always or never true (write 0.05 for 5%)",
        ),
        (
            ("group_by: [model_id, category]", "group_by: [model_id, tenant_id]"),
            6,
            "safety.violation_rate comes with dims {category} or {category, tenant_id}; group_by and "
            "match name {tenant_id}",
        ),
    ],
)
def test_lint_knows_the_signals_the_monitors_emit(tmp_path: Path, change, line: int, reason: str):
    good = (
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        signal: safety.violation_rate\n"
        "        group_by: [model_id, category]\n        fire_when: lower > 0.05\n        min_samples: 10\n"
        "        clear_when: value < 0.05\n        severity: critical\n"
        "        annotations: {summary: x, runbook: safety-violation-rate.md}\n"
    )
    path = tmp_path / "rule.yaml"
    path.write_text(good)
    assert cli("rules", "lint", str(path)).returncode == 0
    path.write_text(good.replace(*change))
    p = cli("rules", "lint", str(path))
    assert p.returncode == 1 and f"{path}:{line}: {reason}" in p.stdout, p.stdout


def test_a_bad_config_refuses_to_start_and_says_why(tmp_path: Path):
    cfg = tmp_path / "raiwatch.yaml"
    cfg.write_text("windows:\n  size_s: -5\n")
    p = cli("db", "migrate", "--config", str(cfg), "--data-dir", str(tmp_path))
    assert p.returncode == 2
    assert "raiwatch.yaml: bad setting" in p.stderr and "windows.size_s" in p.stderr
    cfg.write_text("kafka:\n  bootstrap: x\n")
    p = cli("db", "migrate", "--config", str(cfg), "--data-dir", str(tmp_path))
    assert p.returncode == 2 and "bootstrap" in p.stderr


def test_db_migrate_fresh_then_again(tmp_path: Path):
    first = cli("db", "migrate", "--data-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    versions = [v for v, _ in render_migrations("raiwatch")]
    assert f"applied {versions}" in first.stdout
    again = cli("db", "migrate", "--data-dir", str(tmp_path))
    assert again.returncode == 0 and "nothing (up to date)" in again.stdout


def test_on_call_acknowledges_resolves_and_marks_an_incident(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    synth.write(events, synth.default_scenario(24_000, seed=3, rate_per_s=15))
    out = tmp_path / "out"
    assert cli("replay", str(events), "--out", str(out), "--quiet").returncode == 0
    listed = cli("incidents", "list", "--data-dir", str(out), "--json")
    (inc,) = [orjson.loads(x) for x in listed.stdout.splitlines() if x.strip()]
    prefix = inc["incident_id"][:10]
    show = cli("incidents", "show", prefix, "--data-dir", str(out))
    assert show.returncode == 0 and inc["runbook_url"] in show.stdout.replace("\n", "")
    ack = cli("incidents", "ack", prefix, "--by", "alice", "--data-dir", str(out))
    assert ack.returncode == 2 and "resolved" in ack.stderr  # the replay already resolved it
    fb = cli("incidents", "feedback", prefix, "true_positive", "--by", "alice", "--data-dir", str(out))
    assert fb.returncode == 0 and "feedback=true_positive" in fb.stdout, fb.stderr
    history = cli("incidents", "show", prefix, "--data-dir", str(out)).stdout
    kinds = [line.split()[2] for line in history.split("history\n")[1].splitlines()]
    assert kinds == ["opened", "resolved", "feedback"]  # re-confirmations leave no history rows
    missing = cli("incidents", "show", "inc-nope", "--data-dir", str(out))
    assert missing.returncode == 2 and "inc-nope" in missing.stderr
    as_json = cli("incidents", "show", prefix, "--json", "--data-dir", str(out))
    assert orjson.loads(as_json.stdout)["incident_id"] == inc["incident_id"]  # JSON and nothing else
    # the analysts' copy in ClickHouse follows on-call's feedback
    (row,) = query(out, "SELECT status, feedback FROM raiwatch.incidents FINAL")
    assert row == {"status": "resolved", "feedback": "true_positive"}
    assert "ClickHouse copy: updated" in fb.stdout


def _no_traceback(p) -> None:
    assert "Traceback" not in p.stderr + p.stdout and p.stderr.count("\n") == 1, p.stderr


@pytest.mark.parametrize(
    ("sql", "phrase"),
    [
        ("SELEC 1", "ClickHouse refused the query: Syntax error"),
        ("SELECT * FROM raiwatch.nope", "Unknown table expression identifier 'raiwatch.nope'"),
        ("SELECT nocol FROM raiwatch.signals", "Unknown expression identifier `nocol`"),
        ("  ;", "nothing to run: give one SQL query"),
    ],
)
def test_query_mistakes_get_one_line(replayed_out: Path, sql: str, phrase: str):
    p = cli("query", "--data-dir", str(replayed_out), sql)
    assert p.returncode == 2 and phrase in p.stderr and "FORMAT Native" not in p.stderr, p.stderr
    _no_traceback(p)


@pytest.fixture(scope="module")
def replayed_out(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("cli")
    events = work / "events.jsonl"
    synth.write(events, synth.default_scenario(2000, seed=4, rate_per_s=20))
    assert cli("replay", str(events), "--out", str(work / "out"), "--quiet").returncode == 0
    return work / "out"


def test_a_mistyped_data_dir_is_said_and_nothing_is_created(tmp_path: Path):
    wrong = tmp_path / "vra"
    p = cli("query", "--data-dir", str(wrong), "SELECT 1")
    assert p.returncode == 2 and f"no raiwatch data under {wrong}" in p.stderr
    assert not wrong.exists()
    _no_traceback(p)


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["replay", "{tmp}", "--out", "{tmp}/o"], "is a folder; give a JSON-lines file of telemetry events"),
        (["replay", "{tmp}/nope.jsonl"], "nope.jsonl: no such file"),
        (["replay", "{events}", "--out", "{events}"], "is a file; give a folder"),
        (["replay", "{events}", "--feedback", "{tmp}"], "is a folder; give a JSON-lines file of feedback"),
        (["produce", "{tmp}"], "is a folder; give a JSON-lines file"),
        (["produce", "{events}", "--bootstrap", "127.0.0.1:1"], "no Kafka broker answers at 127.0.0.1:1"),
        (
            ["run", "--data-dir", "{tmp}/d", "--config", "{nobroker}"],
            "no Kafka broker answers at 127.0.0.1:1",
        ),
        (["incidents", "ack", "inc-x", "--data-dir", "{tmp}/d"], "no incident has the id or id prefix"),
    ],
)
def test_user_mistakes_get_one_line_and_no_traceback(tmp_path: Path, args: list[str], phrase: str):
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"{}\n")
    nobroker = tmp_path / "nobroker.yaml"
    nobroker.write_text("kafka:\n  bootstrap_servers: 127.0.0.1:1\n")
    argv = [a.format(tmp=tmp_path, events=events, nobroker=nobroker) for a in args]
    p = cli(*argv, timeout=60)
    assert p.returncode == 2 and phrase in p.stderr, p.stderr
    _no_traceback(p)


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path):
    keep = tmp_path / "precious.txt"
    keep.write_text("mine")
    p = cli("demo", "--data-dir", str(tmp_path), "--events", "100")
    assert p.returncode == 2 and "was not made by raiwatch demo" in p.stderr
    assert keep.read_text() == "mine"
    _no_traceback(p)
