"""Versioned ClickHouse migrations: numbered SQL templates, applied once, recorded in a table.

``migrations/NNNN_name.sql`` are Jinja2 templates rendered with ``database``, ``on_cluster``
(``""`` or ``"ON CLUSTER name"``), ``ttl_days`` and ``engine(name, *args)``, which writes
``ReplacingMergeTree(ver)`` on a single node and
``ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', ver)``
on a cluster. Statements are separated by a ``;`` that ends a line.

``migrate`` creates the database and ``schema_migrations`` if needed, then applies the pending
versions in order and records each one with the checksum of its template: editing a migration
that was already applied is refused instead of silently diverging. Settings baked into an applied
migration (``ttl_days``) change only through a new migration.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING

import jinja2

from raiwatch.core.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)

MAX_TTL_DAYS = 3650
REPLICA_PATH = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"


def _check_ident(kind: str, value: str) -> str:
    if not _IDENT.match(value):
        raise ConfigError(f"clickhouse {kind} {value!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return value


def _engine_fn(cluster: str):
    def engine(name: str, *args: str) -> str:
        if cluster:
            return f"Replicated{name}({', '.join((REPLICA_PATH, *args))})"
        return f"{name}({', '.join(args)})"

    return engine


def _templates() -> list[tuple[int, str, str]]:
    """(version, file name, template text) of every migration file, in version order."""
    out = []
    for f in resources.files(__package__).joinpath("migrations").iterdir():
        m = _FILE.match(f.name)
        if m:
            out.append((int(m.group(1)), f.name, f.read_text(encoding="utf-8")))
    out.sort()
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise StorageError(f"two ClickHouse migration files share a version: {[n for _, n, _ in out]}")
    return out


def _render(text: str, database: str, cluster: str, ttl_days: int) -> str:
    return _ENV.from_string(text).render(
        database=database,
        on_cluster=f"ON CLUSTER {cluster}" if cluster else "",
        ttl_days=int(ttl_days),
        engine=_engine_fn(cluster),
    )


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render_migrations(database: str, cluster: str = "", ttl_days: int = 30) -> list[tuple[int, str]]:
    """Every migration as ``(version, SQL)``, rendered for this database, cluster and TTL."""
    _check_ident("database", database)
    if cluster:
        _check_ident("cluster", cluster)
    if not 0 < int(ttl_days) <= MAX_TTL_DAYS:
        raise ConfigError(
            f"clickhouse ttl_days must be 1..{MAX_TTL_DAYS}, not {ttl_days} "
            "(TTL dates are DateTime, which ends in 2106)"
        )
    return [(v, _render(text, database, cluster, ttl_days)) for v, _, text in _templates()]


def split_statements(sql: str) -> list[str]:
    """The statements of a rendered migration; comment-only chunks are dropped."""
    out = []
    for chunk in _STATEMENT_END.split(sql):
        code = "\n".join(ln for ln in chunk.splitlines() if not ln.lstrip().startswith("--")).strip()
        if code:
            out.append(chunk.strip())
    return out


def _bootstrap(client: Client, database: str, cluster: str) -> None:
    on_cluster = f"ON CLUSTER {cluster}" if cluster else ""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database} {on_cluster}")
    client.command(
        f"""CREATE TABLE IF NOT EXISTS {database}.schema_migrations {on_cluster}
        (
            version    UInt32               COMMENT 'Migration number (the NNNN of NNNN_name.sql)',
            name       String               COMMENT 'Migration file name',
            checksum   String               COMMENT 'sha256 prefix of the migration template when applied',
            applied_at DateTime64(3, 'UTC') COMMENT 'When it was applied'
        )
        ENGINE = {_engine_fn(cluster)("MergeTree")}
        ORDER BY version
        COMMENT 'ClickHouse schema versions applied by raiwatch (storage/clickhouse/migrations).'"""
    )


def applied_versions(client: Client, database: str) -> dict[int, str]:
    """Applied migration versions and their template checksums ({} before the first migrate)."""
    exists = client.command(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'schema_migrations'",
        parameters={"db": database},
    )
    if not int(exists):
        return {}
    rows = client.query(f"SELECT version, any(checksum) FROM {database}.schema_migrations GROUP BY version")
    return {int(v): c for v, c in rows.result_rows}


def migrate(client: Client, database: str, cluster: str = "", ttl_days: int = 30) -> list[int]:
    """Apply the pending migrations in order; return the versions applied (``[]`` when up to date).

    Raises ``StorageError`` naming the migration and statement that failed, or naming an applied
    migration whose template changed since.
    """
    rendered = dict(render_migrations(database, cluster, ttl_days))
    templates = {v: (name, text) for v, name, text in _templates()}
    try:
        _bootstrap(client, database, cluster)
        done = applied_versions(client, database)
    except Exception as e:
        raise StorageError(f"cannot prepare ClickHouse database {database!r} for migrations: {e}") from e
    for v, checksum in done.items():
        if v in templates and checksum != _checksum(templates[v][1]):
            raise StorageError(
                f"ClickHouse migration {templates[v][0]} was edited after it was applied to {database!r}; "
                "add a new migration instead"
            )
    applied = []
    for v in sorted(set(rendered) - set(done)):
        name, text = templates[v]
        for stmt in split_statements(rendered[v]):
            try:
                client.command(stmt)
            except Exception as e:
                first = " ".join(stmt.split())[:80]
                raise StorageError(f"ClickHouse migration {name} failed on `{first}...`: {e}") from e
        try:
            client.insert(
                "schema_migrations",
                [[v, name, _checksum(text), datetime.now(UTC)]],
                column_names=["version", "name", "checksum", "applied_at"],
                database=database,
            )
        except Exception as e:
            raise StorageError(f"ClickHouse migration {name} applied but not recorded: {e}") from e
        applied.append(v)
    return applied
