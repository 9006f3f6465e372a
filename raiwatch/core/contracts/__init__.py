"""The contracts, shipped with the package: JSON Schemas and example events.

For producers and tests alike::

    from raiwatch.core.contracts import validator
    validator("telemetry-event.v1").validate(event_dict)

Files: ``telemetry-event.v1.schema.json``, ``feedback-event.v1.schema.json``,
``incident.v1.schema.json`` and ``examples.jsonl`` (valid telemetry events, richest first).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator

DIR = Path(__file__).resolve().parent
NAMES = ("telemetry-event.v1", "feedback-event.v1", "incident.v1")


@cache
def schema(name: str) -> dict:
    """The JSON Schema of a contract, e.g. ``schema("incident.v1")``."""
    if name not in NAMES:
        raise KeyError(f"no contract {name!r}; the contracts are {', '.join(NAMES)}")
    return json.loads((DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


def validator(name: str) -> Draft202012Validator:
    """A JSON Schema validator of a contract (with format checks, e.g. RFC 3339 date-times)."""
    return Draft202012Validator(schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def examples() -> list[bytes]:
    """The example telemetry events, one JSON document each."""
    return [ln for ln in (DIR / "examples.jsonl").read_bytes().splitlines() if ln.strip()]
