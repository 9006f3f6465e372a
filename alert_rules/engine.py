"""The rule engine: Signals in, incident changes out, per rule and series, in event time.

A series is one rule and one set of group-by label values (plus ``model_id`` for per-model
signals). Each runs inactive -> pending -> firing -> resolved on the windows it receives:

- a window whose ``n`` is below ``min_samples``, or a missing window, resets the pending (and
  clearing) streak but never resolves: it is no evidence of recovery;
- pending starts at the start of the first window where ``fire_when`` holds; the incident opens
  once ``ts - pending_since >= for``; while firing, each window where ``fire_when`` holds
  re-confirms it (``updated_at``);
- it resolves once ``clear_when`` has held on consecutive windows for ``keep_firing_for``; a window
  in the band between the two conditions keeps it firing and restarts the clear streak;
- a window not newer than the last one seen for its series is ignored (replays, redeliveries);
- a rule with ``inhibited_by`` stays pending while a named rule fires on the same values of the
  labels both share (a model-wide incident holds back the per-tenant ones it explains); in each
  window the inhibitors are stepped first, so the outcome does not depend on signal order.

Incident ids hash the dedup key and ``opened_at``, so a stream run and a replay agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter, itemgetter
from typing import Literal

from msgspec.structs import replace

from alert_rules.conditions import signal_fields
from alert_rules.grouping import Problems
from alert_rules.loader import Rule, inhibition_levels
from raiwatch.core.records import SEVERITIES, Incident, IncidentChange, Signal

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(slots=True)
class _Series:
    last_ts: datetime
    pending_since: datetime | None = None
    clear_since: datetime | None = None
    incident: Incident | None = None
    resolved: Incident | None = None  # the series' last incident, once resolved (flap control)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dedup_key(rule: str, labels: Mapping[str, str]) -> str:
    """``RULE:`` + hash of the incident labels (group-by values and static labels)."""
    return f"{rule}:{_hash(json.dumps(labels, sort_keys=True, separators=(',', ':')))}"


def incident_id(dedup: str, opened_at: datetime) -> str:
    return f"inc-{_hash(dedup + opened_at.isoformat())}"


class RuleEngine:
    """Evaluates rules over signals; keeps per-series state, bounded by ``evict_after`` of event time."""

    def __init__(
        self,
        rules: Sequence[Rule],
        runbook_base_url: str,
        *,
        evict_after: timedelta = timedelta(hours=24),
        problems: Problems | None = None,
    ) -> None:
        self._rules = {r.name: r for r in rules}
        if len(self._rules) != len(rules):
            raise ValueError("rule names must be unique")
        self._routes: dict[str, list[Rule]] = {}
        for r in rules:
            self._routes.setdefault(r.signal, []).append(r)
        self._runbooks = {r.name: r.runbook_url(runbook_base_url) for r in rules}
        self._levels = inhibition_levels(rules)
        self._series: dict[SeriesKey, _Series] = {}
        self._evict_after = evict_after
        self._now: datetime | None = None  # latest event time seen
        self._swept: datetime | None = None
        self.problems = problems or Problems()  # which incidents share a page (alert_rules.grouping)

    def evaluate(self, signals: Sequence[Signal]) -> list[IncidentChange]:
        """Feed signals (any mix of series and rules; stably sorted by ``ts`` here); return the changes.

        Within one window, rules are stepped level by level of ``inhibited_by`` (a rule after
        every rule that can hold it back, inhibitors of inhibitors first), so whether an inhibited
        rule opens never depends on the order of the signals: a replay, a backtest and a restarted
        worker read them back in another order than the monitors emitted them.
        """
        changes = []
        ordered = sorted(signals, key=attrgetter("ts"))
        i = 0
        while i < len(ordered):
            j = i
            while j < len(ordered) and ordered[j].ts == ordered[i].ts:
                j += 1
            changes += self._window(ordered[i:j])
            i = j
        self._evict()
        return changes

    def _window(self, window: Sequence[Signal]) -> list[IncidentChange]:
        """Step every series the signals of one window feed, a level of ``inhibited_by`` at a time."""
        self._now = window[0].ts if self._now is None else max(self._now, window[0].ts)
        steps: list[tuple[int, Rule, Signal, dict[str, str], dict[str, float | None]]] = []
        for s in window:
            routes = self._routes.get(s.signal)
            if not routes:
                continue
            labels = s.labels()
            fields = signal_fields(s)
            steps += [(self._levels[r.name], r, s, labels, fields) for r in routes if r.sees(s, labels)]
        out = []
        for _, rule, s, labels, fields in sorted(steps, key=itemgetter(0)):  # stable: same level, same order
            scope = {k: labels[k] for k in rule.group_by}
            if s.model_id:
                scope.setdefault("model_id", s.model_id)
            change = self._step(rule, scope, labels, s, fields)
            if change:
                out.append((change, (rule.name, tuple(sorted(scope.items())))))
        return self._group(out)

    def _group(self, changes: list[tuple[IncidentChange, SeriesKey]]) -> list[IncidentChange]:
        """Put each incident this window opened in its problem, most severe first (then by rule and
        labels), so the problem's name never depends on the order signals came in; note the
        resolved and reopened ones."""
        opened = sorted(
            (c for c, _ in changes if c.kind == "opened"),
            key=lambda c: (SEVERITIES.index(c.incident.severity), c.incident.rule, c.incident.dedup_key),
        )
        named: dict[str, str] = {}
        for c in opened:
            inc = c.incident
            named[inc.incident_id] = self.problems.join(inc.incident_id, inc.labels, inc.opened_at)
        out = []
        for c, key in changes:
            inc = c.incident
            if c.kind == "opened":
                inc = replace(inc, group_id=named[inc.incident_id])
                self._series[key].incident = inc
                c = IncidentChange(kind="opened", incident=inc)
            elif c.kind == "resolved":
                self.problems.resolved(inc.incident_id, inc.resolved_at or inc.opened_at)
            elif c.kind == "reopened":
                self.problems.reopened(inc)
            out.append(c)
        return out

    def _step(
        self,
        rule: Rule,
        scope: dict[str, str],
        labels: dict[str, str],
        s: Signal,
        fields: dict[str, float | None],
    ) -> IncidentChange | None:
        key = (rule.name, tuple(sorted(scope.items())))
        start = s.ts - timedelta(seconds=s.window)
        st = self._series.get(key)
        if st is None:
            st = self._series[key] = _Series(s.ts)
        elif s.ts <= st.last_ts:
            return None
        else:
            if start > st.last_ts:  # a window is missing
                st.pending_since = st.clear_since = None
            st.last_ts = s.ts
        if s.n < rule.min_samples:
            st.pending_since = st.clear_since = None
            return None
        inc = st.incident
        if rule.fire_when.holds(fields):
            st.clear_since = None
            if inc is None:
                st.pending_since = st.pending_since or start
                if s.ts - st.pending_since < rule.for_ or self._inhibited(rule, scope):
                    return None
                st.pending_since = None
                last = st.resolved
                if last is not None and last.resolved_at and s.ts - last.resolved_at <= rule.reopen_within:
                    st.incident, st.resolved = (
                        replace(last, status="open", resolved_at=None, updated_at=s.ts),
                        None,
                    )
                    return IncidentChange(kind="reopened", incident=st.incident)
                return self._open(rule, st, scope, labels, s, fields)
            # value, threshold and summary stay as opened (incident.v1: "value when the incident opened")
            st.incident = replace(inc, updated_at=s.ts)
            return IncidentChange(kind="updated", incident=st.incident)
        st.pending_since = None
        if inc is None or not rule.clear_when.holds(fields):
            st.clear_since = None
            return None
        st.clear_since = st.clear_since or start
        if s.ts - st.clear_since < rule.keep_firing_for:
            return None
        st.incident = st.clear_since = None
        st.resolved = replace(inc, status="resolved", resolved_at=s.ts)
        return IncidentChange(kind="resolved", incident=st.resolved)

    def _inhibited(self, rule: Rule, scope: dict[str, str]) -> bool:
        """Whether an ``inhibited_by`` rule fires on the labels this scope shares with it."""
        return any(
            name in rule.inhibited_by
            and st.incident is not None
            and all(scope.get(k, v) == v for k, v in key)
            for (name, key), st in self._series.items()
        )

    def _open(
        self,
        rule: Rule,
        st: _Series,
        scope: dict[str, str],
        labels: dict[str, str],
        s: Signal,
        fields: dict[str, float | None],
    ) -> IncidentChange:
        inc_labels = {**scope, **rule.labels}
        dedup = dedup_key(rule.name, inc_labels)
        threshold = rule.fire_when.threshold(fields)
        st.incident = Incident(
            incident_id=incident_id(dedup, s.ts),
            dedup_key=dedup,
            rule=rule.name,
            signal=rule.signal,
            severity=rule.severity,
            status="open",
            opened_at=s.ts,
            labels=inc_labels,
            summary=rule.render_summary({**labels, **rule.labels}, fields, threshold, s.window),
            runbook_url=self._runbooks[rule.name],
            value=s.value,
            threshold=threshold,
            updated_at=s.ts,
        )
        return IncidentChange(kind="opened", incident=st.incident)

    def restore(self, incidents: Iterable[Incident]) -> None:
        """Take over open/acknowledged incidents (after a restart): their series update or resolve them.

        Signals not newer than an incident's ``updated_at`` (else ``opened_at``) are then ignored.
        Incidents of rules no longer loaded, or whose labels lack the rule's group-by labels, are skipped.
        """
        incidents = list(incidents)
        for inc in incidents:
            rule = self._rules.get(inc.rule)
            if inc.status == "resolved" or rule is None or any(k not in inc.labels for k in rule.group_by):
                continue
            scope = {k: inc.labels[k] for k in rule.group_by}
            if "model_id" in inc.labels:
                scope.setdefault("model_id", inc.labels["model_id"])
            self._series[(rule.name, tuple(sorted(scope.items())))] = _Series(
                inc.updated_at or inc.opened_at, incident=inc
            )
        self.problems.restore(incidents)

    def forget(self, models: Collection[str]) -> None:
        """Drop the series of these models (their partitions moved to another worker, which takes
        over their incidents and timers from the store and the stored signals)."""
        gone = [k for k in self._series if dict(k[1]).get("model_id") in models]
        for k in gone:
            del self._series[k]
        self.problems.forget(models)

    @property
    def rules(self) -> list[Rule]:
        return list(self._rules.values())

    def firing(self) -> list[Incident]:
        """The incidents currently firing (open or acknowledged), one per series."""
        return [st.incident for st in self._series.values() if st.incident is not None]

    def state_of(self, rule: str, labels: Mapping[str, str]) -> Literal["inactive", "pending", "firing"]:
        """State of the series of ``rule`` with these scope labels (group-by labels and model_id)."""
        st = self._series.get((rule, tuple(sorted(labels.items()))))
        if st is None:
            return "inactive"
        return "firing" if st.incident else "pending" if st.pending_since else "inactive"

    def _evict(self) -> None:
        """Drop series not firing and not seen for ``evict_after``; sweep once per 1/24 of it."""
        now = self._now
        if now is None or (self._swept is not None and now - self._swept < self._evict_after / 24):
            return
        self._swept = now
        cutoff = now - self._evict_after
        stale = [k for k, st in self._series.items() if st.incident is None and st.last_ts < cutoff]
        for k in stale:
            del self._series[k]
        self.problems.evict(now)

