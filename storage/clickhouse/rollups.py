"""Roll signals and event counts up into the 1-minute tables, exactly once per stored row.

A materialized view on the raw inserts would count a row each time it is written: an event re-read
after a restart or by a partition's next owner, a window re-written after a crash. So raiwatch rolls up
from the ``FINAL`` (deduplicated) tables instead, and only rows whose windows have closed (their
values are final): for each model, the rows between its cursor and the pipeline's closed-until
time. The cursor is ``rolled_to`` in the rollup tables themselves, written in the same insert as the
rows it covers, so a crash can neither lose a range nor roll it twice. ``signals_1h_mv`` and the
other views carry each insert on to the hour and the day (migration 0008).

A model's first roll-up starts from its first stored row. A live worker's inserts cover at most one
UTC hour each, and it does at most ``max_chunks`` of them per call, so catching up on a long history
(a store upgraded to migration 0008) holds its writer thread for one short step at a time; a replay
(no ``max_chunks``) inserts a UTC day at a time: it waits for all of them at its end, and each
insert has a fixed cost (the three levels' parts; about 0.1 s for an hour of the bench's 200,000
events, as for a day). Either way an insert stays in one partition of the minute tables (a day) with
one ``rolled_to``. Chunks without rows are skipped (a stray event from years ago costs one insert).
Late events (stored after their window closed) are not rolled up.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger("raiwatch.rollups")

HOUR_MS = 3_600_000  # a live worker's insert: at most one UTC hour of rows
DAY_MS = 24 * HOUR_MS  # a replay's: at most one UTC day (a partition of the minute tables)


@dataclass(frozen=True)
class Family:
    """One rollup chain: its source table, the range condition on ``ts`` and the 1-minute insert."""

    name: str
    source: str
    lower_op: str  # rows at the cursor were rolled (signals: ts > cursor) or not yet (events: ts >= cursor)
    upper_op: str
    select: str

    def rows_in(self, after: bool = True) -> str:
        """The condition on ``ts`` of the rows in the range from the parameter ``lo`` to ``hi``
        (``after=False``: from the first row to ``hi``), with this family's ends."""
        lower = f" AND ts {self.lower_op} fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC')" if after else ""
        return f"{lower} AND ts {self.upper_op} fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC')"

    @property
    def shift(self) -> int:
        """Milliseconds to take from ``ts`` so that a row on a chunk's boundary falls in the chunk
        whose range holds it: 1 when ranges are (lo, hi], 0 when [lo, hi)."""
        return 1 if self.lower_op == ">" else 0


SIGNALS = Family(
    "signals",
    "signals",
    ">",
    "<=",  # a signal at the closed-until time belongs to a closed window
    "SELECT toStartOfMinute(ts - toIntervalSecond(window_s)) AS minute, model_id, signal, any(family),"
    " model_version, dims_key, window_s, any(dims), count(), sum(n), sum(value), sum(value * n),"
    " min(value), max(value), min(p_value)",
)
EVENTS = Family(
    "events",
    "telemetry_events",
    ">=",
    "<",  # an event at the closed-until time belongs to a window still open
    "SELECT toStartOfMinute(ts) AS minute, model_id, model_version, deployment, feature, count(),"
    " countIf(error IS NOT NULL), countIf(notEmpty(violations)), countIf(safety_action = 'blocked'),"
    " countIf(favorable IS NOT NULL), sum(ifNull(favorable, 0)), sum(ifNull(request_tokens, 0)),"
    " sum(ifNull(response_tokens, 0)), countIf(latency_ms IS NOT NULL), sum(ifNull(latency_ms, 0)),"
    " max(ifNull(latency_ms, 0)),"
    " quantilesTDigestStateIf(0.5, 0.95, 0.99)(assumeNotNull(latency_ms), latency_ms IS NOT NULL),"
    " uniqCombinedStateIf(user_id, user_id != '')",
)
FAMILIES = (SIGNALS, EVENTS)
_GROUP = {
    "signals": "minute, model_id, signal, model_version, dims_key, window_s",
    "events": "minute, model_id, model_version, deployment, feature",
}
LEVELS = ("1m", "1h", "1d")


class Rollups:
    """Per-model cursors and the inserts that advance them (called on the pipeline's writer thread)."""

    def __init__(self, database: str, max_chunks: int | None = None):
        self.database = database
        self.max_chunks = max_chunks  # inserts per family and call (None: as many as it takes)
        self.chunk_ms = HOUR_MS if max_chunks is not None else DAY_MS  # what one insert covers at most
        self._cursor: dict[str, dict[str, int | None]] = {f.name: {} for f in FAMILIES}  # ms; None: never

    def forget(self, models: Collection[str]) -> None:
        """Drop the cursors of models this worker no longer owns (their next owner reads them)."""
        for cursors in self._cursor.values():
            for m in models:
                cursors.pop(m, None)

    def advance(self, client: Client, models: Collection[str], until: float) -> bool:
        """Roll up the stored rows of ``models`` up to ``until`` (epoch seconds: every window ending
        by then is closed) not rolled up yet; False when ``max_chunks`` stopped it short of there."""
        if not models or not math.isfinite(until):
            return True
        u = int(until * 1000)
        done = True
        for fam in FAMILIES:
            cursors = self._cursor[fam.name]
            unknown = [m for m in models if m not in cursors]
            if unknown:
                cursors.update(self._read_cursors(client, fam, unknown))
            groups: dict[int | None, list[str]] = defaultdict(list)
            for m in models:
                c = cursors[m]
                if c is None or c < u:
                    groups[c].append(m)
            for c, ms in sorted(groups.items(), key=lambda kv: (kv[0] is not None, kv[0] or 0)):
                try:
                    reached = self._roll(client, fam, sorted(ms), c, u)
                except BaseException:
                    self.forget(ms)  # a retry reads how far the inserts got from the tables
                    raise
                done = done and reached >= u
                for m in ms:
                    cursors[m] = reached
        return done

    def _read_cursors(self, client: Client, fam: Family, models: list[str]) -> dict[str, int | None]:
        """Each model's cursor: the newest ``rolled_to`` of its rows in the rollup tables (None: never
        rolled up). The three levels are written by one insert; should a crash have split one, the
        furthest level counts (never twice) and the gap is logged."""
        found: dict[str, int | None] = dict.fromkeys(models)
        per_level = {}
        for level in LEVELS:
            rows = client.query(
                "SELECT model_id, toUnixTimestamp64Milli(max(rolled_to))"
                f" FROM {self.database}.{fam.name}_{level}"
                " WHERE model_id IN {models:Array(String)} GROUP BY model_id",
                parameters={"models": models},
            ).result_rows
            per_level[level] = {m: int(ms) for m, ms in rows}
        for m in models:
            seen = {lv: per_level[lv][m] for lv in LEVELS if m in per_level[lv]}
            if seen:
                found[m] = max(seen.values())
            if seen.get("1m", 0) > min(seen.get("1h", 0), seen.get("1d", 0)):
                log.error(
                    "rollups of %s for model %s end at different times per level (%s): a crash split"
                    " one insert, and the hour and day levels miss that range",
                    fam.name,
                    m,
                    seen,
                )
        return found

    def _chunks(self, client: Client, fam: Family, models: list[str], lo: int | None, u: int) -> list[int]:
        """The chunks (UTC hours or days, ``chunk_ms``, by number) holding rows of ``models`` after the
        cursor ``lo`` (None: from the first row) up to ``u``, oldest first, at most ``max_chunks``.
        Empty ones are skipped, so a stray old event costs one insert, not one per chunk since its time."""
        limit = f" LIMIT {self.max_chunks}" if self.max_chunks is not None else ""
        size = self.chunk_ms
        rows = client.query(
            # the chunk of a row: signals (lo, hi] take ts - 1 ms, events [lo, hi) take ts
            f"SELECT DISTINCT toInt64(floor((toUnixTimestamp64Milli(ts) - {fam.shift}) / {size})) AS h"
            f" FROM {self.database}.{fam.source} WHERE model_id IN {{models:Array(String)}}"
            f"{fam.rows_in(after=lo is not None)} ORDER BY h{limit}",
            parameters={"models": models, "lo": lo, "hi": u},
        ).result_rows
        return [int(r[0]) for r in rows]

    def _roll(self, client: Client, fam: Family, models: list[str], start: int | None, u: int) -> int:
        """Insert the rows of ``models`` from the cursor ``start`` (None: never rolled up) towards
        ``u``, one insert per chunk that has rows, at most ``max_chunks``; returns how far it got."""
        chunks = self._chunks(client, fam, models, start, u)
        lo = start
        for h in chunks:
            lo = h * self.chunk_ms if lo is None else max(lo, h * self.chunk_ms)
            hi = min(u, (h + 1) * self.chunk_ms)
            client.command(
                f"INSERT INTO {self.database}.{fam.name}_1m {fam.select},"
                " fromUnixTimestamp64Milli({hi:Int64}, 'UTC'), now()"
                f" FROM {self.database}.{fam.source} FINAL"
                f" WHERE model_id IN {{models:Array(String)}}{fam.rows_in()}"
                f" GROUP BY {_GROUP[fam.name]}",
                parameters={"models": models, "lo": lo, "hi": hi},
            )
            lo = hi
        if len(chunks) > 24:
            log.info(
                "rolled up %s of %d models: %d inserts up to %s",
                fam.name,
                len(models),
                len(chunks),
                datetime.fromtimestamp((u if lo is None else lo) / 1000, UTC).isoformat(),
            )
        if self.max_chunks is not None and len(chunks) == self.max_chunks and lo is not None:
            return lo  # there may be more: the next call goes on from here
        return u


__all__ = ["FAMILIES", "Rollups"]
