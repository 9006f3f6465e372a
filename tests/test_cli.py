"""The command line as people use it: help, lint, config errors, on-call actions, migrations."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from raiwatch.dev import synth
from tests.harness import cli

COMMANDS = [
    ["replay"], ["run"], ["produce"], ["generate"], ["rules", "lint"], ["incidents", "list"],
    ["incidents", "show"], ["incidents", "ack"], ["incidents", "resolve"], ["incidents", "feedback"],
    ["db", "migrate"], ["query"], ["demo"], ["kafka"],
]  # fmt: skip


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_says_what_it_does(cmd: list[str]):
    p = cli(*cmd, "--help")
    assert p.returncode == 0, p.stderr
    description = p.stdout.split("\n\n")[1]
    assert description[0].isupper() and description.rstrip().endswith("."), description


def test_lint_the_shipped_rules_and_a_bad_file(tmp_path: Path):
    p = cli("rules", "lint")
    assert p.returncode == 0 and p.stdout.startswith("ok: 2 rules"), p.stdout + p.stderr
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
    assert "applied [1, 2]" in first.stdout
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
