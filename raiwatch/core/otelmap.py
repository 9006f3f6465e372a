"""The OpenTelemetry mapping file: which attributes fill which telemetry-event.v1 fields.

A YAML file checked against ``contracts/otel-mapping.v1.schema.json`` (``raiwatch otel lint``),
every problem as ``FILE:LINE: reason`` like the rule files. Without a file the defaults below
apply: the GenAI semantic conventions (current names first, then ``gen_ai.system`` and
OpenInference's ``llm.*``), resource attributes for deployment, feature and version, and no
tenant, user, segments, features or evaluations (those are the team's own attribute names).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from raiwatch.core import yamlfile
from raiwatch.core.errors import ConfigError

SCHEMA = json.loads(
    (Path(__file__).resolve().parent / "contracts" / "otel-mapping.v1.schema.json").read_text(
        encoding="utf-8"
    )
)
_VALIDATOR = Draft202012Validator(SCHEMA)

DEFAULTS: dict[str, tuple[str, ...]] = {
    "model_id": ("gen_ai.request.model", "gen_ai.response.model", "llm.model_name"),
    "model_version": ("gen_ai.response.model", "service.version"),
    "deployment": ("deployment.environment.name", "deployment.environment"),
    "feature": ("service.name",),
    "tenant_id": (),
    "user_id": (),
    "session_id": ("gen_ai.conversation.id", "session.id"),
}


@dataclass(frozen=True)
class SafetyEval:
    """An evaluation that is a safety verdict of ``category``."""

    category: str
    score: bool = True
    violation_labels: frozenset[str] = frozenset()
    violation_above: float | None = None
    action_labels: Mapping[str, str] = field(default_factory=dict)

    def violated(self, label: str | None, score: float | None) -> bool:
        """Whether a result with this label and score is a violation.

        >>> rule = SafetyEval("toxicity", violation_labels=frozenset({"toxic"}), violation_above=0.8)
        >>> rule.violated("toxic", 0.1), rule.violated("ok", 0.9), rule.violated("ok", None)
        (True, True, False)
        """
        if label is not None and label in self.violation_labels:
            return True
        return self.violation_above is not None and score is not None and score > self.violation_above


@dataclass(frozen=True)
class QualityEval:
    """An evaluation that is a label for the quality monitor."""

    favorable_labels: frozenset[str] = frozenset()
    favorable_above: float | None = None

    def favorable(self, label: str | None, score: float | None) -> bool | None:
        if label is not None and label in self.favorable_labels:
            return True
        if self.favorable_above is not None and score is not None:
            return score > self.favorable_above
        return False if self.favorable_labels and label is not None else None


@dataclass(frozen=True)
class OtelMapping:
    """A loaded mapping file (or the defaults)."""

    names: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULTS))
    features: dict[str, tuple[str, ...]] = field(default_factory=dict)
    segments: dict[str, tuple[str, ...]] = field(default_factory=dict)
    operations: frozenset[str] = frozenset()
    safety: dict[str, SafetyEval] = field(default_factory=dict)  # by gen_ai.evaluation.name
    quality: dict[str, QualityEval] = field(default_factory=dict)


def _names(v: str | list[str]) -> tuple[str, ...]:
    return (v,) if isinstance(v, str) else tuple(v)


def from_dict(doc: Mapping[str, Any]) -> OtelMapping:
    """A mapping from an already valid document."""
    names = dict(DEFAULTS)
    for key in DEFAULTS:
        if key in doc:
            names[key] = _names(doc[key])
    safety, quality = {}, {}
    for name, ev in (doc.get("evaluations") or {}).items():
        if "safety" in ev:
            s = ev["safety"]
            safety[name] = SafetyEval(
                category=s.get("category", name),
                score=s.get("score", True),
                violation_labels=frozenset(s.get("violation_labels", ())),
                violation_above=s.get("violation_above"),
                action_labels=dict(s.get("action_labels", {})),
            )
        if "quality" in ev:
            q = ev["quality"]
            quality[name] = QualityEval(frozenset(q.get("favorable_labels", ())), q.get("favorable_above"))
    return OtelMapping(
        names=names,
        features={k: _names(v) for k, v in (doc.get("features") or {}).items()},
        segments={k: _names(v) for k, v in (doc.get("segments") or {}).items()},
        operations=frozenset(doc.get("operations") or ()),
        safety=safety,
        quality=quality,
    )


def lint(path: str | Path) -> list[str]:
    """Every problem of a mapping file as ``FILE:LINE: reason`` (empty: it is good)."""
    return _read(Path(path))[1]


def load_mapping(path: str | Path | None) -> OtelMapping:
    """The mapping in ``path`` (the defaults when None or ""); ``ConfigError`` listing every problem."""
    if not path:
        return OtelMapping()
    doc, problems = _read(Path(path))
    if problems:
        raise ConfigError("the OpenTelemetry mapping does not lint:\n" + "\n".join(problems))
    return from_dict(doc)


def _read(p: Path) -> tuple[dict, list[str]]:
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, [f"{p}:1: no such file"]
    except (OSError, UnicodeDecodeError) as e:
        return {}, [f"{p}:1: cannot read it ({e})"]
    try:
        root = yamlfile.compose(text)
        doc = yamlfile.construct(root)
    except yaml.YAMLError as e:
        return {}, [yamlfile.file_problem(p, e)]
    if not isinstance(doc, dict):
        return {}, [f"{p}:1: the top level must be a mapping with version: 1"]
    problems = []
    for err in sorted(_VALIDATOR.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        path = list(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            known = err.schema.get("properties", {})
            path += [next((k for k in err.instance if k not in known), "")]  # point at the stray key
            path = [x for x in path if x != ""]
        where = ".".join(map(str, err.absolute_path)) or "the top level"
        problems.append(f"{p}:{_line(root, path)}: {where}: {_why(err)}")
    return doc, problems


def _why(err: Any) -> str:
    if err.validator == "additionalProperties":
        return err.message.replace("Additional properties are not allowed", "unknown key")
    if err.validator == "oneOf" and err.schema.get("description", "").startswith("Attribute names"):
        return "give an attribute name or a list of them"
    if err.validator == "enum":
        return f"{err.instance!r} is not one of {', '.join(map(str, err.validator_value))}"
    return err.message


def _line(root: yaml.Node | None, path: Iterable[str | int]) -> int:
    """The 1-based line of the node at ``path`` (or of the deepest node found on the way)."""
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
