"""Rule loader and linter: the shipped rules are clean; each bad file is named at its FILE:LINE."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from alert_rules.loader import RULES_DIR, lint, load_rules
from raiwatch.core.errors import RuleError
from raiwatch.core.records import SEVERITIES

GOOD = """\
groups:
  - name: g
    rules:
      - alert: A
        signal: safety.violation_rate
        group_by: [model_id, category]
        fire_when: lower > 0.05
        min_samples: 200
        for: 3m
        clear_when: value < 0.05
        keep_firing_for: 2m
        severity: critical
        annotations:
          summary: "{{ model_id }}: {{ category }} {{ value | pct }} above {{ threshold | pct }}"
          runbook: rb.md
"""


def _write(folder: Path, name: str, text: str) -> Path:
    (folder / "runbooks").mkdir(exist_ok=True)
    (folder / "runbooks" / "rb.md").write_text("# rb\n")
    path = folder / name
    path.write_text(text)
    return path


def test_shipped_rules_lint_clean_and_load() -> None:
    assert lint() == []
    rules = {r.name: r for r in load_rules()}
    assert set(rules) >= {"SafetyViolationRateHigh", "TenantSafetyViolationRateHigh"}
    main, tenant = rules["SafetyViolationRateHigh"], rules["TenantSafetyViolationRateHigh"]
    assert (main.severity, main.min_samples, main.group_by) == ("critical", 200, ("model_id", "category"))
    assert (tenant.severity, tenant.min_samples) == ("high", 100)
    assert tenant.group_by == ("model_id", "category", "tenant_id")
    assert main.runbook_url("https://rb.example/x/") == "https://rb.example/x/safety-violation-rate.md"


def test_schema_severities_match_records() -> None:
    schema = json.loads((RULES_DIR / "rule.schema.json").read_text())
    assert tuple(schema["$defs"]["rule"]["properties"]["severity"]["enum"]) == SEVERITIES


def test_good_file_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, "good.yaml", GOOD)
    assert lint(tmp_path) == []
    [rule] = load_rules(path)
    assert rule.source == f"{path}:4"
    assert rule.fire_when.text == "lower > 0.05"


BAD = [  # (case, old text, new text, line, phrase)
    ("syntax", "[model_id, category]", "[model_id, category", 7, "YAML syntax error: expected ',' or ']'"),
    ("unknown key", "for: 3m", "fro: 3m", 9, "unknown key 'fro' (did you mean 'for'?)"),
    ("bad duration", "for: 3m", "for: 3 minutes", 9, "for: bad duration '3 minutes'"),
    ("bare number duration", "keep_firing_for: 2m", "keep_firing_for: 120", 11, "bad duration 120"),
    ("bad condition", "lower > 0.05", "lower > 0.05 and n >> 3", 7, "cannot parse clause 'n >> 3'"),
    ("unknown field", "value < 0.05", "rate < 0.05", 10, "cannot parse clause 'rate < 0.05'"),
    ("missing runbook", "runbook: rb.md", "runbook: nope.md", 15, "runbook 'nope.md' not found"),
    ("template syntax", "{{ model_id }}:", "{{ model_id }:", 14, "summary: template syntax error"),
    ("template undefined", "{{ category }}", "{{ categroy }}", 14, "'categroy' is undefined"),
    ("template filter", "value | pct", "value | percent", 14, "No filter named 'percent'"),
    ("missing clear_when", "        clear_when: value < 0.05\n", "", 4, "missing key 'clear_when' (a rule"),
    ("missing min_samples", "        min_samples: 200\n", "", 4, "missing key 'min_samples'"),
    ("min_samples 0", "min_samples: 200", "min_samples: 0", 8, "0 is less than the minimum of 1"),
    ("severity", "severity: critical", "severity: urgent", 12, "unknown severity 'urgent' (one of: critical"),
    ("family", "signal: safety.", "signal: safty.", 5, "is not in a known family"),
    ("group_by empty", "[model_id, category]", "[]", 6, "group_by: [] should be non-empty"),
    ("duplicate key", "for: 3m\n", "for: 3m\n        for: 5m\n", 10, "duplicate key 'for'"),
    ("two runbooks", "runbook: rb.md", "runbook: rb.md\n          runbook_url: https://x/y", 13, "not both"),
    ("label clash", "[model_id, category]", "[model_id, value]", 6, "label 'value' in group_by clashes"),
    (
        "static label",
        "severity: critical",
        "severity: critical\n        labels: {model_id: x}",
        13,
        "static label 'model_id' would overwrite a scope label",
    ),
    (
        "label type",
        "severity: critical",
        "severity: critical\n        labels: {team: 7}",
        13,
        "team: 7 is not of type 'string'",
    ),
    ("empty file", GOOD, "", 1, "a rule file is a mapping with a 'groups' list"),
]


@pytest.mark.parametrize(("old", "new", "line", "phrase"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_file_names_file_line_and_reason(
    tmp_path: Path, old: str, new: str, line: int, phrase: str
) -> None:
    assert old in GOOD
    path = _write(tmp_path, "bad.yaml", GOOD.replace(old, new, 1))
    problems = lint(path)
    assert any(p.startswith(f"{path}:{line}: ") and phrase in p for p in problems), problems
    with pytest.raises(RuleError) as e:
        load_rules(tmp_path)
    assert e.value.problems == problems


def test_duplicate_alert_names_across_files(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.yaml", GOOD)
    b = _write(tmp_path, "b.yaml", GOOD)
    assert lint(tmp_path) == [f"{b}:4: duplicate alert name 'A' (first at {a}:4)"]


def test_every_problem_is_reported_in_line_order(tmp_path: Path) -> None:
    bad = GOOD
    for old, new in [
        ("for: 3m", "for: soon"),
        ("severity: critical", "severity: urgent"),
        ("{{ model_id }}:", "{{ model_id }:"),
        ("runbook: rb.md", "runbook: nope.md"),
    ]:
        bad = bad.replace(old, new)
    path = _write(tmp_path, "bad.yaml", bad)
    assert [p.split(": ", 1)[0] for p in lint(path)] == [f"{path}:{n}" for n in (9, 12, 14, 15)]


def test_missing_paths_and_empty_folders(tmp_path: Path) -> None:
    assert lint(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: no such file or folder"]
    assert lint(tmp_path) == [f"{tmp_path}: no *.yaml rule files"]


def test_absolute_runbook_url(tmp_path: Path) -> None:
    path = _write(tmp_path, "u.yaml", GOOD.replace("runbook: rb.md", "runbook_url: https://wiki.example/rb"))
    [rule] = load_rules(path)
    assert rule.runbook_url("https://ignored.example/") == "https://wiki.example/rb"


def test_inhibition_in_a_circle_is_a_lint_problem(tmp_path: Path) -> None:
    two = GOOD + GOOD.split("    rules:\n")[1].replace("alert: A", "alert: B")
    two = two.replace("severity: critical\n", "severity: critical\n        inhibited_by: [B]\n", 1)
    two = two.replace("alert: B\n", "alert: B\n        inhibited_by: [A]\n", 1)
    path = _write(tmp_path, "loop.yaml", two)
    assert [p for p in lint(path) if "circle" in p] == [
        f"{path}:4: inhibited_by goes round in a circle (A -> B -> A): each would wait for the other"
    ]


def _bomb(levels: int = 9) -> str:
    """Billion laughs: 10 aliases of 10 aliases of ... (10**levels strings once expanded)."""
    lines = ["lol: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n" + GOOD


def test_a_yaml_bomb_is_refused_fast_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "bomb.yaml", _bomb())
    t0 = time.perf_counter()
    assert lint(path) == [
        f"{path}:6: YAML refused: too large once aliases are expanded: more than 200,000 nodes"
    ]
    assert time.perf_counter() - t0 < 2  # refused while composing, not after expanding 10**9 nodes
    deep = _write(tmp_path, "deep.yaml", "x: " + "[" * 5000 + "]" * 5000 + "\n")
    assert lint(deep) == [f"{deep}:1: YAML refused: nested more than 100 levels deep"]
    loop = _write(tmp_path, "loop.yaml", "x: &a [1, *a]\n")
    assert lint(loop) == [f"{loop}:1: YAML refused: alias *a inside its own anchor (a recursive document)"]


def test_a_backtracking_pattern_matches_in_linear_time() -> None:
    """The tester's rule: `~(a+)+b` against 29 `a`s took minutes with a backtracking engine."""
    rule = next(r for r in load_rules() if r.name == "TenantSafetyViolationRateHigh")
    slow = replace(rule, match={"tenant_id": "~(a+)+b"})
    t0 = time.perf_counter()
    assert not any(slow.matches({"tenant_id": "a" * 29, "category": "x"}) for _ in range(18))
    assert slow.matches({"tenant_id": "a" * 29 + "b"})
    assert time.perf_counter() - t0 < 0.5


def test_every_runbook_anchor_of_the_shipped_rules_is_a_heading() -> None:
    from alert_rules.loader import heading_slugs

    anchored = [r for r in load_rules() if "#" in r.runbook]
    assert len(anchored) >= 14
    for r in anchored:
        name, anchor = r.runbook.split("#")
        assert anchor in heading_slugs((RULES_DIR / "runbooks" / name).read_text()), r.name


def test_an_anchor_that_names_no_heading_is_a_lint_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.yaml", GOOD.replace("runbook: rb.md", "runbook: rb.md#frist-checks"))
    (tmp_path / "runbooks" / "rb.md").write_text("# rb\n## First checks\n")
    assert lint(path) == [
        f"{path}:15: runbook 'rb.md' has no heading #frist-checks (did you mean #first-checks?)"
    ]


def test_lint_of_a_path_that_is_not_there_is_a_users_mistake(tmp_path: Path, capsys) -> None:
    from raiwatch.cli import main

    assert main(["rules", "lint", str(tmp_path / "nope.yaml")]) == 2  # 1 stays for "problems found"
    assert capsys.readouterr().err == f"raiwatch: error: {tmp_path / 'nope.yaml'}: no such file or folder\n"
    bomb = _write(tmp_path, "bomb.yaml", _bomb())
    assert main(["rules", "lint", str(bomb)]) == 1
    assert "YAML refused: too large once aliases are expanded" in capsys.readouterr().out
