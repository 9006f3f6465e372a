"""What stands between hostile input and the monitoring: true reasons, the time guard, dedup,
ClickHouse refusals isolated to their rows, and a ClickHouse connection that keeps its secrets and
its deadlines."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import orjson
import pytest

from raiwatch.core.codec import telemetry_codec
from raiwatch.core.config import load_config
from raiwatch.dev.localkafka import free_port
from raiwatch.pipeline import Pipeline
from raiwatch.wiring import build_pipeline
from raiwatch.worker import _Progress
from tests.harness import cli

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def event(eid: str, ts: datetime, model: str = "bot", **extra: object) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "event_id": eid,
            "timestamp": ts.isoformat(),
            "model": {"id": model},
            "safety": {"scores": {"pii": 0.1}, "violations": [], "action": "allowed"},
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (b'{"schema_version":1', "the text ends inside a value"),
        (b'{"a":"x\\ud800"}', "lone UTF-16 surrogate escape \\ud800 at byte 7"),
        (b'{"a":"caf\xe9"}', "not UTF-8: invalid byte 0xe9 at byte 9"),
        (b'{"a":"x\x00"}', "control character 0x00 at byte 7"),
        (b'{"a":NaN}', "NaN and Infinity are not JSON numbers"),
        (event("e", NOW) + b' {"b":2}', "more than one JSON value"),
        (b"[" * 5000 + b"]" * 5000, "nested 5000 levels deep, over the limit of 64"),
        (event("e", NOW)[:-1] + b',"model":null}', "Expected `object`, got `null` - at `$.model`"),
        (event("e", datetime(2300, 1, 1, tzinfo=UTC)), "is outside 1971-2200"),
    ],
)
def test_each_rejection_says_what_is_wrong_and_where(raw: bytes, reason: str):
    (r,) = telemetry_codec.decode_batch([raw]).rejected
    assert reason in r.reason, r.reason


@pytest.fixture
def pipeline_factory(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()

    def make(live: bool = False, wall: float | None = None, **ingest: float) -> Pipeline:
        cfg = load_config(data_dir=str(base / f"p-{uuid.uuid4().hex[:8]}"))
        ch = msgspec.structs.replace(
            cfg.clickhouse, dsn=f"chdb://{base / 'chdb'}", database=f"g_{uuid.uuid4().hex[:8]}"
        )
        cfg = msgspec.structs.replace(
            cfg, clickhouse=ch, ingest=msgspec.structs.replace(cfg.ingest, **ingest)
        )
        pipe = build_pipeline(cfg, live=live)
        if wall is not None:
            pipe.wall = lambda: wall
        return pipe

    return make


def test_future_events_are_rejected_and_never_move_the_watermark(pipeline_factory):
    pipe = pipeline_factory(wall=NOW.timestamp())
    raws = [event(f"e{i}", NOW - timedelta(minutes=5) + timedelta(seconds=i)) for i in range(10)]
    raws.insert(5, event("far", datetime(2100, 1, 1, tzinfo=UTC)))
    raws.insert(6, event("near", NOW + timedelta(minutes=6)))  # beyond the 5 minutes of skew allowed
    res = pipe.process(raws, [0] * len(raws), lambda i: f"line {i}")
    assert [r.source for r in res.rejected] == ["line 5", "line 6"]
    assert all("ahead of this worker's clock" in r.reason and r.kind == "future" for r in res.rejected)
    assert "73.1 years ahead" in res.rejected[0].reason
    assert res.late == 0 and pipe.clock.position(0) < NOW.timestamp()
    more = pipe.process([event("e-next", NOW - timedelta(seconds=10))], [0])
    assert more.late == 0 and more.windows[0] is not None  # signals keep coming


def test_the_age_limit_applies_to_a_live_worker_not_to_replay(pipeline_factory):
    old = event("old", NOW - timedelta(days=40))
    live = pipeline_factory(live=True, wall=NOW.timestamp())
    (r,) = live.process([old], [0], lambda i: "p/0@7").rejected
    assert r.kind == "too_old" and "40.0 days old" in r.reason and "ingest.max_age_s" in r.reason
    replay = pipeline_factory(live=False, wall=NOW.timestamp())
    assert replay.process([old], [0]).rejected == []


def test_a_redelivered_event_is_stored_and_counted_once(pipeline_factory):
    pipe = pipeline_factory(wall=NOW.timestamp())
    t = NOW - timedelta(minutes=10)
    first = [event(f"e{i}", t + timedelta(seconds=i)) for i in range(20)]
    again = [first[3], event("e4", t + timedelta(seconds=30))]  # a retry; the same id with another time
    assert pipe.process(first + again, [0] * 22).duplicates == 2
    assert pipe.process([first[7]], [0]).duplicates == 1  # in a later batch too
    signals = pipe.close_all().signals
    (any_rate,) = [s for s in signals if s.signal == "safety.any_violation_rate"]
    assert any_rate.n == 20
    db = pipe.cfg.clickhouse.database
    assert pipe.writer.client.command(f"SELECT count() FROM {db}.telemetry_events FINAL") == 20


def test_a_batch_from_several_partitions_remembers_ids_per_partition(pipeline_factory):
    """Each source (partition) has its own memory of recent ids: a repeat within one is a
    duplicate, the same id from another is not (a key moved partitions: its events count once each)."""
    pipe = pipeline_factory(wall=NOW.timestamp())
    t = NOW - timedelta(minutes=10)
    evs = [event(f"e{i}", t + timedelta(seconds=i)) for i in range(6)]
    batch = [evs[0], evs[1], evs[2], evs[0], evs[1], evs[3], evs[4], evs[2]]
    srcs = [0, 1, 0, 0, 0, 1, 1, 1]  # e0 twice from 0; e1 and e2 once from each
    assert pipe.process(batch, srcs).duplicates == 1
    assert pipe.process([evs[1], evs[5], evs[3]], [1, 0, 0]).duplicates == 1  # e1 again from 1


def test_a_closed_window_counts_as_open_until_a_checkpoint_covers_it(pipeline_factory):
    """A live worker checkpoints at most once per ``kafka.commit_interval_s``: a window closed in
    between stays in ``open_windows()`` (its offsets wait) until a checkpoint is written."""
    pipe = pipeline_factory(live=True, wall=NOW.timestamp())
    pipe.cfg = msgspec.structs.replace(
        pipe.cfg, kafka=msgspec.structs.replace(pipe.cfg.kafka, commit_interval_s=3600.0)
    )
    t = NOW - timedelta(minutes=10)
    pipe.assign_sources({0})
    first = pipe.process([event(f"a{i}", t + timedelta(seconds=i)) for i in range(200)], [0] * 200)
    first.durable.result(60)  # the first checkpoint is due at once: written with this batch
    assert first.closed and not set(first.closed) & pipe.open_windows()
    second = pipe.process([event(f"b{i}", t + timedelta(seconds=200 + i)) for i in range(200)], [0] * 200)
    second.durable.result(60)
    assert second.closed and second.signals
    assert set(second.closed) <= pipe.open_windows()  # written, not checkpointed: not committable
    db = pipe.cfg.clickhouse.database
    query = f"SELECT toUnixTimestamp64Milli(max(until)) FROM {db}.checkpoints FINAL WHERE kind = 'clock'"
    (before,) = pipe.writer.client.query(query).result_rows[0]
    pipe.flush()  # as on stop and revocation
    assert not set(second.closed) & pipe.open_windows()
    (after,) = pipe.writer.client.query(query).result_rows[0]
    assert before < after == pipe.clock.closed_until * 1000


def test_the_worker_says_when_its_last_closed_window_is_checkpointed(pipeline_factory, caplog):
    """The progress line of the batch that closed the last windows counts them unsettled while their
    checkpoint waits for the commit interval; a line follows once it is written (``raiwatch demo``
    waits for ``open_windows=0``), and no line for results that change nothing."""
    pipe = pipeline_factory(live=True, wall=NOW.timestamp())
    pipe.cfg = msgspec.structs.replace(
        pipe.cfg, kafka=msgspec.structs.replace(pipe.cfg.kafka, commit_interval_s=3600.0)
    )
    progress = _Progress(pipe)
    t = NOW - timedelta(minutes=10)
    pipe.assign_sources({0})
    caplog.set_level("INFO", logger="raiwatch.worker")
    lines = lambda: [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress")]  # noqa: E731
    first = pipe.process([event(f"a{i}", t + timedelta(seconds=i)) for i in range(200)], [0] * 200)
    first.durable.result(60)
    second = pipe.process([event(f"b{i}", t + timedelta(seconds=200 + i)) for i in range(200)], [0] * 200)
    second.durable.result(60)
    progress(second)
    last = pipe.tick({0}, NOW.timestamp())  # the input stopped: the last windows close
    last.durable.result(60)
    progress(last)
    assert last.signals and not pipe.clock.open_windows()
    assert pipe.open_windows() and lines()[-1].endswith(f"open_windows={len(pipe.open_windows())}")
    progress(pipe.tick({0}, NOW.timestamp()))  # nothing new: no line
    assert len(lines()) == 2
    pipe.flush()  # the checkpoint: in a worker, the tick after kafka.commit_interval_s
    progress(pipe.tick({0}, NOW.timestamp()))
    assert len(lines()) == 3 and lines()[-1].endswith("open_windows=0")
    progress(pipe.tick({0}, NOW.timestamp()))
    assert len(lines()) == 3


def test_a_copy_sent_after_a_restart_is_still_a_duplicate(pipeline_factory):
    """The memory of recent ids comes back with the window clock: from the stored events its
    checkpoint covers, at most ``ingest.dedup_ids`` of them."""
    first = pipeline_factory(live=True, wall=NOW.timestamp(), dedup_ids=50)
    t = NOW - timedelta(minutes=10)
    raws = [event(f"e{i}", t + timedelta(seconds=i)) for i in range(200)]
    first.assign_sources({0})
    first.process(raws, [0] * 200)
    first.flush()
    counted_until = first.clock.closed_until
    assert counted_until == (t + timedelta(seconds=120)).timestamp()  # e0..e119 counted and checkpointed

    restarted = build_pipeline(first.cfg, live=True)  # the same stores
    restarted.wall = lambda: NOW.timestamp()
    restarted.assign_sources({0})
    res = restarted.process(
        [
            event("e100", t + timedelta(seconds=190)),  # a producer's retry, with another timestamp
            raws[110],  # re-read: its window was counted before the restart
            raws[150],  # re-read: its window was still open, so it counts now
            event("e5", t + timedelta(seconds=191)),  # a retry older than the 50 ids remembered
        ],
        [0] * 4,
    )
    assert (res.duplicates, res.replayed, res.late) == (1, 1, 0)
    assert [w is not None for w in res.windows] == [False, False, True, True]
    restarted.flush()
    db = first.cfg.clickhouse.database
    stored = restarted.writer.client.query(
        f"SELECT event_id, count() FROM {db}.telemetry_events WHERE event_id IN ('e100', 'e110', 'e5')"
        " GROUP BY event_id ORDER BY event_id"
    ).result_rows
    assert stored == [("e100", 1), ("e110", 1), ("e5", 2)]


def test_rows_clickhouse_refuses_are_rejected_alone(pipeline_factory):
    pipe = pipeline_factory(wall=NOW.timestamp())
    db = pipe.cfg.clickhouse.database
    pipe.writer.client.command(
        f"ALTER TABLE {db}.telemetry_events ADD CONSTRAINT c CHECK model_id != 'poison'"
    )
    t = NOW - timedelta(minutes=10)
    raws = [
        event(f"e{i}", t + timedelta(seconds=i), model="poison" if i in (3, 70) else "bot")
        for i in range(100)
    ]
    pipe.process(raws, [0] * 100, lambda i: f"line {i}")
    refused = pipe.flush()
    assert [r.source for r in refused] == ["line 3", "line 70"]
    assert all(r.kind == "storage" and "VIOLATED_CONSTRAINT" in r.reason for r in refused)
    assert pipe.writer.client.command(f"SELECT count() FROM {db}.telemetry_events FINAL") == 98
    assert (
        pipe.writer.client.command(f"SELECT count() FROM {db}.rejected_events WHERE reason LIKE '%refused%'")
        == 2
    )


# -- the ClickHouse connection -------------------------------------------------------------------


class _Listener:
    """A TCP listener that records what arrives; with ``tls`` it terminates TLS (self-signed) first."""

    def __init__(self, tmp: Path, tls: bool = False, answer: bytes | None = None):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.tls_ok = False
        self.ctx = None
        self.answer = answer
        if tls:
            key, crt = tmp / "key.pem", tmp / "crt.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                 "-out", str(crt), "-days", "1", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1"],
                check=True, capture_output=True,
            )  # fmt: skip
            self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ctx.load_cert_chain(crt, key)
            self.cert = crt
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            try:
                if self.ctx is not None:
                    conn = self.ctx.wrap_socket(conn, server_side=True)
                    self.tls_ok = True
                conn.settimeout(5)
                request = self._read_request(conn)
                self.received += request
                if self.answer is not None:
                    conn.sendall(self.answer)
                    conn.shutdown(socket.SHUT_WR)
                    conn.close()
                # else: accept and never answer
            except (OSError, ssl.SSLError) as e:
                self.received += f"<{type(e).__name__}>".encode()

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        """Bytes up to the end of one HTTP request (headers and Content-Length body), or what came."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
            if data[:1] == b"\x16":  # a TLS handshake on a plain socket: nothing more to learn
                return data
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body


_AUTH = b"Code: 516. DB::Exception: bob: Authentication failed. (AUTH_FAILED)"
CH_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nX-ClickHouse-Exception-Code: 516\r\n"
    b"Content-Length: " + str(len(_AUTH)).encode() + b"\r\nConnection: close\r\n\r\n" + _AUTH
)


def test_an_https_dsn_uses_tls_on_any_port_and_no_message_shows_the_password(tmp_path):
    server = _Listener(tmp_path, tls=True, answer=CH_ERROR)
    dsn = f"https://bob:s3cret-pw@127.0.0.1:{server.port}"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"clickhouse:\n  dsn: '{dsn}'\n  ca_cert: '{server.cert}'\n  timeout_s: 5\n")
    p = cli("db", "migrate", "--config", str(cfg), "--data-dir", str(tmp_path / "d"), timeout=60)
    assert p.returncode == 2
    assert server.tls_ok and b"Authorization: Basic" in server.received  # the credentials went inside TLS
    assert "s3cret-pw" not in p.stdout + p.stderr and "Traceback" not in p.stderr
    assert "AUTH_FAILED" in p.stderr or "Authentication failed" in p.stderr, p.stderr


def test_plain_bytes_never_leave_for_an_https_dsn(tmp_path):
    sniffer = _Listener(tmp_path, tls=False, answer=b"")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"clickhouse:\n  dsn: 'https://bob:s3cret-pw@127.0.0.1:{sniffer.port}'\n  timeout_s: 3\n")
    p = cli("db", "migrate", "--config", str(cfg), "--data-dir", str(tmp_path / "d"), timeout=60)
    assert p.returncode == 2 and "s3cret-pw" not in p.stdout + p.stderr
    assert sniffer.received[:1] == b"\x16"  # a TLS handshake record, not "GET"/"POST"
    assert b"s3cret" not in sniffer.received and b"Authorization" not in sniffer.received


def test_a_server_that_never_answers_is_reported_within_seconds(tmp_path):
    silent = _Listener(tmp_path, answer=None)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"clickhouse:\n  dsn: 'http://127.0.0.1:{silent.port}'\n  timeout_s: 2\n  connect_timeout_s: 1\n"
    )
    t0 = time.monotonic()
    p = cli("db", "migrate", "--config", str(cfg), "--data-dir", str(tmp_path / "d"), timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 2 and took < 20, (took, p.stderr)
    assert p.stderr.count("\n") == 1 and "no answer within 2 s" in p.stderr, p.stderr


def test_db_migrate_never_prints_a_database_password(tmp_path):
    port = free_port()  # nothing listens there
    env = {"RAIWATCH_INCIDENT_DB": f"postgresql+psycopg://raiwatch:pg-s3cret@127.0.0.1:{port}/x"}
    p = cli("db", "migrate", "--data-dir", str(tmp_path), env=env, timeout=60)
    assert p.returncode == 2 and "pg-s3cret" not in p.stdout + p.stderr, p.stdout + p.stderr
    assert "***" in p.stderr and "Traceback" not in p.stderr


def test_warm_start_replays_stored_signals_into_the_rules_and_stores_what_they_open(pipeline_factory):
    """A worker killed after writing signals but before storing the incident they open."""
    from raiwatch.core.records import Signal

    pipe = pipeline_factory(wall=NOW.timestamp())
    t0 = NOW - timedelta(minutes=30)
    pipe.writer.write_signals(
        [
            Signal(
                ts=t0 + timedelta(minutes=i),
                window=60,
                signal="safety.violation_rate",
                model_id="bot",
                dims={"category": "self_harm"},
                value=0.12,
                lower=0.10,
                upper=0.14,
                n=900,
                evidence_of="value",  # the rule reads value.lower: above 5% with confidence
                evidence_lower=0.09,
                evidence_upper=0.15,
            )
            for i in range(6)
        ]
    )
    changes = pipe.warm_start()
    assert [c.kind for c in changes] == ["opened"] + ["updated"] * 5  # after for: 1m, then re-confirmed
    (inc,) = pipe.store.open_incidents()
    assert inc.incident_id == changes[0].incident.incident_id
    db = pipe.cfg.clickhouse.database
    assert pipe.writer.client.command(f"SELECT count() FROM {db}.incidents FINAL") == 1
    assert pipe.warm_start() == []  # again: nothing new
