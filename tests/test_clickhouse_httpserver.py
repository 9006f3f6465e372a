"""ClickHouseHTTPServer against clickhouse-connect's HTTP client and plain HTTP requests.

chdb opens one data path per process (and this pytest process may already hold another one), so
every server here is a child process, ``python -m storage.clickhouse.httpserver``, reached over
HTTP only. Readiness is its ``serving ...`` line on stdout, awaited with a deadline; its password
comes from the ``--url-file`` it writes, and ``http()`` sends it as curl does for ``user:pw@host``.
"""

from __future__ import annotations

import base64
import selectors
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import clickhouse_connect
import lz4.frame
import pandas as pd
import pytest
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.harness import rss_mb

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
T0 = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
COLUMNS = ["id", "model", "score", "ts", "labels", "tags"]
TYPES = [
    "UInt32",
    "String",
    "Nullable(Float64)",
    "DateTime64(3, 'UTC')",
    "Map(LowCardinality(String), String)",
    "Array(LowCardinality(String))",
]

# A chdb client of this process handed to the server: both see one engine.
IN_PROCESS = """
import sys
import clickhouse_connect
from clickhouse_connect.driver.exceptions import DatabaseError
from storage.clickhouse.httpserver import ClickHouseHTTPServer

local = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1], tz_mode="aware")
local.command("CREATE TABLE default.shared (a UInt8) ENGINE = MergeTree ORDER BY a")
local.command("INSERT INTO default.shared VALUES (1)")
server = ClickHouseHTTPServer(local)  # read-only by default
server.start()
try:
    clickhouse_connect.get_client(dsn=server.dsn).command("INSERT INTO default.shared VALUES (9)")
except DatabaseError as e:
    print("refused", e.code)
server.stop()
server = ClickHouseHTTPServer(local, readonly=False)
server.start()
remote = clickhouse_connect.get_client(dsn=server.dsn)
remote.insert("shared", [[2]], column_names=["a"], column_type_names=["UInt8"], database="default")
print(remote.command("SELECT groupArray(a) FROM (SELECT a FROM default.shared ORDER BY a)"))
server.stop()
print(local.command("SELECT count() FROM default.shared"))
# Why the server parses with the engine: readonly = 1 alone lets chdb write INTO OUTFILE.
import chdb, os
conn = chdb.connect(local.path)
conn.query("SET readonly = 1", "TabSeparated")
conn.query(f"SELECT 1 INTO OUTFILE '{sys.argv[1]}.written'", "TabSeparated")
conn.close()
print("engine alone wrote", os.path.exists(sys.argv[1] + ".written"))
"""


class Server:
    """One ``python -m storage.clickhouse.httpserver`` child process on ``path``."""

    def __init__(self, path: Path, *flags: str):
        self.path = path
        self.flags = flags
        self.port = 0
        self.password = ""
        self.log = path.parent / f"{path.name}.stderr"
        self.url_file = path.parent / f"{path.name}.url"
        self.proc: subprocess.Popen[str] | None = None

    @property
    def plain_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The URL with the password, as the server writes it for its clients."""
        return f"http://default:{self.password}@127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server (on the port it had, if any) and wait for its ready line."""
        cmd = [sys.executable, "-m", "storage.clickhouse.httpserver", "--path", str(self.path)]
        cmd += ["--port", str(self.port), "--url-file", str(self.url_file), *self.flags]
        with open(self.log, "a") as err:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while not sel.select(timeout=max(deadline - time.monotonic(), 0)):
                if time.monotonic() >= deadline:
                    self.stop(signal.SIGKILL)
                    pytest.fail(f"server not ready after {START_TIMEOUT_S} s: {self.log.read_text()}")
        line = self.proc.stdout.readline().strip()
        prefix = f"serving chdb://{self.path} on http://127.0.0.1:"
        assert line.startswith(prefix), f"unexpected ready line {line!r}; stderr: {self.log.read_text()}"
        self.port = int(line.removeprefix(prefix))
        written = urllib.parse.urlsplit(self.url_file.read_text().strip())
        assert (written.username, written.port) == ("default", self.port)
        self.password = urllib.parse.unquote(written.password or "")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=30)  # the server dumps its stacks and exits 1 after 20 s
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"server still running 30 s after signal {sig}; stderr: {self.log.read_text()}")
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return rc

    def client(self, **kwargs: Any) -> Client:
        return clickhouse_connect.get_client(
            host="127.0.0.1", port=self.port, username="default", password=self.password, tz_mode="aware",
            **kwargs,
        )  # fmt: skip


def http(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    """``(status, headers, body)`` of one plain HTTP request, as curl would make it (``user:pw@``
    in the URL becomes a Basic Authorization header)."""
    parts = urllib.parse.urlsplit(url)
    headers = dict(headers or {})
    if parts.username is not None:
        pair = f"{parts.username}:{urllib.parse.unquote(parts.password or '')}".encode()
        headers.setdefault("Authorization", "Basic " + base64.b64encode(pair).decode())
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def sql_url(server: Server, sql: str, **params: str) -> str:
    return f"{server.url}/?{urllib.parse.urlencode({'query': sql, **params})}"


def sample(n: int) -> list[list[Any]]:
    """Column-oriented rows: every third score NULL, varied maps and arrays."""
    return [
        list(range(n)),
        [f"model-{i % 7}" for i in range(n)],
        [None if i % 3 == 0 else i / 4 for i in range(n)],
        [T0 + timedelta(milliseconds=1500 * i) for i in range(n)],
        [{"arm": "AB"[i % 2], "region": f"r{i % 5}"} if i % 4 else {} for i in range(n)],
        [[f"t{j}" for j in range(i % 4)] for i in range(n)],
    ]


def create_table(client: Client, table: str) -> None:
    columns = ", ".join(f"{name} {ch_type}" for name, ch_type in zip(COLUMNS, TYPES, strict=True))
    client.command(f"CREATE TABLE {table} ({columns}) ENGINE = MergeTree ORDER BY id")


def insert(
    client: Client, table: str, columns: list[list[Any]], settings: dict[str, Any] | None = None
) -> int:
    summary = client.insert(
        table,
        columns,
        column_names=COLUMNS,
        column_types=[get_from_name(t) for t in TYPES],
        column_oriented=True,
        settings=settings,
    )
    return summary.written_rows


@pytest.fixture(scope="module")
def rw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("chdb_http") / "rw", "--read-write")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ro(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A read-only server (max 5000 result rows of at most 16 MiB, 0.5 s and 256 MiB per query) over
    a path holding ``ro.t`` (20 rows)."""
    path = tmp_path_factory.mktemp("chdb_http") / "ro"
    setup = Server(path, "--read-write")
    setup.start()
    client = setup.client()
    client.command("CREATE DATABASE ro")
    create_table(client, "ro.t")
    insert(client, "ro.t", sample(20))
    client.close()
    assert setup.stop(signal.SIGTERM) == 0  # a clean shutdown on SIGTERM
    server = Server(
        path, "--max-result-rows", "5000", "--max-execution-time", "0.5",
        "--max-memory-usage", str(256 << 20), "--max-result-bytes", str(16 << 20),
    )  # fmt: skip
    server.start()
    yield server
    assert server.stop(signal.SIGINT) == 0


def test_ping_and_curl_style_requests(rw: Server) -> None:
    assert http(f"{rw.url}/ping")[::2] == (200, b"Ok.\n")
    assert http(f"{rw.url}/")[::2] == (200, b"Ok.\n")

    status, headers, body = http(sql_url(rw, "SELECT 1"))
    assert (status, body, headers["X-ClickHouse-Format"]) == (200, b"1\n", "TabSeparated")
    assert http(f"{rw.url}/", b"SELECT 1 FORMAT JSONEachRow")[::2] == (200, b'{"1":1}\n')
    assert http(sql_url(rw, "SELECT 2 AS x", default_format="JSONEachRow"))[2] == b'{"x":2}\n'
    assert http(sql_url(rw, "SELECT {p:String}", param_p="a\\tb"))[2] == b"a\\tb\n"  # TSV-escaped both ways

    assert (
        http(f"{rw.url}/", b"CREATE TABLE curl (a UInt8, s String) ENGINE = MergeTree ORDER BY a")[0] == 200
    )
    assert http(sql_url(rw, "INSERT INTO curl FORMAT CSV"), b"1,one\n2,two\n")[0] == 200
    compressed = lz4.frame.compress(b"INSERT INTO curl (a, s) FORMAT TSV\n3\tthree\n")
    assert http(f"{rw.url}/", compressed, {"Content-Encoding": "lz4"})[0] == 200
    status, headers, body = http(
        sql_url(rw, "SELECT s FROM curl ORDER BY a"), None, {"Accept-Encoding": "lz4"}
    )
    assert headers["Content-Encoding"] == "lz4"
    assert lz4.frame.decompress(body) == b"one\ntwo\nthree\n"

    # GET implies readonly, as in ClickHouse
    status, headers, body = http(sql_url(rw, "INSERT INTO curl VALUES (4, 'four')"))
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164")
    assert b"method GET implies readonly" in body
    assert http(sql_url(rw, "SELECT count() FROM curl"))[2] == b"3\n"


def test_client_insert_query_command(rw: Server) -> None:
    client = rw.client()
    assert client.write_compression == "lz4"  # inserts are sent lz4-compressed by default
    assert client.command("SELECT version()") == client.server_version
    client.command("CREATE DATABASE IF NOT EXISTS app")
    create_table(client, "app.events")
    columns = sample(3000)
    assert insert(client, "app.events", columns, {"optimize_on_insert": 0}) == 3000

    result = client.query("SELECT * FROM app.events ORDER BY id")
    assert result.column_names == tuple(COLUMNS)
    assert [list(col) for col in zip(*result.result_rows, strict=True)] == columns
    ts = result.result_rows[1][3]
    assert ts == T0 + timedelta(milliseconds=1500) and ts.utcoffset() == timedelta(0)

    df = client.query_df("SELECT * FROM app.events WHERE id < {n:UInt32} ORDER BY id", parameters={"n": 1000})
    assert len(df) == 1000
    assert isinstance(df["ts"].dtype, pd.DatetimeTZDtype) and str(df["ts"].dt.tz) == "UTC"
    assert df["ts"].iloc[2] == pd.Timestamp(T0 + timedelta(seconds=3))
    assert df["score"].isna().sum() == 334 and df["score"].iloc[1] == 0.25
    assert df["labels"].iloc[5] == {"arm": "B", "region": "r0"} and list(df["tags"].iloc[3]) == [
        "t0",
        "t1",
        "t2",
    ]

    sql = "SELECT count() FROM app.events WHERE model = {m:String} AND has(tags, {t:String})"
    assert client.command(sql, parameters={"m": "model-3", "t": "t2"}) == sum(
        1 for i in range(3000) if i % 7 == 3 and i % 4 == 3
    )
    text = "it's\ta 'test'"
    assert client.query("SELECT {s:String}", parameters={"s": text}).result_rows == [(text,)]
    assert client.command("SELECT {s:String}", parameters={"s": text}) == "it\\'s\\ta \\'test\\'"  # TSV
    assert client.command("SELECT 1 WHERE 0") == ""  # a result set, empty: not a summary
    assert client.command("SELECT id, model FROM app.events ORDER BY id LIMIT 1") == ["0", "model-0"]


@pytest.mark.parametrize("compress", ["zstd", "gzip", False])
def test_other_compressions(rw: Server, compress: str | bool) -> None:
    client = clickhouse_connect.get_client(dsn=rw.url, compress=compress, tz_mode="aware")
    table = f"app.c_{compress}".lower()
    client.command("CREATE DATABASE IF NOT EXISTS app")
    create_table(client, table)
    assert insert(client, table, sample(500)) == 500
    assert client.query(f"SELECT sum(id), count(score) FROM {table}").result_rows == [(124750, 333)]


def test_form_encoded_and_long_parameters(rw: Server) -> None:
    client = rw.client(form_encode_query_params=True)  # parameters in a multipart form body
    assert client.query("SELECT {p:String} AS p", parameters={"p": "form'value"}).result_rows == [
        ("form'value",)
    ]
    long = "x" * 200_000  # above http.server's 64 KiB request line, within ClickHouse's 1 MiB
    assert rw.client().command("SELECT length({p:String})", parameters={"p": long}) == len(long)


def test_errors_come_back_as_clickhouse_errors(rw: Server, tmp_path: Path) -> None:
    client = rw.client()
    with pytest.raises(DatabaseError) as raised:
        client.command("SELEC 1")
    assert raised.value.code == 62 and "DB::Exception: Syntax error" in str(raised.value)
    with pytest.raises(DatabaseError) as raised:
        client.query("SELECT * FROM app.missing")
    assert raised.value.code == 60 and "UNKNOWN_TABLE" in str(raised.value)
    with pytest.raises(DatabaseError) as raised:
        insert(client, "app.missing", sample(2000))  # the body is drained: the connection stays usable
    assert raised.value.code == 60
    assert client.command("SELECT 1") == 1

    status, headers, body = http(sql_url(rw, "SELEC 1"))
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")
    assert body.startswith(b"Code: 62. DB::Exception: Syntax error") and b"(version " in body
    assert http(sql_url(rw, "SELECT * FROM nowhere"))[0] == 404
    assert http(f"{rw.url}/", b"SELECT 1; SELECT 2")[1]["X-ClickHouse-Exception-Code"] == "62"
    assert http(sql_url(rw, "SELECT 1", bogus_setting="1"))[1]["X-ClickHouse-Exception-Code"] == "115"
    outfile = tmp_path / "out.csv"
    status, headers, _ = http(f"{rw.url}/", f"SELECT 1 INTO OUTFILE '{outfile}' FORMAT CSV".encode())
    assert headers["X-ClickHouse-Exception-Code"] == "358" and not outfile.exists()
    infile = f"INSERT INTO curl (s) FROM INFILE '{ROOT / 'README.md'}' FORMAT LineAsString"
    assert http(f"{rw.url}/", infile.encode())[1]["X-ClickHouse-Exception-Code"] == "78"


def test_requests_run_in_parallel(rw: Server) -> None:
    statuses: list[int] = []

    def one() -> None:
        statuses.append(http(sql_url(rw, "SELECT sleep(0.6)"))[0])

    started = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    assert time.monotonic() - started < 3.0  # 4.8 s one after another


def test_data_survives_kill_and_restart(rw: Server) -> None:
    client = rw.client()
    client.command("CREATE DATABASE IF NOT EXISTS app")
    create_table(client, "app.durable")
    assert insert(client, "app.durable", sample(1234)) == 1234
    client.close()
    port = rw.port
    assert rw.stop(signal.SIGKILL) == -signal.SIGKILL
    rw.start()
    assert rw.port == port
    client = rw.client()
    assert client.command("SELECT count() FROM app.durable") == 1234
    assert client.query("SELECT max(ts) FROM app.durable").result_rows == [
        (T0 + timedelta(milliseconds=1500 * 1233),)
    ]


def test_readonly_refuses_writes_and_bounds_results(ro: Server) -> None:
    client = ro.client()
    assert client.command("SELECT count() FROM ro.t") == 20
    assert len(client.query("SELECT number FROM numbers(4000)").result_rows) == 4000
    for write in (
        lambda: client.command("CREATE TABLE ro.u (a UInt8) ENGINE = Memory"),
        lambda: client.command("INSERT INTO ro.t (id) SELECT 100"),
        lambda: client.command("DROP TABLE ro.t"),
        lambda: insert(client, "ro.t", sample(50)),
        lambda: client.query("SELECT number FROM numbers(10000) SETTINGS max_result_rows = 0"),
        lambda: client.command("KILL QUERY WHERE 1"),  # readonly = 1 lets this one through
        lambda: client.command("SYSTEM DROP MARK CACHE"),
    ):
        with pytest.raises(DatabaseError) as raised:
            write()
        assert raised.value.code == 164 and "readonly" in str(raised.value)

    with pytest.raises(DatabaseError) as raised:
        client.query("SELECT number FROM numbers(10000)")
    assert raised.value.code == 396  # TOO_MANY_ROWS_OR_BYTES
    headers = http(sql_url(ro, "SELECT number FROM numbers(10000)", max_result_rows="0"))[1]
    assert headers["X-ClickHouse-Exception-Code"] == "396"  # a URL setting cannot lift the bound
    with pytest.raises(DatabaseError) as raised:
        client.query("SELECT sum(number) FROM numbers(1000000000000)")
    assert raised.value.code == 159  # TIMEOUT_EXCEEDED after 0.5 s
    assert client.command("SELECT count() FROM ro.t") == 20


def test_serves_a_chdb_client_of_its_own_process(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, str(tmp_path / "shared")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:4] == ["refused 164", "[1,2]", "2", "engine alone wrote True"]


def test_an_insert_the_engine_refuses_is_reported_and_writes_nothing(rw: Server) -> None:
    """chdb's streaming insert reports such rows as written while storing none; the server must not."""
    client = rw.client()
    create_table(client, "refusing")
    client.command("ALTER TABLE refusing ADD CONSTRAINT no_model_3 CHECK model != 'model-3'")
    with pytest.raises(DatabaseError, match="VIOLATED_CONSTRAINT"):
        insert(client, "refusing", sample(50))
    assert client.command("SELECT count() FROM refusing") == 0
    assert insert(client, "refusing", [col[:3] for col in sample(50)]) == 3  # rows it takes are stored
    assert client.command("SELECT count() FROM refusing") == 3


# ---- the read-only server as a security boundary ----------------------------------------------

# Statements that would write a file (``{f}``) if run: the tester's bypass (the old tokenizer read
# ``$x$`` as a heredoc, ClickHouse reads ``k$x$`` as a name), then its variants.
WRITERS = [
    "SELECT 'ssh-ed25519 AAAA' AS k$x$ INTO OUTFILE '{f}' TRUNCATE FORMAT LineAsString -- $x$",
    "select 1 into outfile '{f}'",
    "SeLeCt 1 InTo OuTfIlE '{f}' TrUnCaTe",
    "SELECT 1 INTO OUTFILE '{f}' AND STDOUT",
    "SELECT 1 /* INTO OUTFILE */ INTO/**/OUTFILE '{f}' APPEND",
    "SELECT 1 -- comment\nINTO\tOUTFILE '{f}'",
    "SELECT 1 /* nested /* comment */ still */ INTO OUTFILE '{f}'",
    "SELECT $$ INTO $$ AS `x INTO` INTO OUTFILE '{f}' COMPRESSION 'gzip' LEVEL 1",
    "SELECT $tag$it's$tag$ AS a, 'it''s' AS b INTO OUTFILE '{f}' FORMAT CSV",
    'SELECT "INTO" FROM (SELECT 1 AS "INTO") INTO OUTFILE \'{f}\'',
    "(SELECT 1) INTO OUTFILE '{f}'",
    "WITH 1 AS x SELECT x UNION ALL SELECT 2 INTO OUTFILE '{f}' SETTINGS readonly = 0",
    "SELECT 1 INTO OUTFILE '{escaped}'",  # the path spelled with \\x2f escapes
    "EXPLAIN SELECT 1 INTO OUTFILE '{f}'",
    "SHOW TABLES FROM ro INTO OUTFILE '{f}'",
    "DESCRIBE TABLE ro.t INTO OUTFILE '{f}'",
    "SELECT\u00a01\u00a0INTO\u00a0OUTFILE\u00a0'{f}'",  # no-break spaces, blanks to ClickHouse
    "SELECT\u20031\u2003INTO\u2003OUTFILE\u2003'{f}'",
    "SELECT 1; SELECT 2 INTO OUTFILE '{f}'",
    "SELECT 2 INTO OUTFILE '{f}'; SELECT 1",
    "INSERT INTO FUNCTION file('{f}', 'CSV') SELECT 1",
    "insert into function file('{f}', 'LineAsString') values ('x')",
    "CREATE TABLE ro.evil (a String) ENGINE = File(CSV, '{f}')",
    "SELECT * FROM file('{f}', 'CSV', 'a String')",
]


@pytest.mark.parametrize("how", ["body", "query", "split"])
def test_the_read_only_server_writes_no_file_whatever_the_spelling(
    ro: Server, tmp_path: Path, how: str
) -> None:
    client = ro.client()
    for i, template in enumerate(WRITERS):
        target = tmp_path / f"{how}-{i}" / "authorized_keys"
        target.parent.mkdir()
        sql = template.format(f=target, escaped=str(target).replace("/", "\\x2f"))
        if how == "body":
            status, headers, body = http(f"{ro.url}/", sql.encode())
        elif how == "query":  # with URL settings that would lift readonly if they were taken
            status, headers, body = http(sql_url(ro, sql, readonly="0", allow_ddl="1"))
        else:  # ClickHouse joins the query parameter and the body with a newline
            head, _, tail = sql.partition(" ")
            status, headers, body = http(sql_url(ro, head), tail.encode())
        assert status != 200 and "X-ClickHouse-Exception-Code" in headers, (sql, body)
        assert not any(target.parent.iterdir()), sql
    with pytest.raises(DatabaseError) as raised:  # the tester's exact request, through clickhouse-connect
        client.command(WRITERS[0].format(f=tmp_path / "authorized_keys"))
    assert raised.value.code == 358 and "INTO OUTFILE is not allowed" in str(raised.value)
    assert not (tmp_path / "authorized_keys").exists()


def test_the_read_only_server_reads_no_file_of_the_machine(ro: Server, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("password_hash,user\nxyz,root\n")
    client = ro.client()
    for sql in (
        "SELECT file('{f}')",  # the scalar: chdb confines it to no folder
        "SELECT arrayMap(file, ['{f}'])",  # passed by name
        "SELECT arrayMap(p -> file(p), ['{f}'])",
        "SELECT * FROM (SELECT file({{p:String}}) AS x)",
        "DESCRIBE TABLE file('{f}', 'CSVWithNames')",  # readonly lets DESCRIBE infer a schema
        "EXPLAIN QUERY TREE SELECT file('{f}')",  # constant folding would run it
        "SHOW TABLES FROM ro WHERE name = file('{f}')",
        "SELECT * FROM url('http://127.0.0.1:1/', 'CSV', 'a String')",
        "SELECT * FROM `{f}`",  # chdb's default database lists every file as a table
        "SELECT * FROM Python(params)",  # this process's variables
    ):
        with pytest.raises(DatabaseError) as raised:
            client.query(sql.format(f=secret), parameters={"p": str(secret)})
        assert raised.value.code in (164, 497), sql
        assert "password_hash" not in str(raised.value) and "xyz" not in str(raised.value)
    # what analysts do keeps working: tables, subqueries, lambdas, inert table functions, SHOW, EXPLAIN
    assert client.query(
        "WITH m AS (SELECT model, count() AS n FROM ro.t GROUP BY model) "
        "SELECT model, n, arrayMap(x -> x * 2, [n]) AS d FROM m ORDER BY n DESC, model LIMIT 1"
    ).result_rows == [("model-0", 3, [6])]
    assert client.query(
        "SELECT sum(number) FROM numbers(10) WHERE number IN (SELECT id FROM ro.t)"
    ).result_rows == [(45,)]
    assert client.command("SHOW TABLES FROM ro") == "t"
    assert "ReadFromMergeTree" in client.command("EXPLAIN SELECT count() FROM ro.t WHERE id > 3")
    assert client.command("DESCRIBE TABLE ro.t")[:2] == ["id", "UInt32"]
    assert client.query(
        "SELECT format('{}-{}', 'a', 'b'), formatDateTime(toDate('2026-11-02'), '%F')"
    ).result_rows == [("a-b", "2026-11-02")]


def test_who_may_ask_and_what_comes_back_in_headers(ro: Server, tmp_path: Path) -> None:
    sql = "SELECT 1"
    assert http(f"{ro.plain_url}/ping")[::2] == (200, b"Ok.\n")  # probes need no password
    for url, headers in (
        (sql_url(ro, sql).replace(ro.url, ro.plain_url), {}),  # none
        (sql_url(ro, sql).replace(ro.password, "wrong"), {}),
        (sql_url(ro, sql).replace("default:", "reader:"), {}),  # another user
    ):
        status, got, body = http(url, None, headers)
        assert (status, got["X-ClickHouse-Exception-Code"]) == (403, "516"), body
        assert b"Authentication failed" in body and ro.password.encode() not in body
    key = {"X-ClickHouse-User": "default", "X-ClickHouse-Key": ro.password}
    assert http(f"{ro.plain_url}/?query=SELECT+2", None, key)[::2] == (200, b"2\n")
    params = urllib.parse.urlencode({"query": "SELECT 3", "user": "default", "password": ro.password})
    assert http(f"{ro.plain_url}/?{params}")[::2] == (200, b"3\n")

    injected = "x\r\nSet-Cookie: stolen=1"
    status, headers, _ = http(sql_url(ro, sql, query_id=injected))
    assert status == 200 and "Set-Cookie" not in headers and "\r" not in headers["X-ClickHouse-Query-Id"]
    asked = "6f3c1a52-0c1d-4a36-8b83-9bd0f4a7d0aa"
    assert http(sql_url(ro, sql, query_id=asked))[1]["X-ClickHouse-Query-Id"] == asked
    for params in ({"default_format": "CSV\r\nSet-Cookie: stolen=1"}, {"session_timezone": injected}):
        status, headers, _ = http(sql_url(ro, sql, **params))
        assert status != 200 and "Set-Cookie" not in headers, params

    # URL settings: formats and lower bounds only; what would loosen a bound is refused
    check = "SELECT getSetting('max_memory_usage'), getSetting('max_result_rows')"
    assert (
        http(sql_url(ro, check, max_memory_usage=str(1 << 40), max_result_rows="10"))[2] == b"268435456\t10\n"
    )
    for name, value in (
        ("max_untracked_memory", str(1 << 40)),
        ("max_memory_usage_for_user", "1"),  # all of chdb's sessions are one user: the worker too
        ("dialect", "prql"),
        ("output_format_schema", str(tmp_path / "schema.proto")),  # FORMAT Protobuf would write it
        ("format_template_row", "/etc/hostname"),  # FORMAT Template would read it
    ):
        status, headers, body = http(sql_url(ro, "SELECT 1 AS a FORMAT Protobuf", **{name: value}))
        assert headers["X-ClickHouse-Exception-Code"] == "164" and name.encode() in body, name
    assert not (tmp_path / "schema.proto").exists()
    assert (
        http(
            sql_url(
                ro, "SELECT 1.5 AS x", output_format_json_quote_64bit_floats="1", default_format="JSONEachRow"
            )
        )[2]
        == b'{"x":"1.5"}\n'
    )


def test_a_statement_cannot_take_the_servers_memory(ro: Server) -> None:
    """max_memory_usage (256 MiB here) bounds a statement: refused with a clear error, RSS bounded."""
    assert ro.proc is not None
    pid = ro.proc.pid
    client = ro.client()
    before = rss_mb(pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_mb(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for sql, code in (
            ("SELECT range(300000000)", 241),  # the tester's: 605 MB -> 4 GB, before the bound
            ("SELECT arrayMap(x -> toString(x), range(30000000))", 241),  # grows up to the bound
            ("SELECT repeat(toString(number), 1000) FROM numbers(1000000)", 241),  # a 1 GB result
            ("SELECT concat(toString(number), repeat('x', 5000)) FROM numbers(4000)", 396),  # 20 MB
            (
                "SELECT repeat('x', 5000) FROM numbers(4000)",
                396,
            ),  # 20 MB of a constant, not counted by the engine
        ):
            with pytest.raises(DatabaseError) as raised:
                client.query(sql)
            assert raised.value.code == code, (sql, str(raised.value))
            assert "limit" in str(raised.value).lower()
    finally:
        done.set()
        sampler.join()
    print(f"server RSS {before:.0f} MB before, {peak[0]:.0f} MB at most while refusing")
    assert peak[0] - before < 256 + 200  # the bound and the engine's own overhead, not gigabytes
    assert client.command("SELECT count() FROM ro.t") == 20  # and it goes on serving


def test_statements_wait_for_a_slot_and_big_bodies_are_refused(
    ro: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage.clickhouse import httpserver

    engine = httpserver._Engine("/nowhere", True, httpserver.Limits(max_concurrent_queries=1), "pw")
    monkeypatch.setattr(httpserver, "_QUEUE_WAIT_S", 0.05)
    with engine._slot():
        with pytest.raises(httpserver._ChError) as raised, engine._slot():
            pass
        assert raised.value.code == 202
    with engine._slot():  # released
        pass
    status, headers, body = http(f"{ro.url}/", b"SELECT 1 -- " + b"x" * (2 << 20))
    assert (
        status == 400
        and headers["X-ClickHouse-Exception-Code"] == "62"
        and b"Max query size exceeded" in body
    )


def test_the_url_file_is_the_password_and_only_its_owner_reads_it(tmp_path: Path, monkeypatch) -> None:
    from raiwatch.core.errors import StorageError
    from storage.clickhouse.client import served_url, served_url_file, write_served_url

    dsn = f"chdb://{tmp_path}/clickhouse"
    target = served_url_file(dsn)
    target.write_text("http://127.0.0.1:1\n")  # a worker's of old: world-readable
    target.chmod(0o644)
    write_served_url(target, "http://default:pw@127.0.0.1:2")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert served_url(dsn) == "http://default:pw@127.0.0.1:2"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left

    def denied(*args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", denied)  # root reads any file: deny as for another user
    with pytest.raises(StorageError, match="only the worker's user may read it"):
        served_url(dsn)
