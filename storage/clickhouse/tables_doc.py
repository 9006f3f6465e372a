"""Write TABLES.md: every table, view and column of the schema with its grain, keys, TTL and an
example query, from a freshly migrated store (the comments in the migrations) and ``tables.yaml``.

``python -m storage.clickhouse.tables_doc [OUT]`` (default: TABLES.md beside this file).
"""

from __future__ import annotations

import re
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from storage.clickhouse.client import close_all, connect
from storage.clickhouse.schema import migrate

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

DATABASE = "raiwatch"
INTERNAL = re.compile(r"^(schema_migrations|telemetry_events_in|.*_mv)$")
_TTL = re.compile(r"\bTTL (.+?)(?: SETTINGS |$)")
HEADER = """# ClickHouse tables (database `raiwatch`)

Written by `python -m storage.clickhouse.tables_doc` from the migrations and `tables.yaml`; do not
edit by hand. Each example runs in `tests/test_tables_doc.py` on data a replay produced.

How to count:
- `ReplacingMergeTree` tables keep one row per key after background merges; read them with `FINAL`
  so a row written twice (a replayed event, a re-written window) counts once.
- `AggregatingMergeTree` rollups (`signals_1m/1h/1d`, `events_1m/1h/1d`) are aggregated with
  `GROUP BY` their key: `sum` for the sums, `min`/`max` for the extremes, the `-Merge` functions for
  the quantile and distinct-user states. raiwatch adds each stored row once, from the `FINAL`
  tables, when its window has closed; a late event (stored after its window closed) is in
  `telemetry_events` but not in `events_*`. Name results apart from the columns
  (`sum(events) AS requests`): in ClickHouse an alias that repeats a column's name stands for the
  alias in the rest of the query.
- TTLs say 30 days where `clickhouse.events_ttl_days` (30 by default) applies. Every TTL counts from
  when the row was stored (`ingested_at`, `received_at`, `written_at`, `rolled_at`), never from its
  event time: a replay or backfill of history of any age is kept that long. Tables without one keep
  their rows.
"""


def describe(client: Client, database: str, about: dict) -> str:
    """The markdown for every table of ``database``."""
    tables = client.query(
        "SELECT name, engine, comment, sorting_key, partition_key, engine_full FROM system.tables"
        " WHERE database = {db:String} ORDER BY name",
        parameters={"db": database},
    ).result_rows
    columns: dict[str, list[tuple[str, str, str]]] = {}
    for table, name, typ, comment in client.query(
        "SELECT table, name, type, comment FROM system.columns WHERE database = {db:String}"
        " ORDER BY table, position",
        parameters={"db": database},
    ).result_rows:
        columns.setdefault(table, []).append((name, typ, comment))
    public = [t for t in tables if not INTERNAL.match(t[0])]
    missing = sorted({t[0] for t in public} - about.keys())
    extra = sorted(about.keys() - {t[0] for t in public})
    if missing or extra:
        raise SystemExit(f"tables.yaml does not match the schema: missing {missing}; unknown {extra}")
    order = list(about)  # the yaml's order: raw tables, derived tables, views, rollups
    out = [HEADER, "| table | grain |", "|---|---|"]
    out += [f"| [`{name}`](#{name}) | {about[name]['grain']} |" for name in order]
    by_name = {t[0]: t for t in public}
    for name in order:
        _, engine, comment, sorting, partition, full = by_name[name]
        ttl = _TTL.search(full or "")
        out += ["", f"## {name}", "", comment.strip(), "", "| | |", "|---|---|"]
        out.append(f"| grain | {about[name]['grain']} |")
        out.append(f"| engine | {engine} |")
        if sorting:
            out.append(f"| sorting key | `{sorting}` |")
        if partition:
            out.append(f"| partitioned by | `{partition}` |")
        if engine != "View":
            out.append(f"| TTL | {f'`{ttl.group(1)}`' if ttl else 'none (kept)'} |")
        out += ["", "| column | type | meaning |", "|---|---|---|"]
        out += [f"| `{c}` | `{t}` | {_cell(m)} |" for c, t, m in columns.get(name, [])]
        out += ["", "```sql", about[name]["example"].strip(), "```"]
    internal = [t for t in tables if INTERNAL.match(t[0])]
    out += ["", "## Internal", "", "Used by raiwatch itself; not for queries.", ""]
    out += [f"- `{t[0]}` ({t[1]}): {t[2].strip()}" for t in internal]
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def notes() -> dict:
    return yaml.safe_load(resources.files(__package__).joinpath("tables.yaml").read_text(encoding="utf-8"))


def render() -> str:
    """TABLES.md as the current migrations and tables.yaml give it."""
    with tempfile.TemporaryDirectory() as tmp:
        dsn = f"chdb://{Path(tmp) / 'clickhouse'}"
        try:
            client = connect(dsn, DATABASE)
            migrate(client, DATABASE)
            return describe(client, DATABASE, notes())
        finally:
            close_all()


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).with_name("TABLES.md")
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
