"""One clickhouse-connect client for both targets: embedded chdb on disk, or a server over HTTP(S).

``chdb:///abs/path`` runs the ClickHouse engine in this process on that directory (created if
missing). chdb allows one data path per process and one process per path, so a second path, or
a path another process holds, fails here with a ``StorageError`` that says so.
``http://user:password@host:8123`` or ``https://...:8443`` reach a server or cluster: the scheme
decides TLS whatever the port, and every request is bounded by ``ConnectOptions`` timeouts, so a
server that accepts connections and never answers is reported within seconds, not minutes.

Query results carry timezone-aware UTC datetimes. Clients are cached per ``(dsn, database)``:
asking again returns the same client. Several clients on one chdb path are allowed (each has its
own session; they share the engine).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from raiwatch.core.errors import StorageError

__all__ = [
    "Client", "ConnectOptions", "close_all", "connect", "query_error", "redact", "scrub", "writes_a_file",
]  # fmt: skip

_clients: dict[tuple[str, str, str, bool], Client] = {}
_lock = threading.Lock()


def redact(dsn: str) -> str:
    """The DSN with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _open(dsn: str, options: ConnectOptions) -> Client:
    parts = urlsplit(dsn)
    if parts.scheme == "chdb":
        path = parts.path
        if parts.netloc or not path.startswith("/"):
            raise StorageError(
                f"ClickHouse DSN {dsn!r}: an embedded path must be absolute, as chdb:///abs/path"
            )
        Path(path).mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(dsn=dsn, tz_mode="aware")
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise StorageError(f"ClickHouse DSN {redact(dsn)!r} names no host")
        # The scheme decides TLS: clickhouse-connect would infer it from the port (443/8443 only)
        # and send an https DSN on any other port, credentials included, as plain HTTP.
        return clickhouse_connect.get_client(
            dsn=dsn,
            interface=parts.scheme,
            secure=parts.scheme == "https",
            verify=options.verify_tls,
            ca_cert=options.ca_cert or None,
            connect_timeout=options.connect_timeout_s,
            send_receive_timeout=options.send_receive_timeout_s,
            query_retries=0,
            tz_mode="aware",
        )
    raise StorageError(
        f"ClickHouse DSN {redact(dsn)!r}: unknown scheme {parts.scheme!r}; use chdb:///abs/path, "
        "http://host:8123 or https://host:8443"
    )


def _held_by_other_process(path: str) -> str | None:
    """If another process holds the chdb lock on ``path``, the PID line of its status file."""
    status = Path(path) / "status"
    try:
        with open(status, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                first = f.read(200).decode(errors="replace").splitlines()
                return first[0] if first else "unknown process"
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def scrub(text: str, dsn: str) -> str:
    """``text`` without the DSN's password (or any ``scheme://user:password@`` in it)."""
    password = urlsplit(dsn).password if "://" in dsn else None
    if password:
        text = text.replace(password, "***")
    return re.sub(r"://([^/:@\s]+):[^/@\s]*@", r"://\1:***@", text)


def held_by_another_process(dsn: str) -> bool:
    """Whether another process has this embedded chdb path open (a worker, say); False for a server."""
    if not dsn.startswith("chdb:"):
        return False
    holder = _held_by_other_process(urlsplit(dsn).path)
    return holder is not None and holder != f"PID: {os.getpid()}"


def served_url_file(dsn: str) -> Path:
    """Where a process holding an embedded path writes the URL it serves the path on (``<path>.url``)."""
    return Path(urlsplit(dsn).path.rstrip("/") + ".url")


def served_url(dsn: str) -> str | None:
    """The URL on which the process holding this embedded chdb path serves it read-only, as that
    process wrote it (``http://default:PASSWORD@host:port``: a secret, show it through ``redact``);
    None when none is written (ask ``held_by_another_process`` first). A ``StorageError`` when this
    user may not read it: the file is the password, readable by the worker's user only."""
    path = served_url_file(dsn)
    try:
        url = path.read_text().split()[0]
    except PermissionError:
        raise StorageError(
            f"{path} holds the password of the running worker's query endpoint and only the worker's "
            "user may read it: query as that user"
        ) from None
    except (OSError, IndexError):
        return None
    return url if url.startswith("http://") else None


def write_served_url(path: Path, url: str) -> None:
    """Write ``url`` (with its password) to ``path`` readable by this user only (mode 0600), whole:
    a reader sees the old file or the new one, never a part or a moment of wider permissions."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        os.fchmod(f.fileno(), 0o600)  # a leftover temporary file would keep its old mode
        f.write(f"{url}\n")
    os.replace(tmp, path)


def _explain(dsn: str, err: Exception, options: ConnectOptions) -> str:
    msg = scrub(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__, dsn)
    msg = re.sub(r"/\?[^\s)'\"]*", "/?...", msg)
    holder = _held_by_other_process(urlsplit(dsn).path) if dsn.startswith("chdb:") else None
    if "Read timed out" in msg:
        return (
            f"ClickHouse at {redact(dsn)}: no answer within {options.send_receive_timeout_s:g} s "
            "(clickhouse.timeout_s); is it overloaded, or is something else listening there?"
        )
    if "Connection refused" in msg or "connect timeout" in msg.lower():
        return f"ClickHouse at {redact(dsn)}: cannot connect ({msg.split(': ')[-1][:200]}); is the server up?"
    if "already initialized with path" in msg:
        hint = "this process already opened a different chdb path (one path per process)"
    elif (holder and holder != f"PID: {os.getpid()}") or "Cannot lock file" in msg:
        hint = f"another process has this chdb path open ({holder or 'lock held'}); one process per path"
    else:
        hint = "cannot connect"
    return f"ClickHouse at {redact(dsn)}: {hint}: {msg}"


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach a ClickHouse server (ignored by the embedded engine)."""

    connect_timeout_s: float = 5.0  # to open a connection
    send_receive_timeout_s: float = 15.0  # to send a request or wait for any answer to it
    verify_tls: bool = True  # check the server's certificate on https
    ca_cert: str = ""  # a CA bundle to check it against ("" = the system's)


def connect(
    dsn: str, database: str, options: ConnectOptions | None = None, name: str = "", readonly: bool = False
) -> Client:
    """The cached client for ``(dsn, database, name, readonly)``, with ``database`` as its default
    once it exists. A thread that queries beside the writer asks for a ``name`` of its own: a client
    is not shared between threads that use it at once.

    ``readonly``: the engine refuses every write and DDL of this client's (ClickHouse's
    ``readonly = 1``, set for its whole session: on chdb a per-query setting would cover only the
    last statement of several). On chdb it does not refuse ``INTO OUTFILE``: see ``writes_a_file``.

    On chdb the database is created here (no cluster to consider); on a server ``migrate``
    creates it. raiwatch code names the database in every statement either way.
    """
    key = (dsn, database, name, readonly)
    with _lock:
        client = _clients.get(key)
        if client is not None:
            return client
        try:
            client = _open(dsn, options or ConnectOptions())
            if dsn.startswith("chdb:"):
                client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
            exists = client.command(
                "SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": database}
            )
            if int(exists):
                client.database = database
            if readonly:
                client.set_client_setting("readonly", "1")
        except StorageError:
            raise
        except Exception as e:
            raise StorageError(_explain(dsn, e, options or ConnectOptions())) from e
        _clients[key] = client
        return client


def close_all() -> None:
    """Close every cached client (chdb releases its path once all its clients are closed)."""
    with _lock:
        for client in _clients.values():
            with contextlib.suppress(Exception):  # closing is best effort
                client.close()
        _clients.clear()


def writes_a_file(client: Client, sql: str) -> str | None:
    """Why ``sql`` is refused on a read-only embedded client although ``readonly = 1`` lets it run,
    or None. chdb runs ``INTO OUTFILE`` in this process, writing (or with ``TRUNCATE``, overwriting)
    any file this process may write, read-only or not; and it runs several statements in one
    call. ClickHouse's own parser (``formatQuery``) finds both; a ``DatabaseError`` when it cannot
    parse ``sql`` at all.
    """
    try:
        text = client.query("SELECT formatQuery({q:String})", parameters={"q": sql}).result_rows[0][0]
    except DatabaseError as e:
        if "Multi-statements are not allowed" in str(e):
            return "several statements in one query (give one)"
        raise
    # string literals and quoted names cannot hold the clause once ClickHouse formatted the query
    bare = re.sub(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"", "''", text)
    if re.search(r"\bINTO OUTFILE\b", bare):
        return "INTO OUTFILE writes a file"
    return None


def query_error(err: Exception) -> str:
    """A ClickHouse error about a query, in one line a person can act on (no client-added SQL).

    >>> query_error(Exception("Code: 60. DB::Exception: Unknown table expression identifier 'x'. "
    ...     "In scope SELECT * FROM x FORMAT Native. (UNKNOWN_TABLE)"))
    "Unknown table expression identifier 'x'. In scope SELECT * FROM x. (UNKNOWN_TABLE)"
    """
    text = str(err)
    body = text.split("DB::Exception: ", 1)[-1]
    name = re.search(r"\(([A-Z_]+)\)\s*$", body)
    body = re.sub(r"\s*\n?\s*FORMAT Native\b", "", body)
    body = body.split(". Expected one of:", 1)[0]
    body = re.sub(r"\s+", " ", body).strip()
    if len(body) > 300:
        body = body[:300] + "..."
    if name and name.group(1) not in body:
        body += f" ({name.group(1)})"
    return body
