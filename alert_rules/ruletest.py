"""Rule unit tests, as ``promtool test rules`` does for Prometheus: signal series in, incidents out.

A test file names the rule files it tests and holds tests; each test feeds signal series to the
same ``RuleEngine`` the worker runs and checks which incidents fire at given times::

    rule_files: [../safety.yaml]          # relative to this file
    evaluation_interval: 1m               # one value of every series per window (default 1m)
    tests:
      - name: a self-harm regression pages once, and resolves
        input_signals:
          - signal: safety.rate_change
            labels: {model_id: bot, category: self_harm}   # model_id and the signal's dims
            values: "0x5 1.2x9 0x40"      # as promtool: AxN = N+1 values, A+BxN a ramp, _ none
            baseline: 0.004               # n, baseline, lower, upper, p_value: a number or a series
            n: 1400                       # ... and the evidence bounds a rule reads, e.g. ratio.upper
        expected_incidents:
          - eval_time: 10m                # after the windows ending at most 10 min after the start
            firing:
              - alert: SafetyRegressionCritical
                labels: {model_id: bot, category: self_harm, team: trust-safety}
                summary_contains: "self_harm"
          - eval_time: 50m
            firing: []

The value at index k is the window ending ``(k + 1) * evaluation_interval`` after the start. An
expected incident's labels must equal the incident's (the rule's group_by labels and its static
``labels``): a failure prints the incidents that did fire, labels included, to copy from.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from alert_rules.conditions import BOUNDS, parse_duration
from alert_rules.engine import RuleEngine
from alert_rules.loader import load_rules
from raiwatch.core import yamlfile
from raiwatch.core.catalogue import Catalogue
from raiwatch.core.errors import RuleError
from raiwatch.core.records import Signal

START = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=20_000)  # a fixed, aligned start
FIELDS = ("n", "baseline", "lower", "upper", "p_value", *BOUNDS)


class RuleTestError(ValueError):
    """A test file that cannot be run: the message names the file, the test and the problem."""


@dataclass(frozen=True)
class Failure:
    test: str
    eval_time: str
    missing: list[str]  # expected, not firing
    unexpected: list[str]  # firing, not expected


def expand(series: str | float | int, what: str) -> list[float | None]:
    """Promtool's series notation: ``1 2 3``, ``1x3`` (four 1s), ``1+2x3`` (1 3 5 7), ``_``/``_x3``.

    >>> expand("0x2 1+1x2 _ 7 1e-9x1 5-2x2", "values")
    [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, None, 7.0, 1e-09, 1e-09, 5.0, 3.0, 1.0]
    """
    if isinstance(series, int | float) and not isinstance(series, bool):
        return [float(series)]
    if not isinstance(series, str):
        raise RuleTestError(f'{what}: write a number or a series such as "0x5 1.2x9", not {series!r}')
    out: list[float | None] = []
    for tok in series.split():
        body, _, times = tok.rpartition("x") if "x" in tok else (tok, "", "")
        if times and not times.isdigit():
            raise RuleTestError(f"{what}: cannot read {tok!r} (write A, AxN, A+BxN, A-BxN, _ or _xN)")
        n = int(times) if times else 0
        if body == "_":
            out += [None] * max(n, 1)
            continue
        start, inc = _ramp(body, tok, what)
        out += [start + inc * i for i in range(n + 1)]
    return out


def _ramp(body: str, tok: str, what: str) -> tuple[float, float]:
    """``A`` or ``A+B`` / ``A-B`` (numbers in any float notation, 1e-9 included)."""
    try:
        return float(body), 0.0
    except ValueError:
        pass
    for i in range(1, len(body)):
        if body[i] in "+-" and body[i - 1] not in "eE":
            try:
                return float(body[:i]), float(body[i:])
            except ValueError:
                break
    raise RuleTestError(f"{what}: cannot read {tok!r} (write A, AxN, A+BxN, A-BxN, _ or _xN)")


def _series(
    spec: Any, where: str, interval: timedelta, read: Collection[str], catalogue: Catalogue | None
) -> Iterator[tuple[int, Signal]]:
    """``(index, signal)`` for every value of one input series (``read``: the signals the rules read)."""
    if not isinstance(spec, Mapping) or "signal" not in spec or "values" not in spec:
        raise RuleTestError(f"{where}: an input series needs signal, labels and values")
    unknown = set(spec) - {"signal", "labels", "values", *FIELDS}
    if unknown:
        raise RuleTestError(f"{where}: unknown key(s) {sorted(unknown)} (known: signal, labels, values, "
                            f"{', '.join(FIELDS)})")  # fmt: skip
    name = str(spec["signal"])
    # a misspelled signal feeds no rule, so `firing: []` would pass whatever the rules do
    if catalogue is not None and catalogue.get(name) is None:
        close = catalogue.closest(name)
        hint = f": did you mean {close!r}?" if close else ""
        raise RuleTestError(f"{where}.signal: unknown signal {name!r} (no monitor emits it){hint}")
    if name not in read:
        close = difflib.get_close_matches(name, sorted(read), n=1)
        hint = f": did you mean {close[0]!r}?" if close else f" (they read {', '.join(sorted(read))})"
        raise RuleTestError(f"{where}.signal: no rule of rule_files reads {name!r}{hint}")
    dims = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
    model, version = dims.pop("model_id", ""), dims.pop("model_version", "")
    values = expand(spec["values"], f"{where}.values")
    extra = {f: expand(spec[f], f"{where}.{f}") for f in FIELDS if f in spec}
    for k, v in enumerate(values):
        if v is None:
            continue
        fields = {f: (s[k] if k < len(s) else s[-1]) for f, s in extra.items()}
        n = fields.pop("n", None)
        for bound in [f for f in fields if f in BOUNDS]:  # e.g. ratio.upper -> the signal's evidence
            of, side = bound.split(".")
            if fields.get("evidence_of", of) != of:
                raise RuleTestError(f"{where}: a series carries the evidence of one quantity, not {of} too")
            fields["evidence_of"] = of
            fields[f"evidence_{side}"] = fields.pop(bound)
        yield k, Signal(
            ts=START + (k + 1) * interval, window=int(interval.total_seconds()), signal=name,
            model_id=model, model_version=version, dims=dims, value=v,
            n=1_000_000 if n is None else int(n), **fields,
        )  # fmt: skip


def run_file(path: Path, catalogue: Catalogue | None = None) -> tuple[int, list[Failure]]:
    """Run every test of a test file: ``(tests run, failures)``. Raises ``RuleTestError``."""
    try:
        doc = yamlfile.load_file(path)  # bounded: a YAML bomb is refused, not expanded
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        why = yamlfile.describe(e) if isinstance(e, yaml.YAMLError) else str(e).splitlines()[0]
        raise RuleTestError(f"{path}: cannot read it: {why}") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("tests"), list):
        raise RuleTestError(f"{path}: a test file needs rule_files and a list of tests")
    files = [(path.parent / f) for f in doc.get("rule_files") or []]
    if not files:
        raise RuleTestError(f"{path}: rule_files is empty")
    try:
        rules = load_rules(files, catalogue)  # together: a rule may be held back by another file's
        interval = parse_duration(doc.get("evaluation_interval", "1m"))
    except RuleError as e:
        raise RuleTestError(f"{path}: the rules do not load: {e}") from None
    except ValueError as e:
        raise RuleTestError(f"{path}: evaluation_interval: {e}") from None
    failures: list[Failure] = []
    for i, test in enumerate(doc["tests"]):
        name = str(test.get("name") or f"tests[{i}]") if isinstance(test, Mapping) else f"tests[{i}]"
        failures += _run_test(path, name, test, rules, interval, catalogue)
    return len(doc["tests"]), failures


def _run_test(
    path: Path, name: str, test: Any, rules: list, interval: timedelta, catalogue: Catalogue | None
) -> list[Failure]:
    where = f"{path}: test {name!r}"
    if not isinstance(test, Mapping):
        raise RuleTestError(f"{where}: a test is a mapping with input_signals and expected_incidents")
    steps: dict[int, list[Signal]] = {}
    read = {r.signal for r in rules}
    for j, spec in enumerate(test.get("input_signals") or []):
        for k, signal in _series(spec, f"{where}: input_signals[{j}]", interval, read, catalogue):
            steps.setdefault(k, []).append(signal)
    expected = []
    for j, exp in enumerate(test.get("expected_incidents") or []):
        if not isinstance(exp, Mapping) or "eval_time" not in exp:
            raise RuleTestError(f"{where}: expected_incidents[{j}] needs eval_time and firing")
        try:
            at = parse_duration(str(exp["eval_time"]))
        except ValueError as e:
            raise RuleTestError(f"{where}: expected_incidents[{j}].eval_time: {e}") from None
        expected.append((at, str(exp["eval_time"]), exp.get("firing") or []))
    if not expected:
        raise RuleTestError(f"{where}: no expected_incidents")
    engine = RuleEngine(rules, "runbooks/")
    out: list[Failure] = []
    done = -1
    last = max(steps, default=-1)
    for at, label, firing in sorted(expected, key=lambda x: x[0]):
        upto = int(at / interval) - 1  # the windows ending at or before the eval time
        for k in range(done + 1, min(upto, last) + 1):
            engine.evaluate(steps.get(k, []))
        done = max(done, min(upto, last))
        got = {(i.rule, tuple(sorted(i.labels.items()))): i for i in engine.firing()}
        want: dict[tuple, str] = {}
        for e in firing:
            key = (
                str(e.get("alert")),
                tuple(sorted((str(k), str(v)) for k, v in (e.get("labels") or {}).items())),
            )
            want[key] = str(e.get("summary_contains") or "")
        missing = [_show(k) for k in want if k not in got]
        missing += [
            f"{_show(k)} with a summary containing {s!r} (summary: {got[k].summary!r})"
            for k, s in want.items()
            if k in got and s and s not in got[k].summary
        ]
        unexpected = [_show(k) for k in got if k not in want]
        if missing or unexpected:
            out.append(Failure(name, label, missing, unexpected))
    return out


def _show(key: tuple) -> str:
    rule, labels = key
    return f"{rule} {{{', '.join(f'{k}={v}' for k, v in labels)}}}"
