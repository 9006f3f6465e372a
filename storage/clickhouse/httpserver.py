"""Serve an embedded chdb data path over (enough of) ClickHouse's HTTP interface.

``ClickHouseHTTPServer`` answers the requests the clickhouse-connect HTTP client makes (start-up
probes, ``command``, ``query``/``query_df`` in Native, ``insert`` in Native, lz4/zstd/gzip/deflate
on both directions), plain ``curl`` use (``?query=``, SQL in the body, TabSeparated by default,
``default_format``, ``param_<name>`` parameters, URL settings, multipart forms without files),
``GET /ping`` and ``GET /``. Errors come back as ClickHouse sends them: ``Code: N. DB::Exception:
...`` with the ``X-ClickHouse-Exception-Code`` header and ClickHouse's HTTP status for that code.

**Who may ask.** Every request but ``/ping`` and ``GET /`` carries the server's password, as
ClickHouse's ``default`` user: ``Authorization: Basic`` (curl's ``http://default:PASSWORD@host``,
clickhouse-connect), ``X-ClickHouse-User``/``X-ClickHouse-Key``, or ``user``/``password`` URL
parameters; otherwise 516 AUTHENTICATION_FAILED. The password is random per server unless given;
``dsn`` is the URL with it, for whoever may read the data.

**What a read-only server (the default) runs**, and what enforces it. chdb has one user
(``default``, every grant) and runs ``INTO OUTFILE`` on the client side of the process, where no
setting applies, so the engine's ``readonly`` alone is not a reader's sandbox (chdb 4.4, engine
26.9: ``readonly = 1`` refuses writes, DDL, setting changes and the table functions that read or
write outside the engine in a ``SELECT``, but not ``INTO OUTFILE``, ``KILL QUERY``, the scalar
``file()`` nor ``DESCRIBE`` of a table function). Each statement is therefore

1. parsed by the engine, not by this module: ``formatQuery`` returns the engine's own rendering
   of its AST (one statement, or SYNTAX_ERROR), and that rendering, not the request's text, is
   what runs. It is refused when it has an ``INTO OUTFILE`` clause (358; the formatter puts every
   top-level clause at the start of a line and escapes newlines in literals and names), or when it
   is not a ``SELECT``/``WITH``/``SHOW``/``DESCRIBE``/``EXPLAIN`` statement (164);
2. dumped by ``EXPLAIN AST`` with the request's parameters bound: a ``file`` function (also
   passed by name to a higher-order function) or any table function the engine lists but those
   that read nothing outside it (``numbers``, ``zeros``, ``values``, ``null``,
   ``generateRandom``, ``generate_series``, ``primes``, ``view``) is refused (497), wherever it
   appears (``DESCRIBE file(...)``, subqueries, lambdas). The dump leaves out a ``SHOW``'s
   ``WHERE``, so a ``SHOW`` whose rendering has a ``(`` (a function call) is refused too;
3. run with ``readonly = 1``, ``allow_python_table_function = 0`` and
   ``allow_introspection_functions = 0`` set after the request's URL settings, which are limited
   to formats, time zone, HTTP behaviour and the bounds below (others: 164, as for a ClickHouse
   readonly user), and with ``max_execution_time``, ``max_memory_usage`` (also the bound on
   temporary disk), ``max_result_rows`` and ``max_result_bytes`` (``result_overflow_mode =
   'throw'``) no client can raise: ``readonly = 1`` then refuses any later change, e.g. a
   ``SETTINGS`` clause. At most ``max_concurrent_queries`` statements run at once; others wait up
   to 5 s, then get 202.

A read-write server (``readonly=False``, for tests and trusted tools) runs any statement but
``INTO OUTFILE`` and ``FROM INFILE``: it can read and write whatever files the process can.
Response headers never carry request text: a ``query_id`` that is not a UUID is replaced, a time
zone or format name outside ``[A-Za-z0-9_+/-]`` is not echoed.

Every request runs in a chdb connection of its own (chdb runs connections in parallel), set up
with ``USE <database>`` and one ``SET``. Not supported: sessions (``session_id`` is accepted, but
each request starts a fresh session, so ``SET``/``USE``/temporary tables do not carry over),
external data, other users, ClickHouse's own ``compress=1`` block format,
``client_protocol_version`` (clients fall back to plain Native), progress headers. Results are
built in memory before they are sent (bounded by ``max_result_bytes``); a statement's text is at
most 1 MiB.

Run it with ``python -m storage.clickhouse.httpserver --path /abs/dir --port 8123 [--read-write]
[--url-file FILE]``; ``--url-file`` receives ``http://default:PASSWORD@host:port`` (mode 0600).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import email.policy
import faulthandler
import fcntl
import gzip
import hmac
import io
import json
import logging
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

import chdb
import lz4.frame

from raiwatch.core.errors import StorageError
from storage.clickhouse.client import write_served_url

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

try:  # a clickhouse-connect dependency before Python 3.14
    from backports import zstd as _zstd
except ImportError:  # pragma: no cover - Python 3.14+
    try:
        from compression import zstd as _zstd  # type: ignore[no-redef]
    except ImportError:
        _zstd = None  # type: ignore[assignment]

__all__ = ["USER", "ClickHouseHTTPServer", "Limits", "main"]

log = logging.getLogger(__name__)

_HEAD_BYTES = 1 << 20  # an INSERT's FORMAT clause must appear within this prefix; any other statement too
_READ_BYTES = 1 << 20
_DRAIN_LIMIT = 256 << 20
_FORM_BYTES = 16 << 20  # a multipart form (query and parameters, no files)
_KEEP_ALIVE_S = 30
_MAX_URI = 1 << 20  # ClickHouse's http_max_uri_size
_QUEUE_WAIT_S = 5.0  # a statement waits this long for a free slot (ClickHouse's queue_max_wait_ms)
_SHUTDOWN_S = 20.0  # past this, a stopping server dumps its threads' stacks to stderr and exits 1
USER = "default"  # the only user, as in ClickHouse out of the box

# What a read-only server lets a request's URL settings change (a ClickHouse readonly user may
# change none): how results are written, the time zone, HTTP behaviour, and the bounds, which it
# may only lower. Not, e.g., output_format_schema (writes a file) or format_template_row (reads one).
_READONLY_SETTINGS = frozenset(
    {
        "session_timezone", "date_time_output_format", "send_progress_in_http_headers", "wait_end_of_query",
        "enable_http_compression", "http_zlib_compression_level", "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close", "join_use_nulls", "extremes", "log_comment",
        "output_format_decimal_trailing_zeros", "output_format_write_statistics", "max_execution_time",
        "max_result_rows", "max_result_bytes", "max_memory_usage", "result_overflow_mode",
    }
)  # fmt: skip
_OUTPUT_FAMILIES = ("json", "csv", "tsv", "pretty", "arrow", "parquet", "orc", "native", "markdown", "values")
_READONLY_SETTING_PREFIXES = (
    *(f"output_format_{family}_" for family in _OUTPUT_FAMILIES),
    "format_csv_", "format_tsv_", "format_custom_",
)  # fmt: skip
# Statements a read-only server runs, by the first word of the engine's rendering of them.
_SERVED_KINDS = (b"SELECT", b"WITH", b"SHOW", b"DESCRIBE", b"EXPLAIN")
# Table functions that read nothing outside the engine; ``format`` is also a common scalar
# function (and readonly refuses the table function).
_INERT_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "values", "null", "generaterandom", "generate_series",
     "generateseries", "primes", "view", "format"}
)  # fmt: skip
_READS_FILES = "file"  # the scalar function that reads any file (chdb gives user_files_path no limit)
# In the engine's rendering every top-level clause starts a line; literals and names escape newlines.
_OUTFILE_RE = re.compile(rb"^INTO OUTFILE ", re.M)
_INFILE_RE = re.compile(rb"^INSERT INTO .* FROM INFILE '", re.S)
_FORMAT_RE = re.compile(rb"^FORMAT (\w+)$", re.M)
_NAME_RE = re.compile(r"[A-Za-z0-9_+/-]{1,64}")  # a format or time-zone name fit for a header
_PRINTABLE_RE = re.compile(r"[\x20-\x7e]*")
_WRAPPER_RE = re.compile(r"\.?\s*:?\s*In scope SELECT formatQuery\(.*\)\. \(", re.S)

# URL parameters that are part of the HTTP protocol, not settings.
_RESERVED = frozenset(
    {
        "query", "database", "default_format", "user", "password", "quota_key", "query_id", "session_id",
        "session_timeout", "session_check", "close_session", "compress", "decompress", "buffer_size",
        "wait_end_of_query", "client_protocol_version", "role", "stacktrace",
    }
)  # fmt: skip

# ClickHouse's exceptionCodeToHTTPStatus (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp); others are 500.
_STATUS_OF_CODES: dict[int, str] = {
    401: "194",  # REQUIRED_PASSWORD
    403: "192 193 516 512 497",  # UNKNOWN_USER, WRONG_PASSWORD, AUTHENTICATION_FAILED, ACCESS_DENIED, ...
    # BAD_ARGUMENTS, CANNOT_PARSE_*, SYNTAX_ERROR, TYPE_MISMATCH, ...
    400: "36 427 6 25 26 38 41 72 441 675 676 27 376 15 44 37 123 8 167 168 223 62 117 53 321",
    404: "60 46 47 50 56 81 115 152 63 73 336 78 511",  # UNKNOWN_TABLE, UNKNOWN_SETTING, ...
    413: "229",  # QUERY_IS_TOO_LARGE
    501: "48",  # NOT_IMPLEMENTED
    503: "209 76 439",  # SOCKET_TIMEOUT, CANNOT_OPEN_FILE, CANNOT_SCHEDULE_TASK
    411: "381",  # HTTP_LENGTH_REQUIRED
    408: "159",  # TIMEOUT_EXCEEDED
    415: "779",  # UNSUPPORTED_MEDIA_TYPE
}
_HTTP_STATUS = {int(code): status for status, codes in _STATUS_OF_CODES.items() for code in codes.split()}

_GET_IS_READONLY = (
    "For queries over HTTP, method GET implies readonly. You should use method POST for modifying queries."
)
_CODE_RE = re.compile(r"Code: (\d+)\.")
_SETTING_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN_RE = re.compile(
    rb"""(?P<ws>\s+)
    |(?P<comment>--[^\n]*|\#[ !][^\n]*)
    |(?P<block>/\*)
    |(?P<str>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`(?:[^`\\]|\\.|``)*`)
    |(?P<heredoc>\$[A-Za-z0-9_]*\$)
    |(?P<word>[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)
    |(?P<num>[0-9][A-Za-z0-9_.]*)
    |(?P<punct>.)""",
    re.VERBOSE | re.DOTALL,
)


class _ChError(Exception):
    """A ClickHouse-style exception: numeric code and ``Code: N. DB::Exception: ...`` text."""

    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code = code
        self.text = text

    @classmethod
    def make(cls, code: int, name: str, message: str) -> _ChError:
        return cls(code, f"Code: {code}. DB::Exception: {message}. ({name})")

    @classmethod
    def of(cls, exc: BaseException) -> _ChError:
        """The ClickHouse error inside a chdb exception's message (``Code: N. ...``), else code 1002."""
        if isinstance(exc, _ChError):
            return exc
        text = str(exc)
        at = text.find("Code: ")
        match = _CODE_RE.match(text, at) if at >= 0 else None
        if match is None:
            return cls.make(1002, "UNKNOWN_EXCEPTION", f"{type(exc).__name__}: {text}")
        return cls(int(match.group(1)), text[at:].strip())


# ---- request body ------------------------------------------------------------------------------


class _Body:
    """The request body as raw chunks (Content-Length or chunked transfer encoding)."""

    def __init__(self, rfile: io.BufferedIOBase, headers: Message):
        self._rfile = rfile
        self._chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self._left = 0 if self._chunked else int(headers.get("Content-Length") or 0)  # in this chunk
        self.done = not self._chunked and self._left == 0

    def _read(self, n: int) -> bytes:
        data = self._rfile.read(n)
        if len(data) != n:
            self.done = True
            raise _ChError.make(33, "CANNOT_READ_ALL_DATA", "The request body ended early")
        return data

    def chunks(self) -> Iterator[bytes]:
        """What is left of the body, in pieces of at most ``_READ_BYTES``."""
        while not self.done:
            if self._chunked and self._left == 0:
                line = self._rfile.readline(1024)
                try:
                    self._left = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.done = True
                    raise _ChError.make(
                        33, "CANNOT_READ_ALL_DATA", f"Bad chunk size line {line[:40]!r}"
                    ) from None
                if self._left == 0:
                    while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self.done = True
                    return
            n = min(self._left, _READ_BYTES)
            data = self._read(n)
            self._left -= n
            if self._left == 0:
                if self._chunked:
                    self._rfile.readline(1024)  # the chunk's CRLF
                else:
                    self.done = True
            yield data

    def drain(self) -> bool:
        """Read and drop what is left; False if more than ``_DRAIN_LIMIT`` bytes were left."""
        total = 0
        for chunk in self.chunks():
            total += len(chunk)
            if total > _DRAIN_LIMIT:
                return False
        return True


def _lz4_decoder() -> Any:
    return lz4.frame.LZ4FrameDecompressor()


def _zstd_decoder() -> Any:
    if _zstd is None:
        raise _ChError.make(89, "UNKNOWN_COMPRESSION_METHOD", "zstd is not available on this server")
    return _zstd.ZstdDecompressor()


_DECODERS: dict[str, Callable[[], Any]] = {
    "lz4": _lz4_decoder,
    "zstd": _zstd_decoder,
    "gzip": lambda: zlib.decompressobj(wbits=31),
    "deflate": zlib.decompressobj,
}
_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "lz4": lz4.frame.compress,
    "gzip": lambda data: gzip.compress(data, compresslevel=3),
    "deflate": zlib.compress,
}
if _zstd is not None:
    _ENCODERS["zstd"] = _zstd.compress


def _decoded(chunks: Iterator[bytes], encoding: str) -> Iterator[bytes]:
    """Decompress a body sent with ``Content-Encoding``; clients may send several frames in a row."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        yield from chunks
        return
    factory = _DECODERS.get(encoding)
    if factory is None:
        raise _ChError.make(89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown HTTP compression method '{encoding}'")
    decoder, partial = factory(), False
    for chunk in chunks:
        while chunk:
            try:
                out = decoder.decompress(chunk)
            except Exception as e:
                message = f"Cannot decompress the {encoding} body: {e}"
                raise _ChError.make(271, "CANNOT_DECOMPRESS", message) from e
            partial = True
            if out:
                yield out
            chunk = b""
            if decoder.eof:
                chunk, decoder, partial = decoder.unused_data, factory(), False
    if partial:
        raise _ChError.make(271, "CANNOT_DECOMPRESS", f"The {encoding} body ends inside a frame")


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a ``multipart/form-data`` body; file parts (external data) are refused."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_filename() is not None:
            raise _ChError.make(48, "NOT_IMPLEMENTED", "External data (file parts) is not supported here")
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload.decode()
    return fields


# ---- statement shape ---------------------------------------------------------------------------


def _tokens(sql: bytes) -> Iterator[tuple[str, bytes, int, int]]:
    """Tokens ``(kind, text, start, end)`` but blanks and comments; words upper-cased, strings as ``'``.

    Lazy: nothing after the last token taken is scanned.
    """
    pos, n = 0, len(sql)
    while pos < n:
        m = _TOKEN_RE.match(sql, pos)
        assert m is not None  # the last alternative matches any byte
        kind, start, pos = m.lastgroup or "punct", m.start(), m.end()
        if kind == "block":  # ClickHouse block comments nest
            depth = 1
            while depth and pos < n:
                close, opening = sql.find(b"*/", pos), sql.find(b"/*", pos)
                if close < 0:
                    pos = n
                elif 0 <= opening < close:
                    depth, pos = depth + 1, opening + 2
                else:
                    depth, pos = depth - 1, close + 2
        elif kind == "heredoc":
            close = sql.find(m.group(), pos)
            if close < 0:
                yield "punct", b"$", start, start + 1
                pos = start + 1
            else:
                pos = close + len(m.group())
                yield "str", b"'", start, pos
        elif kind == "str":
            yield kind, b"'", start, pos
        elif kind not in ("ws", "comment"):
            yield kind, m.group().upper() if kind == "word" else m.group(), start, pos


@dataclass
class _Shape:
    """Where an INSERT's inline data starts, found without parsing (the engine parses the rest).

    Nothing here decides what may run: the engine's own parse does (``_Engine._checked``).
    """

    empty: bool = True
    insert: bool = False
    fmt: str | None = None  # INSERT ... FORMAT: its format
    fmt_at: int = -1  # INSERT ... FORMAT: where the statement proper ends
    data_at: int = -1  # INSERT ... FORMAT: where its data starts


def _shape(sql: bytes) -> _Shape:
    """Classify ``sql``: empty, an INSERT, and for an INSERT with inline data where that starts.

    An INSERT's data starts after its ``FORMAT <name>`` and the blanks and one newline that follow,
    as in ClickHouse's ParserInsertQuery; the data itself is never scanned.
    """
    shape = _Shape()
    depth, prev, fmt_at = 0, b"", -1  # fmt_at: an INSERT's FORMAT keyword at depth 0
    for kind, text, start, end in _tokens(sql):
        if shape.empty:
            shape.empty, shape.insert = False, kind == "word" and text == b"INSERT"
            if not shape.insert:
                return shape
        if fmt_at >= 0:
            if kind == "word":
                shape.fmt, shape.fmt_at = sql[start:end].decode(), fmt_at
                shape.data_at = _data_start(sql, end)
            return shape
        if kind == "punct":
            if text in (b"(", b"[", b"{"):
                depth += 1
            elif text in (b")", b"]", b"}"):
                depth = max(depth - 1, 0)
            elif text == b";" and depth == 0:
                return shape
        elif kind == "word" and depth == 0:
            if prev in (b".", b"INTO", b"TABLE", b"FUNCTION"):
                pass  # a name, e.g. a table called "format"
            elif text in (b"SELECT", b"WITH", b"VALUES", b"INFILE"):
                return shape  # the rows come from the statement itself (or a file: refused later)
            elif text == b"FORMAT":
                fmt_at = start
        prev = text
    return shape


def _data_start(sql: bytes, at: int) -> int:
    if sql[at : at + 1] == b";":
        message = "You have excessive ';' symbol before data for INSERT: put whitespace before the data"
        raise _ChError.make(62, "SYNTAX_ERROR", message)
    while sql[at : at + 1] in (b" ", b"\t", b"\f"):
        at += 1
    if sql[at : at + 1] == b"\r":
        at += 1
    if sql[at : at + 1] == b"\n":
        at += 1
    return at


# ---- execution ---------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _bounded(value: str | None, bound: float) -> float:
    """``bound``, or the client's smaller positive value."""
    try:
        asked = float(value) if value is not None else 0.0
    except ValueError:
        asked = 0.0
    return asked if 0 < asked < bound else bound


def _content_type(fmt: str) -> str:
    f = fmt.lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if f.startswith("json"):
        return "application/json; charset=UTF-8"
    if f.startswith(("native", "rowbinary", "parquet", "arrow", "orc", "avro", "protobuf", "msgpack")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


@dataclass
class _Response:
    body: bytes = b""
    fmt: str | None = None  # X-ClickHouse-Format: set for a result set, even an empty one
    summary: dict[str, int] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def _locked(path: str) -> bool:
    """Whether another process holds chdb's lock on ``path`` (its ``status`` file)."""
    try:
        with open(os.path.join(path, "status"), "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class Limits:
    """What one statement of a request may use (0 = unbounded); a client may lower, not raise them."""

    max_execution_time_s: float = 30.0
    max_result_rows: int = 1_000_000
    max_result_bytes: int = 128 << 20  # uncompressed, as the engine counts its blocks
    max_memory_usage: int = 512 << 20  # per statement; also its temporary data on disk
    max_concurrent_queries: int = 2  # statements running at once (others wait, then get 202)


class _Engine:
    """Runs one HTTP request's statement on chdb, each in a chdb connection of its own."""

    def __init__(self, path: str, readonly: bool, limits: Limits, password: str):
        self.path = path
        self.readonly = readonly
        self.limits = limits
        self.password = password.encode()
        self.version = ""
        self.timezone = "UTC"
        self._anchor: Any = None
        self._slots = threading.BoundedSemaphore(limits.max_concurrent_queries or 1 << 30)
        self._refused_functions: frozenset[str] = frozenset({_READS_FILES})

    def open(self) -> None:
        """Open the anchor connection, which keeps the engine up between requests."""
        try:
            self._anchor = chdb.connect(self.path)
            info = self._anchor.query("SELECT version(), timezone()", "TabSeparated").bytes()
            names = self._anchor.query("SELECT name FROM system.table_functions", "TabSeparatedRaw").bytes()
        except Exception as e:
            self.close()
            hint = (
                "another process has it open (one process per path)"
                if _locked(self.path)
                else "cannot open it"
            )
            raise StorageError(f"chdb path {self.path}: {hint}: {e}") from e
        self.version, _, tz = info.decode().strip().partition("\t")
        self.timezone = tz or "UTC"
        table_functions = {name.lower() for name in names.decode().split()}
        self._refused_functions = frozenset(table_functions - _INERT_TABLE_FUNCTIONS | {_READS_FILES})

    def close(self) -> None:
        anchor, self._anchor = self._anchor, None
        if anchor is not None:
            with contextlib.suppress(Exception):
                anchor.close()

    def authenticate(self, params: dict[str, str], headers: Message) -> None:
        """Accept the request's credentials (ClickHouse's three ways to send them) or raise 516."""
        user, password = headers.get("X-ClickHouse-User"), headers.get("X-ClickHouse-Key")
        basic = headers.get("Authorization") or ""
        if password is None and basic[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(basic[6:].strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                password = None
        if password is None:
            user, password = params.get("user", user), params.get("password")
        given = (password or "").encode()
        if user not in (None, "", USER) or not hmac.compare_digest(given, self.password):
            message = (
                f"{user or USER}: Authentication failed: password is incorrect, or there is no such user"
            )
            raise _ChError.make(516, "AUTHENTICATION_FAILED", message)

    def _changes(self, settings: dict[str, str], is_get: bool) -> dict[str, str]:
        """URL settings, then the server's bounds, then ``readonly`` (applied in one SET)."""
        changes = dict(settings)
        asked_readonly = changes.pop("readonly", "0")
        if self.readonly:
            for name in changes:
                if name not in _READONLY_SETTINGS and not name.startswith(_READONLY_SETTING_PREFIXES):
                    message = f"Cannot modify '{name}' setting in readonly mode"
                    raise _ChError.make(164, "READONLY", message)
        limits = self.limits
        if limits.max_execution_time_s > 0:
            limit = _bounded(changes.get("max_execution_time"), limits.max_execution_time_s)
            changes["max_execution_time"] = f"{limit:g}"
        for name, bound in (
            ("max_result_rows", limits.max_result_rows),
            ("max_result_bytes", limits.max_result_bytes),
        ):
            if bound > 0:
                changes[name] = str(int(_bounded(changes.get(name), bound)))
                changes["result_overflow_mode"] = "throw"
        if limits.max_memory_usage > 0:
            memory = str(int(_bounded(changes.get("max_memory_usage"), limits.max_memory_usage)))
            changes["max_memory_usage"] = changes["max_temporary_data_on_disk_size_for_query"] = memory
        if self.readonly:
            # chdb turns both on; neither belongs to a reader (the Python table function reads this
            # process's variables). readonly = 1 comes last: it refuses any later change.
            changes["allow_introspection_functions"] = changes["allow_python_table_function"] = "0"
            changes["readonly"] = "1"
        elif is_get or asked_readonly == "2":
            changes["readonly"] = "2"
        elif asked_readonly == "1":
            changes["readonly"] = "1"
        return changes

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=_QUEUE_WAIT_S):
            message = f"Too many simultaneous queries. Maximum: {self.limits.max_concurrent_queries}"
            raise _ChError.make(202, "TOO_MANY_SIMULTANEOUS_QUERIES", message)
        try:
            yield
        finally:
            self._slots.release()

    @contextlib.contextmanager
    def _session(self, database: str | None, changes: dict[str, str]) -> Iterator[Any]:
        conn = chdb.connect(self.path)
        try:
            if database:
                conn.query(f"USE {_quote_ident(database)}", "TabSeparated")
            if changes:
                for name in changes:
                    if not _SETTING_RE.fullmatch(name):
                        raise _ChError.make(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
                sets = ", ".join(f"{name} = {_quote(value)}" for name, value in changes.items())
                conn.query(f"SET {sets}", "TabSeparated")
            yield conn
        finally:
            conn.close()

    def _checked(self, conn: Any, sql: bytes, binds: dict[str, str]) -> tuple[bytes, str | None]:
        """The statement to run, as the engine renders its parse of ``sql``, and its FORMAT clause.

        Raises what ClickHouse would for a statement this server does not run (see the module doc).
        """
        try:
            text = sql.decode()
        except UnicodeDecodeError as e:
            message = f"The query is not valid UTF-8 ({e.reason} at byte {e.start})"
            raise _ChError.make(62, "SYNTAX_ERROR", message) from None
        # One parse by the engine under this session's settings; query parameters take the
        # escaped text format, so backslashes, tabs and newlines are escaped for the trip.
        escaped = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        try:
            result = conn.query("SELECT formatQuery({q:String})", "TabSeparatedRaw", params={"q": escaped})
        except Exception as e:  # a syntax error: say it of the statement, not of this wrapper
            error = _ChError.of(e)
            raise _ChError(error.code, _WRAPPER_RE.sub(". (", error.text)) from None
        rendered = (result.bytes() or b"\n")[:-1]
        if _OUTFILE_RE.search(rendered):
            raise _ChError.make(358, "INTO_OUTFILE_NOT_ALLOWED", "INTO OUTFILE is not allowed")
        if _INFILE_RE.match(rendered):
            raise _ChError.make(78, "UNKNOWN_TYPE_OF_QUERY", "FROM INFILE is not allowed over HTTP")
        if self.readonly:
            if (rendered.split(None, 1) or [b""])[0] not in _SERVED_KINDS:
                message = (
                    f"{USER}: Cannot execute query in readonly mode (SELECT, SHOW, DESCRIBE, EXPLAIN only)"
                )
                raise _ChError.make(164, "READONLY", message)
            self._refuse_file_access(conn, rendered, binds)
        elif rendered.startswith(b"INSERT "):
            return sql, None  # the rendering drops an INSERT's inline VALUES
        fmt = _FORMAT_RE.search(rendered)
        return rendered, fmt.group(1).decode() if fmt else None

    def _refuse_file_access(self, conn: Any, rendered: bytes, binds: dict[str, str]) -> None:
        """Raise 497 if the engine's AST of ``rendered`` (parameters bound) calls a function that
        reads outside the engine. Lines are ``<indent><node> <name>...``; a name with a newline can
        only add lines, so this errs towards refusing."""
        if rendered.startswith(b"SHOW ") and b"(" in rendered:
            # EXPLAIN AST does not dump a SHOW's WHERE; without "(" a rendering calls no function
            message = "Not enough privileges: a SHOW statement with function calls is not served here"
            raise _ChError.make(497, "ACCESS_DENIED", message)
        tree = conn.query(b"EXPLAIN AST " + rendered, "TabSeparatedRaw", params=binds).bytes() or b""
        for line in tree.decode(errors="replace").splitlines():
            node, _, rest = line.strip().partition(" ")
            name = rest.split(" ", 1)[0].lower()
            if (node == "Function" and name in self._refused_functions) or (
                node == "Identifier" and name == _READS_FILES  # arrayMap(file, paths)
            ):
                message = f"Not enough privileges: {name}() reads outside the served data: not served here"
                raise _ChError.make(497, "ACCESS_DENIED", message)

    def handle(self, params: dict[str, str], headers: Message, body: _Body, is_get: bool) -> _Response:
        """Run the request's statement; raises ``_ChError`` for anything ClickHouse would refuse."""
        started = time.monotonic()
        self.authenticate(params, headers)
        for name in ("compress", "decompress"):
            if params.get(name, "0") not in ("", "0"):
                message = f"{name}=1 (ClickHouse's own block compression) is not supported"
                raise _ChError.make(48, "NOT_IMPLEMENTED", message)
        chunks = _decoded(body.chunks(), headers.get("Content-Encoding") or "")
        content_type = headers.get("Content-Type") or ""
        if content_type.lower().startswith("multipart/form-data"):
            params.update(_form_fields(content_type, _at_most(chunks, _FORM_BYTES, "The form")))
            chunks = iter(())
        head, shape = _statement(params.get("query", "").encode(), chunks, body.done)
        inline_insert = shape.insert and shape.data_at >= 0
        if inline_insert and self.readonly:  # refused before its data is read; the engine would too
            raise _ChError.make(164, "READONLY", f"{USER}: Cannot execute query in readonly mode")
        settings = {k: v for k, v in params.items() if k not in _RESERVED and not k.startswith("param_")}
        database = params.get("database") or headers.get("X-ClickHouse-Database")
        with self._slot(), self._session(database, self._changes(settings, is_get)) as conn:
            if inline_insert:
                response = _insert(conn, head, shape, chunks)
            else:
                binds = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
                sql, explicit = self._checked(conn, bytes(head), binds)
                default_format = params.get("default_format") or headers.get("X-ClickHouse-Format")
                fmt = default_format or "TabSeparated"
                response = _query(conn, sql, explicit, fmt, binds, self.limits.max_result_bytes)
        response.summary["elapsed_ns"] = int((time.monotonic() - started) * 1e9)
        timezone = settings.get("session_timezone") or self.timezone
        response.headers = {
            "X-ClickHouse-Query-Id": _query_id(params.get("query_id")),
            "X-ClickHouse-Timezone": timezone if _NAME_RE.fullmatch(timezone) else self.timezone,
            "X-ClickHouse-Summary": json.dumps({k: str(v) for k, v in response.summary.items()}),
        }
        return response


def _query_id(asked: str | None) -> str:
    """The client's query id when it is a UUID (rewritten from its value), else a new one."""
    try:
        return str(uuid.UUID(asked or ""))
    except ValueError:
        return str(uuid.uuid4())


def _at_most(chunks: Iterator[bytes], limit: int, what: str) -> bytes:
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise _ChError.make(62, "SYNTAX_ERROR", f"{what} is over {limit >> 20} MiB")
    return bytes(data)


def _statement(query: bytes, chunks: Iterator[bytes], no_body: bool) -> tuple[bytearray, _Shape]:
    """The ``query`` parameter and body as one text, as ClickHouse joins them, and its shape.

    An INSERT with inline data keeps only the body's first ``_HEAD_BYTES`` (more stays in
    ``chunks``); any other statement longer than that is refused.
    """
    head = bytearray(query + b"\n" if query and not no_body else query)
    complete = True
    for chunk in chunks:
        head += chunk
        if len(head) >= _HEAD_BYTES:
            complete = False
            break
    shape = _shape(bytes(head))
    if not complete and not (shape.insert and shape.data_at >= 0):
        message = f"Max query size exceeded: the statement is over {_HEAD_BYTES >> 20} MiB"
        raise _ChError.make(62, "SYNTAX_ERROR", message)
    if shape.empty:
        raise _ChError.make(62, "SYNTAX_ERROR", "Empty query")
    return head, shape


_SETTINGS_TAIL = re.compile(r"\s+SETTINGS\s+.*$", re.IGNORECASE | re.DOTALL)


def _insert(conn: Any, head: bytearray, shape: _Shape, chunks: Iterator[bytes]) -> _Response:
    """Write an INSERT's inline data (the rest of ``head``, then ``chunks``) to a temporary file and
    insert it with ``FROM INFILE``.

    Not chdb's streaming ``send_insert``: measured with chdb 4.4, its ``finish()`` reports every
    row written when the engine refused them (a violated constraint, say) and wrote none, so a
    client would be told its data was stored while it was lost. ``FROM INFILE`` raises the error.
    """
    assert shape.fmt is not None
    statement = bytes(head[: shape.fmt_at]).decode(errors="replace").rstrip()
    settings = ""
    tail = _SETTINGS_TAIL.search(statement)
    if tail:  # INSERT ... SETTINGS a=1 FORMAT F  ->  INSERT ... FROM INFILE 'x' SETTINGS a=1 FORMAT F
        statement, settings = statement[: tail.start()], tail.group(0)
    fd, path = tempfile.mkstemp(prefix="raiwatch-insert-", suffix=".data")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head[shape.data_at :])
            for chunk in chunks:
                f.write(chunk)
        result = conn.query(f"{statement} FROM INFILE '{path}'{settings} FORMAT {shape.fmt}", "TabSeparated")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return _Response(summary={"written_rows": result.rows_written(), "written_bytes": result.bytes_written()})


def _query(
    conn: Any, sql: bytes, explicit: str | None, default_format: str, binds: dict[str, str], max_bytes: int
) -> _Response:
    """Run any other statement, with an explicit FORMAT or the request's default format; refuse a
    result over ``max_bytes`` as sent (the engine's own count misses constant columns)."""
    fmt = explicit or default_format
    if not _NAME_RE.fullmatch(fmt):  # it goes back in a header
        raise _ChError.make(73, "UNKNOWN_FORMAT", f"Unknown format {fmt[:64]!r}")
    # With the default TabSeparated, ask for names too: a result set always has that line, a
    # statement without one (DDL, SET, INSERT ... SELECT) has none. Like ClickHouse, only the
    # former gets X-ClickHouse-Format (clickhouse-connect's command() tells them apart by it).
    names = explicit is None and fmt in ("TabSeparated", "TSV")
    result = conn.query(sql, "TabSeparatedWithNames" if names else fmt, params=binds)
    if 0 < max_bytes < result.size():  # checked before the result is copied out of the engine
        message = f"Limit for result exceeded, max bytes: {max_bytes}, current bytes: {result.size()}"
        raise _ChError.make(396, "TOO_MANY_ROWS_OR_BYTES", message)
    data = result.bytes() or b""
    out_fmt: str | None = fmt
    if names:
        out_fmt = fmt if data else None
        data = data[data.find(b"\n") + 1 :] if data else b""
    summary = {
        "read_rows": result.rows_read(),
        "read_bytes": result.bytes_read(),
        "written_rows": result.rows_written(),
        "written_bytes": result.bytes_written(),
    }
    return _Response(data, out_fmt, summary)


# ---- HTTP --------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], engine: _Engine):
        super().__init__(address, _Handler)
        self.engine = engine


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chdb-http"
    timeout = _KEEP_ALIVE_S
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: _HTTPServer
    sys_version = ""

    def handle_one_request(self) -> None:
        """As the base class, with ClickHouse's URI limit (http_max_uri_size, 1 MiB) instead of 64 KiB."""
        try:
            self.raw_requestline = self.rfile.readline(_MAX_URI + 1)
            if len(self.raw_requestline) > _MAX_URI:
                self.requestline = self.request_version = self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            method = getattr(self, f"do_{self.command}", None)
            if method is None:
                self.send_error(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({self.command!r})")
                return
            method()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve(is_get=True)

    def do_POST(self) -> None:
        self._serve(is_get=False)

    def _serve(self, is_get: bool) -> None:
        engine = self.server.engine
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        body = _Body(self.rfile, self.headers)
        try:
            health = url.path in ("/ping", "/replicas_status")
            if health or (is_get and url.path == "/" and "query" not in params):
                body.drain()
                self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return
            response = engine.handle(params, self.headers, body, is_get)
        except Exception as e:
            error = _ChError.of(e)
            if not isinstance(e, _ChError) and _CODE_RE.search(str(e)) is None:
                log.warning("unexpected error serving %s", self.path, exc_info=True)
            text = error.text if "(version " in error.text else f"{error.text} (version {engine.version})"
            if error.code == 164 and is_get and not engine.readonly:
                text = text.replace("readonly mode.", f"readonly mode. {_GET_IS_READONLY}", 1)
            try:
                drained = body.drain()
            except Exception:
                drained = False
            if not drained:  # unread body bytes would be taken for the next request
                self.close_connection = True
            self._send(
                _HTTP_STATUS.get(error.code, 500),
                text.encode() + b"\n",
                {"Content-Type": "text/plain; charset=UTF-8", "X-ClickHouse-Exception-Code": str(error.code)},
            )
            return
        headers = dict(response.headers)
        if response.fmt is not None:
            headers["X-ClickHouse-Format"] = response.fmt
            headers["Content-Type"] = _content_type(response.fmt)
        else:
            headers["Content-Type"] = "text/plain; charset=UTF-8"
        data = response.body
        encoding = self._encoding(params)
        if encoding is not None:
            data = _ENCODERS[encoding](data)
            headers["Content-Encoding"] = encoding
        self._send(200, data, headers)

    def _encoding(self, params: dict[str, str]) -> str | None:
        """The client's first accepted encoding this server has (chdb's enable_http_compression is 1)."""
        if params.get("enable_http_compression", "1") in ("0", "false"):
            return None
        for item in (self.headers.get("Accept-Encoding") or "").split(","):
            name = item.split(";")[0].strip().lower()
            if name in _ENCODERS:
                return name
        return None

    def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if _PRINTABLE_RE.fullmatch(value):  # never a line break (header injection) in a value
                self.send_header(name, value)
            else:
                log.warning("dropped response header %s: not printable ASCII", name)
        self.send_header("X-ClickHouse-Server-Display-Name", "chdb")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        else:
            self.send_header("Keep-Alive", f"timeout={_KEEP_ALIVE_S}")
        self.end_headers()
        self.wfile.write(data)


class ClickHouseHTTPServer:
    """ClickHouse's HTTP interface over an embedded chdb data path, served from a background thread.

    ``client_or_path`` is a clickhouse-connect chdb client (``get_client(dsn="chdb:///abs/path")``)
    or an absolute directory (created if missing). chdb allows one data path per process and one
    process per path. The socket is bound here (``port=0`` picks a free port); ``start`` opens the
    path and serves. ``readonly`` serves readers only (see the module doc); ``limits`` bound every
    statement; ``password`` is what requests must send as user ``default`` (None: a random one).
    """

    def __init__(
        self,
        client_or_path: Client | str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        readonly: bool = True,
        limits: Limits | None = None,
        password: str | None = None,
    ):
        if isinstance(client_or_path, str | os.PathLike):
            path = os.fspath(client_or_path)
            if not os.path.isabs(path):
                raise StorageError(f"chdb path {path!r} must be absolute")
            os.makedirs(path, exist_ok=True)
            path = os.path.realpath(path)
        else:
            path = getattr(client_or_path, "path", None)
            if not isinstance(path, str):
                raise TypeError(
                    "client_or_path must be an absolute path or a clickhouse-connect chdb client "
                    f"(get_client(dsn='chdb:///abs/path')), not {type(client_or_path).__name__}"
                )
            if not path.startswith((":memory:", "file:")):  # as clickhouse-connect opened it:
                path = os.path.realpath(path)  # chdb compares engine paths literally
        self._client = client_or_path  # keeps a given client's engine up while serving
        self.path = path
        self.password = secrets.token_urlsafe(32) if password is None else password
        self._engine = _Engine(path, readonly, limits or Limits(), self.password)
        self._httpd = _HTTPServer((host, port), self._engine)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound socket (no credentials: fit for messages)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def dsn(self) -> str:
        """``http://default:PASSWORD@host:port``: what a client connects with. A secret."""
        host, port = self._httpd.server_address[:2]
        return f"http://{USER}:{quote(self.password, safe='')}@{host!s}:{port}"

    def start(self) -> None:
        """Open the chdb path and serve requests in a background thread."""
        if self._thread is not None:
            return
        try:
            self._engine.open()
        except BaseException:
            self._httpd.server_close()
            raise
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="clickhouse-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and release the chdb path (requests in flight may finish)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
        self._engine.close()


def main(argv: list[str] | None = None) -> int:
    """Serve ``--path`` until SIGTERM or SIGINT; prints one ``serving ... on ...`` line once ready.

    A stop that takes over 20 s prints every thread's stack to stderr and exits 1.
    """
    parser = argparse.ArgumentParser(
        prog="python -m storage.clickhouse.httpserver",
        description="Serve a chdb data path over ClickHouse's HTTP interface.",
    )
    parser.add_argument("--path", required=True, help="absolute chdb data directory (created if missing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123, help="0 picks a free port")
    parser.add_argument("--read-write", action="store_true", help="allow inserts and DDL (default read-only)")
    parser.add_argument("--url-file", help="write http://default:PASSWORD@host:port here (mode 0600)")
    parser.add_argument(
        "--password-env", metavar="NAME", help="read the password from this environment variable (or random)"
    )
    limits = Limits()
    for name, kind in (
        ("max_execution_time_s", float), ("max_result_rows", int), ("max_result_bytes", int),
        ("max_memory_usage", int), ("max_concurrent_queries", int),
    ):  # fmt: skip
        flag = "--" + name.removesuffix("_s").replace("_", "-")
        parser.add_argument(flag, dest=name, type=kind, default=getattr(limits, name), help="0 = none")
    args = parser.parse_args(argv)
    if not os.path.isabs(args.path):
        parser.error(f"--path must be absolute, not {args.path!r}")
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            parser.error(f"--password-env {args.password_env}: that variable is not set or empty")
    # SIGTERM and SIGINT stay blocked in every thread started from here on (chdb's own too) and are
    # taken by sigwait below. A handler setting an Event could deadlock on the Event's lock, and a
    # signal delivered to another thread would not wake a main thread blocked in Event.wait.
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        server = ClickHouseHTTPServer(
            args.path,
            args.host,
            args.port,
            readonly=not args.read_write,
            limits=Limits(**{name: getattr(args, name) for name in Limits.__dataclass_fields__}),
            password=password,
        )
        server.start()
        if args.url_file:
            write_served_url(Path(args.url_file), server.dsn)
    except (StorageError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"serving chdb://{server.path} on {server.url}", flush=True)
    try:
        signal.sigwait(signals)
    finally:
        # A shutdown that hangs prints every thread's stack and exits 1 rather than waiting forever.
        faulthandler.dump_traceback_later(_SHUTDOWN_S, exit=True)
        server.stop()
        if args.url_file:
            Path(args.url_file).unlink(missing_ok=True)
    faulthandler.cancel_dump_traceback_later()
    return 0


if __name__ == "__main__":
    sys.exit(main())
