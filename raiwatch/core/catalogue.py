"""The signal catalogue: what each signal a monitor emits means, so that rules can be checked.

Each monitor declares its signals as ``SignalSpec`` (name, dims, what ``value``/``lower``/
``upper``/``n``/``baseline`` mean, unit and range). The monitor registry collects them; ``rules
lint`` rejects a rule on a signal that is not in the catalogue (naming the closest one), on dims
the signal never carries, or with a threshold outside the signal's range; ``/metrics`` exports the
ones marked ``export``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

import msgspec

UNITS = ("ratio", "count", "score", "seconds", "bytes", "distance", "statistic")
BOUNDED = ("value", "ratio", "delta")  # quantities a signal's evidence bounds can be of
EVIDENCE = ("", *BOUNDED, "sequential", "count")


class SignalSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One signal a monitor emits.

    ``dims``: every set of dim keys it is emitted with (``()`` for none). ``range``: the values
    ``value``, ``lower``, ``upper`` and ``baseline`` can take (None: unbounded). ``export``: the dim
    keys of the series exported to ``/metrics`` as ``raiwatch_<name>`` gauges (None: not exported).

    ``evidence``: what a threshold rule on it tests. ``value``, ``ratio`` or ``delta``: the signal
    carries budgeted bounds of that quantity (``Signal.evidence_lower``/``evidence_upper``, read
    by rules as ``ratio.upper`` ...); ``sequential``: ``value`` is a sequential statistic over its
    calibrated decision limit (1 = the test's alarm); ``count``: a count no sample error affects;
    "" (none): a rule comparing it with a threshold compares a point estimate (lint warns).
    ``budget``: the signal's weight in its family's share of the false-alarm budget
    (``monitors.registry.budgets``); ``evidence_text`` says in words what the bounds are.
    """

    name: str
    family: str
    dims: tuple[tuple[str, ...], ...]
    value: str
    unit: str
    n: str
    interval: str = ""
    baseline: str = ""
    range: tuple[float, float] | None = None
    export: tuple[str, ...] | None = None
    evidence: str = ""
    budget: float = 0.0
    evidence_text: str = ""

    def __post_init__(self) -> None:
        if not self.name.startswith(self.family + "."):
            raise ValueError(f"signal {self.name!r} must start with its family, {self.family!r}")
        if self.unit not in UNITS:
            raise ValueError(f"signal {self.name!r}: unit {self.unit!r} is not one of {', '.join(UNITS)}")
        if self.evidence not in EVIDENCE:
            raise ValueError(f"signal {self.name!r}: evidence {self.evidence!r} is not one of {EVIDENCE}")

    @property
    def metric_name(self) -> str:
        return "raiwatch_" + self.name.replace(".", "_")


class Catalogue(Mapping[str, SignalSpec]):
    """Signal specs by name."""

    def __init__(self, specs: Iterable[SignalSpec]):
        self._specs: dict[str, SignalSpec] = {}
        for s in specs:
            if s.name in self._specs:
                raise ValueError(f"signal {s.name!r} is declared twice")
            self._specs[s.name] = s

    def __getitem__(self, name: str) -> SignalSpec:
        return self._specs[name]

    def __iter__(self):
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def closest(self, name: str) -> str | None:
        """The catalogued name most like ``name`` (a typo's intended signal), if any is close.

        >>> Catalogue([SignalSpec(name="safety.violation_rate", family="safety", dims=((),),
        ...     value="share", unit="ratio", n="events")]).closest("safety.violaton_rate")
        'safety.violation_rate'
        """
        close = difflib.get_close_matches(name, list(self._specs), n=1, cutoff=0.6)
        return close[0] if close else None
