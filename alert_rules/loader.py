"""Load and lint alert rule files: YAML, then rule.schema.json, then semantic checks, then ``Rule``.

Every problem reads ``FILE:LINE: reason``, the line taken from the composed YAML node of the
offending key or value. ``load_rules`` raises ``RuleError`` with all of them; ``lint`` returns them.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment
from jsonschema import Draft202012Validator, ValidationError

from alert_rules.conditions import (
    BOUNDS,
    ESTIMATES,
    FIELDS,
    Condition,
    Fields,
    parse_condition,
    parse_duration,
)
from raiwatch.core import yamlfile
from raiwatch.core.catalogue import BOUNDED, Catalogue, SignalSpec
from raiwatch.core.errors import RuleError
from raiwatch.core.matchers import Matcher, MatcherError, accept_all, matchers
from raiwatch.core.records import SIGNAL_FAMILIES, Severity, Signal

RULES_DIR = Path(__file__).resolve().parent
SCHEMA = json.loads((RULES_DIR / "rule.schema.json").read_text(encoding="utf-8"))
_VALIDATOR = Draft202012Validator(SCHEMA)
SCOPE_LABELS = frozenset({"model_id", "model_version"})  # signal attributes, not dims
TEMPLATE_VARS = frozenset(
    {*(f for f in FIELDS if f not in BOUNDS), "evidence_lower", "evidence_upper"}
    | {"labels", "threshold", "window", "for", "rule", "signal", "severity"}
)
_WHY = {
    "clear_when": " (a rule must say when its incident resolves: hysteresis)",
    "min_samples": " (a rule must not fire on a sample too small to mean anything)",
}
_SAMPLE_FIELDS = {
    "value": 0.07,
    "lower": 0.06,
    "upper": 0.08,
    "baseline": 0.03,
    "p_value": 0.001,
    "n": 500,
    "delta": 0.04,
    "ratio": 2.33,
    "evidence_lower": 0.05,
    "evidence_upper": 0.09,
}


def _pct(x: float | None) -> str:
    """``0.0734`` -> ``7.3%``."""
    return "n/a" if x is None else f"{x * 100:.1f}%"


def _num(x: float | None) -> str:
    """Three significant digits: ``0.012345`` -> ``0.0123``, ``12345`` -> ``12,300``."""
    if x is None:
        return "n/a"
    x = float(f"{x:.3g}")
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


TEMPLATES = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
TEMPLATES.filters.update(pct=_pct, num=_num)


@lru_cache(maxsize=1024)
def summary_template(source: str) -> jinja2.Template:
    """A summary compiled once: the lint compiles it to check it, the rule then takes the same one."""
    return TEMPLATES.from_string(source)


@dataclass(frozen=True, eq=False)
class Rule:
    """One validated alert rule. ``runbook`` is a file in runbooks/ or an absolute URL."""

    name: str
    signal: str
    group_by: tuple[str, ...]
    fire_when: Condition
    clear_when: Condition
    min_samples: int
    severity: Severity
    summary: str
    runbook: str
    match: Mapping[str, str | Sequence[str]] = field(
        default_factory=dict
    )  # dim -> value(s); tuples after init
    for_: timedelta = timedelta(0)
    keep_firing_for: timedelta = timedelta(0)
    reopen_within: timedelta = timedelta(0)  # flap control: re-firing this soon reopens the incident
    labels: Mapping[str, str] = field(default_factory=dict)  # static labels added to incidents
    inhibited_by: tuple[str, ...] = ()  # alerts that, firing on the shared labels, hold this one back
    for_text: str = "0s"  # ``for`` as written, for summaries
    source: str = ""  # FILE:LINE of ``alert:``
    template: jinja2.Template = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "template", summary_template(self.summary))
        match = {k: (v,) if isinstance(v, str) else tuple(v) for k, v in self.match.items()}
        object.__setattr__(self, "match", match)
        object.__setattr__(self, "_matchers", matchers(match))
        object.__setattr__(self, "_dims", frozenset(self.group_by).union(match) - SCOPE_LABELS)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every ``match`` matcher accepts the value of its label in ``labels``."""
        return accept_all(self._matchers, labels)  # type: ignore[attr-defined]

    @property
    def dims(self) -> frozenset[str]:
        """The dim keys a signal must carry, exactly, to be in this rule's scope."""
        return self._dims  # type: ignore[attr-defined]

    def sees(self, s: Signal, labels: Mapping[str, str]) -> bool:
        """Whether signal ``s`` (``labels``: its ``s.labels()``) is in scope: this rule's signal,
        exactly its dims, accepted by ``match``, and carrying every ``group_by`` label."""
        return (
            s.signal == self.signal
            and s.dims.keys() == self._dims  # type: ignore[attr-defined]
            and self.matches(labels)
            and all(k in labels for k in self.group_by)
        )

    def runbook_url(self, base_url: str) -> str:
        return self.runbook if "://" in self.runbook else f"{base_url.rstrip('/')}/{self.runbook}"

    def summary_vars(
        self, labels: Mapping[str, str], fields: Fields, threshold: float | None, window: int
    ) -> dict[str, Any]:
        """The summary template's variables: each label, ``labels``, the signal's fields and the rule's."""
        bounds = [(k, v) for k, v in fields.items() if k in BOUNDS and v is not None]
        return {
            **labels,
            **{k: v for k, v in fields.items() if k not in BOUNDS},
            "evidence_lower": next((v for k, v in bounds if k.endswith(".lower")), None),
            "evidence_upper": next((v for k, v in bounds if k.endswith(".upper")), None),
            "labels": dict(labels),
            "threshold": threshold,
            "window": window,
            "for": self.for_text,
            "rule": self.name,
            "signal": self.signal,
            "severity": self.severity,
        }

    def render_summary(
        self, labels: Mapping[str, str], fields: Fields, threshold: float | None, window: int
    ) -> str:
        """The rendered summary; a plain sentence if the template fails on these values."""
        try:
            return self.template.render(self.summary_vars(labels, fields, threshold, window))
        except Exception as e:  # linted templates can still meet values they cannot format
            return (
                f"{self.name}: {self.signal} {dict(labels)} value {fields.get('value')}, threshold "
                f"{threshold} (summary template failed: {e})"
            )


def load_rules(
    path_or_dir: Path | str | Iterable[Path | str] | None = None, catalogue: Catalogue | None = None
) -> list[Rule]:
    """Rules from a file or a folder's ``*.yaml``, or several together (None: the shipped ones);
    ``inhibited_by`` may name a rule of any of them.

    With the ``catalogue`` of signals the monitors emit, a rule must name one of them, with dims
    it carries and thresholds inside its range. Raises ``RuleError`` listing every problem, so an
    engine never starts on rules that do not lint.
    """
    rules, problems = _check(path_or_dir, catalogue)
    if problems:
        raise RuleError(problems)
    return rules


def lint(
    paths: Path | str | Iterable[Path | str] | None = None, catalogue: Catalogue | None = None
) -> list[str]:
    """Every problem in these files or folders as ``FILE:LINE: reason``; empty when they are good."""
    return _check(paths, catalogue)[1]


def _check(
    paths: Path | str | Iterable[Path | str] | None, catalogue: Catalogue | None
) -> tuple[list[Rule], list[str]]:
    if paths is None or isinstance(paths, str | Path):
        paths = [RULES_DIR if paths is None else paths]
    files: list[Path] = []
    problems: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.yaml"))
            files += found
            if not found:
                problems.append(f"{p}: no *.yaml rule files")
        elif p.is_file():
            files.append(p)
        else:
            problems.append(f"{p}: no such file or folder")
    rules: list[Rule] = []
    first: dict[str, str] = {}
    for f in files:
        file_rules, file_problems = _check_file(f, catalogue)
        problems += file_problems
        for r in file_rules:
            if r.name in first:
                problems.append(f"{r.source}: duplicate alert name {r.name!r} (first at {first[r.name]})")
            else:
                first[r.name] = r.source
                rules.append(r)
    for r in rules:
        for name in r.inhibited_by:
            if name not in first:
                problems.append(f"{r.source}: inhibited_by names {name!r}, which is no loaded alert")
            elif name == r.name:
                problems.append(f"{r.source}: a rule cannot inhibit itself")
    try:
        inhibition_levels(rules)
    except ValueError as e:
        problems.append(str(e))
    if catalogue is not None:
        problems += evidence_check(rules, catalogue)[0]
    return rules, problems


def inhibition_levels(rules: Sequence[Rule]) -> dict[str, int]:
    """Each rule's level: 0 when nothing loaded inhibits it, else one more than its highest
    inhibitor's. Evaluating a window level by level settles every inhibitor before the rules it
    holds back. ``ValueError`` (naming the rules) when ``inhibited_by`` goes round in a circle.

    >>> from alert_rules.conditions import parse_condition as c
    >>> def r(name, *by):
    ...     return Rule(name, "safety.x", (), c("value > 1"), c("value < 1"), 1, "info", "", "rb.md",
    ...                 inhibited_by=by)
    >>> inhibition_levels([r("Tenant", "Model"), r("Model", "Wide"), r("Wide"), r("Other", "Gone")])
    {'Wide': 0, 'Model': 1, 'Tenant': 2, 'Other': 0}
    """
    by_name = {r.name: r for r in rules}
    levels: dict[str, int] = {}

    def level(name: str, path: tuple[str, ...]) -> int:
        if name in path:
            loop = " -> ".join((*path[path.index(name) :], name))
            raise ValueError(
                f"{by_name[name].source}: inhibited_by goes round in a circle ({loop}): "
                "each would wait for the other"
            )
        if name not in levels:
            above = [
                level(n, (*path, name)) for n in by_name[name].inhibited_by if n in by_name and n != name
            ]
            levels[name] = 1 + max(above) if above else 0
        return levels[name]

    for r in rules:
        level(r.name, ())
    return levels


def _check_file(f: Path, catalogue: Catalogue | None) -> tuple[list[Rule], list[str]]:
    try:
        root = yamlfile.compose(yamlfile.read(f))
        data = yamlfile.construct(root)
    except (yaml.YAMLError, UnicodeDecodeError) as e:  # a bomb or a runaway file is refused unwalked
        return [], [yamlfile.file_problem(f, e)]

    probs = [(line, f"duplicate key {key!r}") for line, key in _duplicate_keys(root)]
    broken = set()  # rules with schema errors are checked but not built
    for err in _VALIDATOR.iter_errors(data):
        probs += [(_line(root, path), msg) for path, msg in _explain(err)]
        broken.add(tuple(err.absolute_path)[:4])

    rules = []
    for at, r in _rule_items(data):
        if rule := _check_rule(f, r, root, at, probs, tuple(at) not in broken, catalogue):
            rules.append(rule)
    probs.sort(key=lambda p: p[0])
    return rules, [f"{f}:{line}: {msg}" for line, msg in dict.fromkeys(probs)]


def _rule_items(data: Any) -> Iterator[tuple[list, dict]]:
    """(path, rule) of every rule mapping in a parsed file, however broken the file around it."""
    groups = data.get("groups") if isinstance(data, dict) else None
    for gi, group in enumerate(groups if isinstance(groups, list) else []):
        rules = group.get("rules") if isinstance(group, dict) else None
        for ri, r in enumerate(rules if isinstance(rules, list) else []):
            if isinstance(r, dict):
                yield ["groups", gi, "rules", ri], r


def _check_rule(
    f: Path,
    r: dict,
    root: yaml.Node,
    at: list,
    probs: list[tuple[int, str]],
    schema_ok: bool,
    catalogue: Catalogue | None,
) -> Rule | None:
    """Semantic checks of the rule at path ``at`` (of each field whose type is right); the ``Rule``
    if neither they nor the schema found a problem."""
    before = len(probs)

    def line(*keys: str) -> int:
        return _line(root, [*at, *keys])

    def bad(msg: str, *keys: str) -> None:
        probs.append((line(*keys), msg))

    signal, ann = r.get("signal"), r.get("annotations")
    if isinstance(signal, str) and signal.split(".", 1)[0] not in SIGNAL_FAMILIES:
        bad(f"signal {signal!r} is not in a known family ({', '.join(SIGNAL_FAMILIES)})", "signal")
    durations, conditions = {}, {}
    for key in ("for", "keep_firing_for", "reopen_within"):
        if isinstance(r.get(key, 0), str | int):
            try:
                durations[key] = parse_duration(r.get(key, 0))
            except ValueError as e:
                bad(f"{key}: {e}", key)
    for key in ("fire_when", "clear_when"):
        if isinstance(r.get(key), str):
            try:
                conditions[key] = parse_condition(r[key])
            except ValueError as e:
                bad(f"{key}: {e}", key)
    if isinstance(ann, dict):
        if ("runbook" in ann) == ("runbook_url" in ann):
            bad(
                "annotations need one of runbook (a file in runbooks/) or runbook_url (a URL), not both",
                "annotations",
            )
        elif isinstance(ann.get("runbook"), str):
            name, _, anchor = ann["runbook"].partition("#")
            found = [
                d / "runbooks" / name for d in (f.parent, RULES_DIR) if (d / "runbooks" / name).is_file()
            ]
            if not found:
                bad(f"runbook {name!r} not found in runbooks/", "annotations", "runbook")
            elif anchor and anchor not in (slugs := heading_slugs(found[0].read_text(encoding="utf-8"))):
                close = difflib.get_close_matches(anchor, slugs, n=1)
                hint = f"did you mean #{close[0]}?" if close else f"its headings: #{', #'.join(slugs)}"
                bad(f"runbook {name!r} has no heading #{anchor} ({hint})", "annotations", "runbook")
        if isinstance(ann.get("summary"), str):
            try:
                summary_template(ann["summary"])
            except jinja2.TemplateSyntaxError as e:
                bad(f"summary: template syntax error: {e.message}", "annotations", "summary")
    names = {k: [n for n in r.get(k) or () if isinstance(n, str)] for k in ("group_by", "match", "labels")}
    for key, found in names.items():
        for name in sorted(TEMPLATE_VARS.intersection(found)):
            bad(f"label {name!r} in {key} clashes with the summary variable {name!r}", key)
    for name in sorted(set(names["labels"]) & (SCOPE_LABELS | {*names["group_by"], *names["match"]})):
        bad(f"static label {name!r} would overwrite a scope label", "labels", name)
    if catalogue is not None and isinstance(signal, str):
        spec = catalogue.get(signal)
        if spec is None:
            close = catalogue.closest(signal)
            hint = f"did you mean {close!r}?" if close else f"emitted: {', '.join(sorted(catalogue))}"
            bad(f"signal {signal!r} is emitted by no monitor: this rule could never fire ({hint})", "signal")
        else:
            dims = frozenset(names["group_by"]).union(names["match"]) - SCOPE_LABELS
            if dims not in {frozenset(d) for d in spec.dims}:
                carried = " or ".join("{" + ", ".join(d) + "}" if d else "{}" for d in spec.dims)
                bad(
                    f"{signal} comes with dims {carried}; group_by and match name "
                    f"{{{', '.join(sorted(dims))}}}, so this rule would see none of its series",
                    "group_by",
                )
            for key, cond in conditions.items():
                for why in _outside_range(cond, spec):
                    bad(f"{key}: {why}", key)
    if len(probs) > before or not schema_ok:
        return None
    match, static = r.get("match", {}), r.get("labels", {})
    for key, values in match.items():
        try:
            Matcher.of(values)
        except MatcherError as e:
            bad(f"match: {key}: {e}", "match", key)
            return None
    rule = Rule(
        name=r["alert"],
        signal=signal,
        group_by=tuple(r["group_by"]),
        fire_when=conditions["fire_when"],
        clear_when=conditions["clear_when"],
        min_samples=r["min_samples"],
        severity=r["severity"],
        summary=ann["summary"],
        runbook=ann.get("runbook") or ann["runbook_url"],
        match=match,
        for_=durations["for"],
        keep_firing_for=durations["keep_firing_for"],
        reopen_within=durations["reopen_within"],
        labels=static,
        for_text=str(r.get("for") or "0s"),
        source=f"{f}:{line('alert')}",
        inhibited_by=tuple(r.get("inhibited_by", ())),
    )
    one = {k: (v if isinstance(v, str) else v[0]).lstrip("!~") for k, v in match.items()}
    labels = {"model_id": "<model_id>", **{k: f"<{k}>" for k in rule.group_by}, **one, **static}
    try:
        rule.template.render(rule.summary_vars(labels, _SAMPLE_FIELDS, 0.05, 60))
    except Exception as e:
        bad(f"summary: {e} (rendered with sample values)", "annotations", "summary")
        return None
    return rule


def evidence_check(rules: Sequence[Rule], catalogue: Catalogue) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` about what each rule's ``fire_when`` tests.

    A problem: a clause on a bound the signal does not carry (``ratio.upper`` on a signal whose
    evidence bounds ``value``): the rule could never fire. A warning: a point estimate (``value``,
    ``ratio``, ``delta``) compared with a number and no bound in the condition, on a signal that is
    not a sequential statistic or a count: noise around a compliant value crosses any threshold
    sooner or later when it is looked at every minute, so such a rule's false alarms are not bounded.
    """
    problems, warnings = [], []
    for r in rules:
        spec = catalogue.get(r.signal)
        if spec is None:
            continue
        clauses = r.fire_when.clauses
        for c in clauses:
            for name in (c.field, c.ref):
                if name in BOUNDS and name.split(".")[0] != spec.evidence:
                    carried = f"bounds {spec.evidence}" if spec.evidence in BOUNDED else "carries no bounds"
                    problems.append(
                        f"{r.source}: fire_when reads {name}, but {r.signal}'s evidence {carried}: "
                        "this rule could never fire"
                    )
        if spec.evidence in ("sequential", "count") or any(c.field in BOUNDS for c in clauses):
            continue
        for c in clauses:
            if c.field in ESTIMATES and c.ref is None:
                fix = (
                    f"write `{c.field}.{'lower' if c.op.startswith('>') else 'upper'} {c.op} {c.coef:g}`"
                    if c.field == spec.evidence
                    else f"{r.signal} carries no evidence bounds of {c.field}"
                )
                warnings.append(
                    f"{r.source}: warning: fire_when compares the point estimate {c.field} with "
                    f"{c.coef:g}: noise around a value on the safe side crosses it sooner or later, so "
                    f"its false alarms are not budgeted ({fix})"
                )
                break
    return problems, warnings


def heading_slugs(markdown: str) -> list[str]:
    r"""The anchors a Markdown file's headings get on GitHub (and most renderers): lower case,
    punctuation dropped, spaces as hyphens, a repeated one suffixed ``-1``, ``-2``...

    >>> heading_slugs("# Drift\n## What fired\n```\n# a comment\n```\n## First checks (5 min)\n## What fired")
    ['drift', 'what-fired', 'first-checks-5-min', 'what-fired-1']
    """
    slugs: list[str] = []
    seen: Counter[str] = Counter()
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        m = None if fenced else re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            slugs.append(f"{slug}-{seen[slug]}" if seen[slug] else slug)
            seen[slug] += 1
    return slugs


def _outside_range(cond: Condition, spec: SignalSpec) -> Iterator[str]:
    """Clauses comparing a field with a number it can never reach (a percent written for a ratio)."""
    if spec.range is None:
        return
    lo, hi = spec.range
    span = hi - lo
    bounds = {f: (lo, hi) for f in ("value", "lower", "upper", "baseline")} | {"delta": (-span, span)}
    for c in cond.clauses:
        if c.ref is not None or c.field not in bounds:
            continue
        f_lo, f_hi = bounds[c.field]
        if f_lo <= c.coef <= f_hi:
            continue
        pct = spec.unit == "ratio" and 1 < c.coef <= 100
        hint = f" (write {c.coef / 100:g} for {c.coef:g}%)" if pct else ""
        yield (
            f"`{c.field} {c.op} {c.coef:g}` compares {spec.name}, a {spec.unit} in [{lo:g}, {hi:g}], "
            f"with {c.coef:g}: it is always or never true{hint}"
        )


def _explain(err: ValidationError) -> Iterator[tuple[list, str]]:
    """A schema error as (path of the offending node, reason a rule author can act on)."""
    path, inst = list(err.absolute_path), err.instance
    where = next((p for p in reversed(path) if isinstance(p, str)), "file")
    if err.validator == "additionalProperties":
        allowed = list(err.schema.get("properties", {}))
        for key in inst:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
                yield [*path, key], f"unknown key {key!r} ({hint})"
    elif err.validator == "required":
        for key in err.validator_value:
            if key not in inst:
                yield path, f"missing key {key!r}{_WHY.get(key, '')}"
    elif err.validator == "enum":
        yield path, f"unknown {where} {inst!r} (one of: {', '.join(map(str, err.validator_value))})"
    elif err.validator == "pattern":
        yield path, f"{where}: {inst!r} is not {err.schema['description']}"
    elif not path and err.validator == "type":
        yield path, "a rule file is a mapping with a 'groups' list"
    else:
        yield path, f"{where}: {err.message}"


def _line(root: yaml.Node | None, path: Iterable[str | int]) -> int:
    """1-based line of the key (or list item) at ``path``, or of the deepest node on it that exists."""
    if root is None:
        return 1
    node, line = root, root.start_mark.line + 1
    for step in path:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if k.value == step), None)
            if hit is None:
                break
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _duplicate_keys(node: yaml.Node | None) -> Iterator[tuple[int, str]]:
    """(line, key) of every mapping key that repeats one before it (YAML would keep only the last)."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for k, v in node.value:
            if k.value in seen:
                yield k.start_mark.line + 1, k.value
            seen.add(k.value)
            yield from _duplicate_keys(v)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            yield from _duplicate_keys(v)
