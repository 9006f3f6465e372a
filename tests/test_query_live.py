"""Analysts query the embedded trend tables while a worker holds them (its read-only HTTP endpoint).

One worker serves every assertion here: what analysts run works (the CLI, the saved queries, the
Grafana dashboards' queries), who lacks the password is refused, and what the tester used to write
files, kill queries or take the worker's memory is refused by the worker itself.
"""

from __future__ import annotations

import base64
import stat
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from raiwatch.dev import synth
from storage.clickhouse.saved import saved_queries
from streams.producer import produce
from tests.harness import cli, poll, rss_mb, start_worker, stop_worker, write_config
from tests.test_analyst_views import MACROS, _clickhouse_queries, _dashboards

pytestmark = pytest.mark.kafka
EVENTS = 3_000


def _get(url: str, sql: str, password: str | None) -> tuple[int, bytes]:
    """A curl-style GET of ``sql``, with the password as Basic auth when given."""
    headers = {}
    if password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"default:{password}".encode()).decode()
    request = urllib.request.Request(f"{url}/?query={urllib.parse.quote(sql)}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


def test_query_while_the_worker_runs_goes_through_its_read_only_endpoint(kafka_bootstrap, tmp_path):
    events = tmp_path / "events.jsonl"
    truth = synth.write(
        events, synth.default_scenario(EVENTS, seed=3, rate_per_s=20, start=synth.recent_start(EVENTS, 20))
    )
    run = uuid.uuid4().hex[:8]
    topic, group = f"live-{run}", f"raiwatch-{run}"
    extra = "clickhouse:\n  http_max_result_rows: 10000\n"
    cfg = write_config(tmp_path / "raiwatch.yaml", kafka_bootstrap, topic, group, extra)
    data = tmp_path / "data"
    log = tmp_path / "worker.log"
    url_file = data / "clickhouse.url"
    worker = start_worker(cfg, data, log)

    def query(*args: str):
        return cli("query", "--config", str(cfg), "--data-dir", str(data), *args)

    try:
        poll(lambda: url_file.exists() or worker.poll() is not None, 120, "the worker to serve its store")
        assert worker.poll() is None, log.read_text()[-3000:]
        assert stat.S_IMODE(url_file.stat().st_mode) == 0o600  # who can read it can query
        dsn = urllib.parse.urlsplit(url_file.read_text().strip())
        password = urllib.parse.unquote(dsn.password or "")
        url = f"http://{dsn.hostname}:{dsn.port}"
        assert dsn.username == "default" and len(password) >= 32
        assert password not in log.read_text()  # the log names the URL, not the password
        with events.open("rb") as f:
            produce(f, kafka_bootstrap, topic)

        def count() -> int:
            p = query("--json", "SELECT count() AS n FROM raiwatch.telemetry_events FINAL")
            assert p.returncode == 0, p.stderr
            return int(p.stdout.split('"n":')[1].split("}")[0])

        poll(lambda: count() == truth["valid"], 120, "every event to be queryable while the worker runs")
        # read-only: a write is refused in one line, and nothing is dropped
        drop = query("DROP TABLE raiwatch.signals")
        assert drop.returncode == 2 and "Traceback" not in drop.stderr
        assert "readonly" in drop.stderr.lower() and len(drop.stderr.strip().splitlines()) == 1
        # bounded: a result over clickhouse.http_max_result_rows is refused, not streamed
        big = query("SELECT number FROM system.numbers LIMIT 20000")
        assert big.returncode == 2 and "10.00 thousand" in big.stderr and "Traceback" not in big.stderr
        # plain HTTP (curl) speaks to it too, with the password only
        sql = "SELECT count() FROM raiwatch.telemetry_events FINAL"
        assert _get(url, sql, password) == (200, f"{truth['valid']}\n".encode())
        for wrong in (None, "not-the-password"):
            status, body = _get(url, sql, wrong)
            assert status == 403 and b"AUTHENTICATION_FAILED" in body

        # what analysts run: every saved query (one through the CLI), every dashboard query
        assert query("--saved", "events-hourly", "--json").returncode == 0
        client = clickhouse_connect.get_client(dsn=url_file.read_text().strip(), tz_mode="aware")
        for saved in saved_queries().values():
            client.query_df(saved.sql, parameters=saved.bind({}))
        rows = 0
        for board in _dashboards().values():
            for panel_sql in _clickhouse_queries(board):
                for pattern, repl in MACROS:
                    panel_sql = pattern.sub(repl, panel_sql)
                rows += len(client.query(panel_sql).result_rows)
        assert rows > 0

        # the tester's requests: a file write, KILL QUERY, and a worker's memory
        target = tmp_path / "authorized_keys"
        bypass = (
            f"SELECT 'ssh-ed25519 AAAA' AS k$x$ INTO OUTFILE '{target}' TRUNCATE FORMAT LineAsString -- $x$"
        )
        status, body = _get(url, bypass, password)
        assert status == 500 and b"INTO OUTFILE is not allowed" in body and not target.exists()
        dump = f"SELECT * FROM raiwatch.telemetry_events INTO OUTFILE '{tmp_path / 'dump.csv'}'"
        refused = query(dump)  # the CLI adds FORMAT Native: still one statement, still refused
        assert refused.returncode == 2 and "INTO OUTFILE is not allowed" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "dump.csv").exists()
        with pytest.raises(DatabaseError) as raised:
            client.command("KILL QUERY WHERE 1")
        assert raised.value.code == 164

        before = rss_mb(worker.pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], rss_mb(worker.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            big = query("SELECT range(300000000)")  # the tester's: 605 MB -> 4 GB; now one line
            assert big.returncode == 2 and "memory limit exceeded" in big.stderr.lower(), big.stderr
            assert len(big.stderr.strip().splitlines()) == 1
            with pytest.raises(DatabaseError) as raised:  # one that grows up to the bound
                client.query("SELECT arrayMap(x -> toString(x), range(120000000))")
            assert raised.value.code == 241
        finally:
            done.set()
            sampler.join()
        print(f"worker RSS {before:.0f} MB before, {peak[0]:.0f} MB at most while refusing")
        assert peak[0] - before < 512 + 256  # the 512 MiB bound and the engine's overhead
        assert client.command("SELECT count() FROM raiwatch.telemetry_events FINAL") == truth["valid"]
    finally:
        stop_worker(worker)
    assert not url_file.exists()  # the worker removes what it wrote
    after = query("--json", "SELECT count() AS n FROM raiwatch.signals")
    assert after.returncode == 0 and '"n":0' not in after.stdout, after.stderr  # the table is still there
