"""Shared pytest fixtures.

Kafka
    ``kafka_bootstrap`` (session): bootstrap address of a real Apache Kafka broker. By default one
    ``raiwatch.dev.localkafka.LocalKafka`` is installed (jars cached in ``.cache/kafka``) and started on
    free ports in a temp dir for the whole session; set ``RAIWATCH_TEST_KAFKA_BOOTSTRAP=host:port``
    to use an existing broker instead. Tests that use it should carry ``@pytest.mark.kafka``.
    ``kafka_broker`` (function): the session's ``LocalKafka`` itself, for tests that stop, kill or
    restart it; it is running again after each test. Not available with an external broker.
    Both skip only when ``java`` is missing (and no external broker is configured).

PostgreSQL
    ``pg_server`` (session): a SQLAlchemy URL. From ``RAIWATCH_TEST_PG_URL`` when set; otherwise
    Debian's ``initdb`` and ``postgres`` from ``/usr/lib/postgresql/*/bin`` run in a temporary
    folder (as user ``postgres`` when run as root) until the session ends. Without either, tests
    that use it are skipped with the reason. ``pg_url`` (function): a fresh schema on it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from raiwatch.dev.localkafka import LocalKafka, free_port, install, java_available

KAFKA_BOOTSTRAP_ENV = "RAIWATCH_TEST_KAFKA_BOOTSTRAP"
NO_JAVA_REASON = "java not found on PATH: the Kafka tests start a real broker and need a Java 17+ runtime"


@pytest.fixture(scope="session")
def _local_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka | None]:
    """The session's local broker, or None when an external one is configured."""
    if os.environ.get(KAFKA_BOOTSTRAP_ENV):
        yield None
        return
    if not java_available():
        pytest.skip(NO_JAVA_REASON)
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), libs_dir=install(), die_with_parent=True)
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(_local_kafka: LocalKafka | None) -> str:
    """``host:port`` of the Kafka broker for this test session."""
    return _local_kafka.bootstrap if _local_kafka is not None else os.environ[KAFKA_BOOTSTRAP_ENV]


@pytest.fixture
def kafka_broker(_local_kafka: LocalKafka | None) -> Iterator[LocalKafka]:
    """The session's ``LocalKafka`` (running), restarted afterwards if the test left it stopped."""
    if _local_kafka is None:
        pytest.skip(f"{KAFKA_BOOTSTRAP_ENV} is set: this test needs the locally started broker")
    _local_kafka.start(timeout=120)  # no-op when running
    yield _local_kafka
    _local_kafka.start(timeout=120)


PG_READY_TIMEOUT_S = 60.0
PG_SETTINGS = ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off"]
PG_SETTINGS += ["-c", "timezone=Asia/Kolkata"]  # a non-UTC session zone: reads must still come back UTC


# -- PostgreSQL server (``pg_server``, session) ----------------------------------------


def _pg_bindir() -> Path | None:
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None
    newest = max(found, key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()])
    return Path(newest).parent


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A SQLAlchemy URL of a PostgreSQL server for the whole session."""
    if os.environ.get("RAIWATCH_TEST_PG_URL"):
        yield os.environ["RAIWATCH_TEST_PG_URL"]
        return
    psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is needed to reach PostgreSQL")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server: /usr/lib/postgresql/*/bin/initdb not found "
            "(apt-get install -y postgresql, or set RAIWATCH_TEST_PG_URL)"
        )
    as_user: dict = {}
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    root = Path(tempfile.mkdtemp(prefix="raiwatch-pg-"))  # short: the socket path must fit 107 bytes
    if as_user:
        os.chown(root, as_user["user"], as_user["group"])
    data, port = root / "data", free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8", "HOME": str(root)}
    initdb = subprocess.run(
        [bindir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **as_user,
    )
    if initdb.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}\n{initdb.stderr}")
    server_log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [bindir / "postgres", "-D", data, "-k", root, "-p", str(port), *PG_SETTINGS],
        cwd=root,
        env=env,
        stdout=server_log,
        stderr=subprocess.STDOUT,
        **as_user,
    )
    try:
        deadline = time.monotonic() + PG_READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"postgres exited with {proc.returncode}:\n{(root / 'server.log').read_text()}")
            try:
                psycopg.connect(
                    host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2
                ).close()
                break
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    pytest.fail(f"postgres not ready after {PG_READY_TIMEOUT_S:.0f} s: {e}")
                time.sleep(0.1)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        proc.send_signal(signal.SIGINT)  # fast shutdown
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server_log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A SQLAlchemy URL of a fresh, empty schema on the session's PostgreSQL server (dropped after)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    base = make_url(pg_server)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
