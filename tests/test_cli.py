"""The command line as people use it: help, lint, config errors, on-call actions, migrations."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pandas as pd
import pytest

from alert_rules.backtest import Fired, RuleScore
from raiwatch import datadir
from raiwatch.cli import build_parser
from raiwatch.dev import synth
from raiwatch.report import print_backtest, print_frame
from storage.clickhouse import render_migrations
from tests.harness import ROOT, cli, query

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


_BLAS_THREADS = (
    "import sys, threadpoolctl\n"
    "from raiwatch.cli import main\n"
    "main(sys.argv[1:])\n"
    "print({i['num_threads'] for i in threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas'})\n"
)


@pytest.mark.parametrize(("given", "used"), [(None, "{1}"), ("2", "{2}")])
def test_numpy_and_scipy_run_blas_on_one_thread_unless_the_user_says(given: str | None, used: str):
    """An idle OpenBLAS thread spins: the command line keeps numpy's and scipy's on one thread (both
    load with the monitors), and a user's OPENBLAS_NUM_THREADS stands."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    argv = [sys.executable, "-c", _BLAS_THREADS, "rules", "lint"]
    p = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == used


_COLLECTOR = (
    "import gc, sys\n"
    "from raiwatch.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print(code, gc.isenabled(), gc.get_threshold()[0])\n"
)


@pytest.mark.parametrize(
    ("events", "expect"), [("missing.jsonl", "2 True 700"), ("events.jsonl", "0 True 200000")]
)
def test_replay_runs_its_start_up_without_the_collector_and_turns_it_back_on(
    tmp_path: Path, events: str, expect: str
):
    """Start-up's collections find next to nothing, so the replay skips them; the collector is on
    again afterwards, with the pipeline's thresholds once it ran, and as it was when it never did."""
    synth.write(tmp_path / "events.jsonl", synth.default_scenario(50, start=datetime(2026, 3, 2, tzinfo=UTC)))
    argv = [sys.executable, "-c", _COLLECTOR, "replay", str(tmp_path / events), "--out", str(tmp_path / "o")]
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.stdout.splitlines()[-1] == expect, p.stderr


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
    assert "raiwatch.yaml: windows.size_s: bad setting: Expected `int` >= 1" in p.stderr
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
    rows, problem = history.split("history\n")[1].split("\nproblem ")
    kinds = [line.split()[2] for line in rows.splitlines()]
    assert kinds == ["opened", "resolved", "feedback"]  # re-confirmations leave no history rows
    assert problem.startswith(f"{inc['group_id']}: 1 incident(s), paged once")  # a problem of its own
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
        # read-only unless --write, enforced by the engine (readonly = 1 for the whole session) ...
        ("DROP TABLE raiwatch.signals", "Cannot execute query in readonly mode"),
        ("SELECT * FROM file('/etc/hostname', 'LineAsString')", "readonly mode"),
        # ... and what chdb's readonly lets through: INTO OUTFILE, and a write before a last statement
        ("SELECT 1 INTO /* */ OUTFILE '{out}/leak.csv' TRUNCATE FORMAT CSV", "INTO OUTFILE writes a file"),
        ("DROP TABLE raiwatch.signals; SELECT 1", "several statements in one query"),
    ],
)
def test_query_mistakes_get_one_line(replayed_out: Path, sql: str, phrase: str):
    p = cli("query", "--data-dir", str(replayed_out), sql.format(out=replayed_out))
    assert p.returncode == 2 and phrase in p.stderr and "FORMAT Native" not in p.stderr, p.stderr
    _no_traceback(p)
    assert not (replayed_out / "leak.csv").exists()


def test_query_writes_only_with_write_and_nothing_was_dropped(replayed_out: Path):
    sql = "CREATE TABLE raiwatch.scratch (x Int32) ENGINE = Memory"
    assert cli("query", "--data-dir", str(replayed_out), sql).returncode == 2
    p = cli("query", "--data-dir", str(replayed_out), "--write", sql)
    assert p.returncode == 0, p.stderr
    assert query(replayed_out, "SELECT count() > 0 AS some FROM raiwatch.signals") == [{"some": True}]


@pytest.fixture(scope="module")
def replayed_out(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("cli")
    events = work / "events.jsonl"
    synth.write(events, synth.default_scenario(2000, seed=4, rate_per_s=20))
    assert cli("replay", str(events), "--out", str(work / "out"), "--quiet").returncode == 0
    return work / "out"


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["query", "SELECT 1"], "no raiwatch data under {wrong}"),
        (["report", "--out", "{tmp}/report"], "no raiwatch data under {wrong}"),
        (["incidents", "list"], "no incident store at {wrong}/incidents.db"),
        (["incidents", "ack", "inc-x"], "no incident store at {wrong}/incidents.db"),
        (["silences", "list"], "no incident store at {wrong}/incidents.db"),
    ],
)
def test_a_mistyped_data_dir_is_said_and_nothing_is_created(tmp_path: Path, args: list[str], phrase: str):
    wrong = tmp_path / "vra"
    p = cli(*[a.format(tmp=tmp_path) for a in args], "--data-dir", str(wrong))
    assert p.returncode == 2 and phrase.format(wrong=wrong) in p.stderr, p.stderr
    assert not wrong.exists() and not (tmp_path / "report").exists()
    _no_traceback(p)


def test_writers_refuse_a_folder_another_process_holds_before_touching_it(tmp_path: Path):
    data = tmp_path / "data"
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"{}\n")
    nobroker = tmp_path / "nobroker.yaml"
    nobroker.write_text("kafka:\n  bootstrap_servers: 127.0.0.1:1\n")
    with datadir.lock(data, "raiwatch replay"):  # this test's process stands for a running replay
        for args in (
            ["replay", str(events), "--out", str(data), "--quiet"],
            ["run", "--config", str(nobroker), "--data-dir", str(data)],  # a worker: refused before Kafka
            ["db", "migrate", "--data-dir", str(data)],
        ):
            p = cli(*args, timeout=60)
            assert p.returncode == 2, (args, p.stderr)
            assert f"{data} is in use by pid {os.getpid()} (raiwatch replay)" in p.stderr, p.stderr
            _no_traceback(p)
        assert [f.name for f in data.iterdir()] == [datadir.LOCK_FILE]  # nothing made, nothing removed


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


def test_piped_tables_print_whole(capsys, monkeypatch: pytest.MonkeyPatch):
    """Not a terminal: rich would cut every table to 80 columns, and --compare's to nothing legible."""
    monkeypatch.delenv("COLUMNS", raising=False)
    t0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
    fired = [Fired("FavourableOutcomeDisparity", (("model_id", "claims-triage"),), t0, None, "warning")]
    scores = {"FavourableOutcomeDisparity": RuleScore("FavourableOutcomeDisparity", fired, 1, 2)}
    print_backtest([("old", fired, scores), ("new", fired, scores)], t0, t0.replace(hour=10), 3)
    print_frame(pd.DataFrame({"prompt": ["x" * 150], "n": [1]}))
    out = capsys.readouterr().out
    for header in ("old: incidents", "old: opened (UTC)", "new: median span", "new: missed TPs"):
        assert header in out
    assert "FavourableOutcomeDisparity" in out and "x" * 150 in out and "…" not in out
    assert max(map(len, out.splitlines())) > 160


def test_the_readme_says_which_commands_take_config_and_data_dir():
    """The README's sentence about --config and --data-dir names exactly the commands that take them."""
    takes: dict[str, set[str]] = {}

    def walk(parser, words: list[str]) -> None:
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs:
            takes[" ".join(words)] = {o for a in parser._actions for o in a.option_strings}
        for sub in subs:
            for name, child in sub.choices.items():
                walk(child, [*words, name])

    walk(build_parser(), [])
    readme = " ".join((ROOT / "README.md").read_text().split())
    without = re.search(r"is taken by every command that uses settings: all but (.+?)\. `--data-dir", readme)
    with_dir = re.search(r"for the commands that use them: (.+?); `replay` keeps", readme)
    assert without and with_dir

    def named(text: str) -> set[str]:
        out = set()
        for name in re.findall(r"`([^`]+)`", text):
            group = name.removesuffix(" …")
            out |= {c for c in takes if c == group or (name.endswith("…") and c.startswith(group + " "))}
        return out

    assert named(without[1]) == {c for c, opts in takes.items() if "--config" not in opts}
    assert named(with_dir[1]) == {c for c, opts in takes.items() if "--data-dir" in opts} - {"demo"}
