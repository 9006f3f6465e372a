"""Errors a person can act on: each names what is wrong and where."""

from __future__ import annotations


class RaiwatchError(Exception):
    """Base of every error raiwatch raises on purpose."""


class ConfigError(RaiwatchError):
    """A configuration file or setting is invalid; the message names the field."""


class RuleError(RaiwatchError):
    """An alert rule file is invalid; ``problems`` holds one ``file:line: reason`` per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class StorageError(RaiwatchError):
    """A write to ClickHouse or the incident store failed after its retries."""
