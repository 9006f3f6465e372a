"""Engines and migrations of the incident store.

``make_engine(url)`` turns a SQLAlchemy URL into an engine, or a ConfigError that says what to
write instead. SQLite files get real transactions (SQLAlchemy emits BEGIN; writes use BEGIN
IMMEDIATE so that two writers queue instead of failing), WAL and foreign keys.
``migrate(url)`` brings the schema to the newest revision shipped in ``migrations/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from raiwatch.core.errors import ConfigError, StorageError
from storage.incidents.models import VERSION_TABLE

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
WRITE = "raiwatch_write"  # execution option: this transaction will write (SQLite: BEGIN IMMEDIATE)
_PG_MIGRATION_LOCK = 0x7261697769  # advisory lock key: one migrating process at a time
_EXAMPLES = "e.g. sqlite:///var/incidents.db or postgresql+psycopg://user:password@host:5432/raiwatch"


def safe_url(url: URL | str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def _parse(url: str) -> URL:
    if not url or not url.strip():
        raise ConfigError(f"the incident store URL is empty; set incident_db ({_EXAMPLES})")
    try:
        return make_url(url.strip())
    except ArgumentError:
        raise ConfigError(f"incident store URL {url!r} is not a database URL ({_EXAMPLES})") from None


def _sqlite_file(parsed: URL) -> Path | None:
    db = parsed.database or ""
    if db in ("", ":memory:") or db.startswith("file:") or parsed.query.get("mode") == "memory":
        return None
    return Path(db)


def _setup_sqlite(engine: Engine, on_disk: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy, not the sqlite3 module, emits BEGIN
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        if on_disk:
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's parent folder is created. ConfigError if unusable."""
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    sqlite_path = _sqlite_file(parsed) if backend == "sqlite" else None
    if sqlite_path is not None:
        try:
            sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"incident store {safe_url(parsed)}: cannot create folder {sqlite_path.parent}: {e}"
            ) from None
        kwargs["connect_args"] = {"timeout": 30}  # seconds to wait for another writer's lock
    elif backend == "postgresql":
        kwargs["pool_pre_ping"] = True  # survive a server restart under a long-running worker
        if parsed.get_driver_name() == "psycopg" and "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = create_engine(parsed, **kwargs)
    except NoSuchModuleError:
        raise ConfigError(
            f"incident store URL {safe_url(parsed)}: unknown database kind {parsed.drivername!r} "
            f"({_EXAMPLES})"
        ) from None
    except ImportError as e:
        raise ConfigError(
            f"incident store URL {safe_url(parsed)}: the driver for {parsed.drivername!r} is not "
            f"installed ({e}); for PostgreSQL use postgresql+psycopg:// (psycopg 3)"
        ) from None
    except (ArgumentError, TypeError, ValueError) as e:
        raise ConfigError(f"incident store URL {safe_url(parsed)}: {e}") from None
    if backend == "sqlite":
        _setup_sqlite(engine, on_disk=sqlite_path is not None)
    return engine


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    return cfg


def head_revision() -> str:
    """The newest migration shipped with this package."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise StorageError(f"no incident store migrations found in {MIGRATIONS_DIR}")
    return head


def upgrade(engine: Engine) -> str:
    """Apply every pending migration in one transaction; return the revision now in the database."""
    cfg = _alembic_config()
    try:
        with engine.execution_options(**{WRITE: True}).begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            revision = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}
            ).get_current_revision()
    except DBAPIError as e:
        raise StorageError(
            f"cannot migrate the incident store at {safe_url(engine.url)}: {e.orig or e}"
        ) from e
    if revision is None:
        raise StorageError(f"incident store at {safe_url(engine.url)}: no schema revision after migrating")
    return revision


def migrate(url: str) -> str:
    """Bring the database at ``url`` to the newest schema (a no-op when it is there); return it."""
    engine = make_engine(url)
    try:
        return upgrade(engine)
    finally:
        engine.dispose()
