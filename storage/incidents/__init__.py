"""SQL incident store (SQLAlchemy 2 + Alembic): SQLite file by default, PostgreSQL in production.

store = IncidentStore("sqlite:///var/incidents.db")   # migrates to the newest schema
store.apply(changes)                                  # the rule engine's IncidentChanges
store.acknowledge("3f2a", actor="alice")              # a unique id prefix is enough
"""

from storage.incidents.db import head_revision, make_engine, migrate
from storage.incidents.models import Base, IncidentEventRow, IncidentRow
from storage.incidents.store import IncidentStore

__all__ = [
    "Base",
    "IncidentEventRow",
    "IncidentRow",
    "IncidentStore",
    "head_revision",
    "make_engine",
    "migrate",
]
