"""ClickHouseHTTPServer against clickhouse-connect's HTTP client and plain HTTP requests.

chdb opens one data path per process (and this pytest process may already hold another one), so
every server here is a child process, ``python -m storage.clickhouse.httpserver``, reached over
HTTP only. Readiness is its ``serving ...`` line on stdout, awaited with a deadline.
"""

from __future__ import annotations

import selectors
import signal
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
    clickhouse_connect.get_client(dsn=server.url).command("INSERT INTO default.shared VALUES (9)")
except DatabaseError as e:
    print("refused", e.code)
server.stop()
server = ClickHouseHTTPServer(local, readonly=False)
server.start()
remote = clickhouse_connect.get_client(dsn=server.url)
remote.insert("shared", [[2]], column_names=["a"], column_type_names=["UInt8"], database="default")
print(remote.command("SELECT groupArray(a) FROM (SELECT a FROM default.shared ORDER BY a)"))
server.stop()
print(local.command("SELECT count() FROM default.shared"))
"""


class Server:
    """One ``python -m storage.clickhouse.httpserver`` child process on ``path``."""

    def __init__(self, path: Path, *flags: str):
        self.path = path
        self.flags = flags
        self.port = 0
        self.log = path.parent / f"{path.name}.stderr"
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server (on the port it had, if any) and wait for its ready line."""
        cmd = [sys.executable, "-m", "storage.clickhouse.httpserver", "--path", str(self.path)]
        cmd += ["--port", str(self.port), *self.flags]
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

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return rc

    def client(self, **kwargs: Any) -> Client:
        return clickhouse_connect.get_client(
            host="127.0.0.1", port=self.port, username="default", password="", tz_mode="aware", **kwargs
        )


def http(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    """``(status, headers, body)`` of one plain HTTP request, as curl would make it."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
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
    """A read-only server (max 5000 result rows, 0.5 s per query) over a path holding ``ro.t`` (20 rows)."""
    path = tmp_path_factory.mktemp("chdb_http") / "ro"
    setup = Server(path, "--read-write")
    setup.start()
    client = setup.client()
    client.command("CREATE DATABASE ro")
    create_table(client, "ro.t")
    insert(client, "ro.t", sample(20))
    client.close()
    assert setup.stop(signal.SIGTERM) == 0  # a clean shutdown on SIGTERM
    server = Server(path, "--max-result-rows", "5000", "--max-execution-time", "0.5")
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
    client = clickhouse_connect.get_client(dsn=f"{rw.url}", compress=compress, tz_mode="aware")
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
        lambda: client.query("SELECT * FROM file('/etc/hostname', 'LineAsString')"),
        lambda: client.query("SELECT number FROM numbers(10000) SETTINGS max_result_rows = 0"),
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
    assert run.stdout.split("\n")[:3] == ["refused 164", "[1,2]", "2"]


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
