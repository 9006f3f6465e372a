"""ClickHouse storage: connection, versioned schema, batched writer and read helpers.

Embedded (``chdb:///abs/path``) or server (``http(s)://...``) through one clickhouse-connect
client; the tables are documented in ``migrations/`` and in ClickHouse itself (column comments).
"""

from storage.clickhouse.client import Client, ConnectOptions, close_all, connect, served_url, served_url_file
from storage.clickhouse.queries import (
    count_events,
    events_per_model,
    read_checkpoints,
    recent_event_ids,
    recent_signals,
    signal_span,
    signals_between,
    signals_df,
)
from storage.clickhouse.rollups import Rollups
from storage.clickhouse.schema import applied_versions, migrate, render_migrations
from storage.clickhouse.writer import ClickHouseWriter

__all__ = [
    "ClickHouseWriter",
    "Client",
    "ConnectOptions",
    "Rollups",
    "applied_versions",
    "close_all",
    "connect",
    "count_events",
    "events_per_model",
    "migrate",
    "read_checkpoints",
    "recent_event_ids",
    "recent_signals",
    "render_migrations",
    "served_url",
    "served_url_file",
    "signal_span",
    "signals_between",
    "signals_df",
]
