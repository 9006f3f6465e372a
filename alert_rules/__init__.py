"""Alert rules: YAML rule files, their loader and linter, and the engine that turns Signals into incidents."""

from alert_rules.conditions import Condition, parse_condition, parse_duration
from alert_rules.engine import RuleEngine, dedup_key, incident_id
from alert_rules.loader import RULES_DIR, Rule, lint, load_rules

__all__ = [
    "RULES_DIR",
    "Condition",
    "Rule",
    "RuleEngine",
    "dedup_key",
    "incident_id",
    "lint",
    "load_rules",
    "parse_condition",
    "parse_duration",
]
