"""`raiwatch rules test`: rule unit tests in the style of `promtool test rules`."""

from __future__ import annotations

from pathlib import Path

from tests.harness import cli

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_rules_pass_their_tests():
    p = cli("rules", "test", str(ROOT / "alert_rules" / "tests"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ok: 16 tests in 5 files" in p.stdout


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
