"""`raiwatch rules test`: rule unit tests in the style of `promtool test rules`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from alert_rules.ruletest import RuleTestError, run_file
from monitors.registry import catalogue
from tests.harness import cli

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_rules_pass_their_tests():
    p = cli("rules", "test", str(ROOT / "alert_rules" / "tests"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ok: 19 tests in 5 files" in p.stdout


def test_a_wrong_expectation_fails_and_shows_what_fired(tmp_path: Path):
    f = tmp_path / "x.test.yaml"
    f.write_text(
        f"rule_files: [{ROOT / 'alert_rules' / 'safety.yaml'}]\n"
        "tests:\n"
        "  - name: wrong on purpose\n"
        "    input_signals:\n"
        "      - {signal: safety.rate_change, labels: {model_id: bot, category: self_harm},\n"
        "         values: '0x2 2x5'}\n"
        "    expected_incidents:\n"
        "      - eval_time: 2m\n"
        "        firing: [{alert: SafetyRegressionCritical, labels: {model_id: bot, category: self_harm}}]\n"
        "      - eval_time: 6m\n"
        "        firing:\n"
        "          - alert: SafetyRegressionCritical\n"
        "            labels: {model_id: bot, category: self_harm, team: trust-safety}\n"
        "            summary_contains: not in the summary\n"
    )
    p = cli("rules", "test", str(f))
    assert p.returncode == 1
    lines = p.stdout.splitlines()
    assert lines[0] == f"FAILED {f}: test 'wrong on purpose' at 2m:"
    assert lines[1] == "  expected, not firing: SafetyRegressionCritical {category=self_harm, model_id=bot}"
    assert "at 6m:" in lines[2] and "containing 'not in the summary'" in lines[3]
    assert "2 of 1 tests failed" not in p.stderr and "1 of 1 tests failed" in p.stderr


def test_a_broken_test_file_is_one_line_naming_file_and_problem(tmp_path: Path):
    f = tmp_path / "y.test.yaml"
    f.write_text(
        f"rule_files: [{ROOT / 'alert_rules' / 'safety.yaml'}]\n"
        "tests:\n"
        "  - name: t\n"
        "    input_signals: [{signal: safety.rate_change, labels: {model_id: m}, values: '1x3 zz'}]\n"
        "    expected_incidents: [{eval_time: 1m, firing: []}]\n"
    )
    p = cli("rules", "test", str(f))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == (
        f"raiwatch: error: {f}: test 't': input_signals[0].values: cannot read 'zz'"
        " (write A, AxN, A+BxN, A-BxN, _ or _xN)"
    )


def test_a_misspelled_signal_fails_the_test_file_instead_of_passing_it(tmp_path: Path, capsys):
    from raiwatch.cli import main

    f = tmp_path / "typo.test.yaml"
    f.write_text(
        f"rule_files: [{ROOT / 'alert_rules' / 'safety.yaml'}]\n"
        "tests:\n"
        "  - name: quiet\n"
        "    input_signals:\n"
        "      - {signal: safety.rate_chnage, labels: {model_id: m, category: pii}, values: '0x5'}\n"
        "    expected_incidents: [{eval_time: 5m, firing: []}]\n"
    )
    assert main(["rules", "test", str(f)]) == 2  # in process: the CLI's own error path, no subprocess
    assert capsys.readouterr().err == (
        f"raiwatch: error: {f}: test 'quiet': input_signals[0].signal: unknown signal 'safety.rate_chnage'"
        " (no monitor emits it): did you mean 'safety.rate_change'?\n"
    )
    f.write_text(f.read_text().replace("safety.rate_chnage", "drift.feature"))  # emitted, read by none
    with pytest.raises(RuleTestError, match=r"no rule of rule_files reads 'drift\.feature'"):
        run_file(f, catalogue())


def test_a_yaml_bomb_of_a_test_file_is_refused_fast(tmp_path: Path):
    f = tmp_path / "bomb.test.yaml"
    levels = [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    f.write_text("l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n" + "\n".join(levels) + "\ntests: []\n")
    t0 = time.perf_counter()
    with pytest.raises(RuleTestError, match="refused: too large once aliases are expanded"):
        run_file(f)
    assert time.perf_counter() - t0 < 2
