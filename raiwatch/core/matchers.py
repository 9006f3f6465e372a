"""Label matchers, shared by rule ``match``, notification routes and silences.

A matcher value is ``v`` (equal), ``~re`` (the regex matches the whole value), ``!v`` or ``!~re``
(not that). Regexes are RE2 (google-re2): matching takes time linear in the value whatever the
pattern, so no rule, route or silence, and no label value, can stall the process the way a
backtracking engine does on ``(a+)+b``. RE2 has no backreferences or lookaround; a pattern it
cannot compile is refused, with the reason, when the matcher is made (``MatcherError``).

>>> m = Matcher.of(["~self_.*", "!self_test"])
>>> m.accepts("self_harm"), m.accepts("self_test"), m.accepts("pii")
(True, False, False)
>>> Matcher.of(["~(a+)+b"]).accepts("a" * 29)
False
>>> Matcher.of(["~Safety["])
Traceback (most recent call last):
...
raiwatch.core.matchers.MatcherError: bad regular expression 'Safety[': missing ]: [
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import re2

MAX_PATTERN = 1000  # characters: a label matcher is short; a longer one is a mistake, not a need
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is the caller's one-line error, not a C++ log on stderr


class MatcherError(ValueError):
    """A matcher that cannot be compiled; the message says which and why."""


def compile_regex(pattern: str) -> Any:
    """The RE2 program of ``pattern``; ``MatcherError`` when RE2 cannot compile it."""
    if len(pattern) > MAX_PATTERN:
        raise MatcherError(f"regular expression of {len(pattern)} characters (at most {MAX_PATTERN})")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        why = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else e
        raise MatcherError(f"bad regular expression {pattern!r}: {why}") from None


@dataclass(frozen=True)
class Matcher:
    """The values one label may take: it must match one of the positive entries (when there are
    any) and none of the negative ones. A missing label passes only a matcher of exclusions."""

    allow: tuple[str | Any, ...]  # a str: equal to it; else a compiled RE2 program
    deny: tuple[str | Any, ...]

    @classmethod
    def of(cls, values: str | Sequence[str]) -> Matcher:
        """Compile ``values`` (one matcher value or several); ``MatcherError`` on a bad regex."""
        allow: list[str | Any] = []
        deny: list[str | Any] = []
        for v in [values] if isinstance(values, str) else values:
            neg = v.startswith("!")
            body = v[1:] if neg else v
            (deny if neg else allow).append(compile_regex(body[1:]) if body.startswith("~") else body)
        return cls(tuple(allow), tuple(deny))

    def accepts(self, value: str | None) -> bool:
        """Whether ``value`` passes."""
        if value is None:
            return not self.allow
        if self.allow and not any(_hit(p, value) for p in self.allow):
            return False
        return not any(_hit(p, value) for p in self.deny)


def _hit(p: str | Any, value: str) -> bool:
    if isinstance(p, str):
        return p == value
    try:
        return p.fullmatch(value) is not None
    except UnicodeEncodeError:  # a lone surrogate RE2's UTF-8 cannot carry: match it as U+FFFD
        return p.fullmatch(value.encode("utf-8", "replace").decode("utf-8")) is not None


def matchers(spec: Mapping[str, str | Sequence[str]]) -> dict[str, Matcher]:
    """Label -> compiled matcher; ``MatcherError`` names the label of a bad one."""
    out = {}
    for label, values in spec.items():
        try:
            out[label] = Matcher.of(values)
        except MatcherError as e:
            raise MatcherError(f"{label}: {e}") from None
    return out


def accept_all(ms: Mapping[str, Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher accepts its label's value in ``labels``."""
    return all(m.accepts(labels.get(k)) for k, m in ms.items())
