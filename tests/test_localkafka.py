"""The local Apache Kafka broker (raiwatch.dev.localkafka) against kafka-python and aiokafka clients."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from raiwatch.dev.localkafka import (
    PROJECT_ROOT,
    LocalKafka,
    create_topics,
    free_port,
    java_available,
    read_properties,
)
from tests.harness import alive

pytestmark = pytest.mark.kafka

N = 300
PARTITIONS = 4
DEADLINE_S = 60.0


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _produce(bootstrap: str, topic: str, n: int, start: int = 0) -> dict[str, set[int]]:
    """Send ``n`` keyed records (acks=all) and return the partitions each key landed on."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [
            (f"key-{i % 17}", producer.send(topic, key=f"key-{i % 17}".encode(), value=f"value-{i}".encode()))
            for i in range(start, start + n)
        ]
        producer.flush(timeout=DEADLINE_S)
        placement: dict[str, set[int]] = {}
        for key, fut in futures:
            placement.setdefault(key, set()).add(fut.get(timeout=DEADLINE_S).partition)
        return placement
    finally:
        producer.close()


def _consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip


def _poll_until(consumer: KafkaConsumer, expected: int, timeout: float = DEADLINE_S) -> list:
    """Poll until ``expected`` records arrived or the deadline passed; return what arrived."""
    records: list = []
    deadline = time.monotonic() + timeout
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def _caught_up(consumer: KafkaConsumer, timeout: float = DEADLINE_S) -> bool:
    """True once the consumer owns partitions and its position equals the end offset on each."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owned = consumer.assignment()
        if owned:
            ends = consumer.end_offsets(list(owned))
            if all(consumer.position(tp) == ends[tp] for tp in owned):
                return True
        consumer.poll(timeout_ms=200)
    return False


def _end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return consumer.end_offsets(parts)
    finally:
        consumer.close()


def _consume_all(bootstrap: str, topic: str, group: str, expected: int) -> list:
    """Read with a consumer group from ``earliest`` and commit; checks the exact count."""
    consumer = _consumer(bootstrap, topic, group)
    try:
        records = _poll_until(consumer, expected)
        assert len(records) == expected
        assert len({(r.partition, r.offset) for r in records}) == expected  # no duplicates
        assert _caught_up(consumer)  # and nothing beyond: positions are at the end offsets
        consumer.commit()
        return records
    finally:
        consumer.close(autocommit=False)


async def _aio_consume(bootstrap: str, topic: str, group: str, expected: int) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    try:
        records: list = []
        deadline = time.monotonic() + DEADLINE_S
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        owned = consumer.assignment()
        ends = await consumer.end_offsets(list(owned))
        positions = {tp: await consumer.position(tp) for tp in owned}
        assert positions == ends
        return records
    finally:
        await consumer.stop()


def _values(records: Iterable) -> set[str]:
    return {r.value.decode() for r in records}


def test_produce_and_consume_with_kafka_python_and_aiokafka(kafka_bootstrap: str) -> None:
    topic = _unique("roundtrip")
    create_topics(kafka_bootstrap, {topic: PARTITIONS})
    placement = _produce(kafka_bootstrap, topic, N)
    assert all(len(parts) == 1 for parts in placement.values())  # a key always maps to one partition

    ends = _end_offsets(kafka_bootstrap, topic)
    assert len(ends) == PARTITIONS
    assert sum(ends.values()) == N

    expected = {f"value-{i}" for i in range(N)}
    records = _consume_all(kafka_bootstrap, topic, _unique("kp"), N)
    assert _values(records) == expected
    assert {r.key for r in records} == {f"key-{i}".encode() for i in range(17)}

    aio_records = asyncio.run(_aio_consume(kafka_bootstrap, topic, _unique("aio"), N))
    assert len(aio_records) == N
    assert _values(aio_records) == expected


def test_create_topics_is_idempotent(kafka_bootstrap: str) -> None:
    topics = {_unique("idem-a"): 3, _unique("idem-b"): 1}
    create_topics(kafka_bootstrap, topics)
    create_topics(kafka_bootstrap, topics)  # already exists: no error
    with KafkaAdminClient(bootstrap_servers=kafka_bootstrap) as admin:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(topics))}
    assert described == topics


def test_auto_created_topic_gets_default_partitions(kafka_bootstrap: str) -> None:
    topic = _unique("auto")
    _produce(kafka_bootstrap, topic, 10)
    assert len(_end_offsets(kafka_bootstrap, topic)) == PARTITIONS


@pytest.mark.parametrize("hard", [False, True], ids=["stop-start", "kill-start"])
def test_records_and_committed_offsets_survive_restart(kafka_broker: LocalKafka, hard: bool) -> None:
    bootstrap = kafka_broker.bootstrap
    topic, group = _unique("restart"), _unique("grp")
    create_topics(bootstrap, {topic: PARTITIONS})
    _produce(bootstrap, topic, N)
    _consume_all(bootstrap, topic, group, N)
    with KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False) as c:
        committed = {tp: c.committed(tp) for tp in _end_offsets(bootstrap, topic)}
    assert sum(committed.values()) == N

    if hard:
        kafka_broker.kill()
    else:
        kafka_broker.stop()
    assert not kafka_broker.is_running()
    assert kafka_broker.start() == bootstrap  # same data dir, same port

    assert sum(_end_offsets(bootstrap, topic).values()) == N
    with KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False) as c:
        assert {tp: c.committed(tp) for tp in committed} == committed
    # The group resumes where it committed: it sees only records written after the restart...
    _produce(bootstrap, topic, 25, start=N)
    resumed = _consume_all(bootstrap, topic, group, 25)
    assert _values(resumed) == {f"value-{i}" for i in range(N, N + 25)}
    # ...while a new group still reads everything from the beginning.
    assert len(_consume_all(bootstrap, topic, _unique("fresh"), N + 25)) == N + 25


def test_broker_accepts_every_configured_property(kafka_broker: LocalKafka) -> None:
    """Kafka 4 ignores unknown server properties silently; its startup dump lists the known ones."""
    lines = kafka_broker.server_log.read_text().splitlines()
    start = max(i for i, line in enumerate(lines) if "KafkaConfig values:" in line)
    known = set()
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        known.add(line.strip().partition(" = ")[0])
    configured = set(read_properties(kafka_broker.server_properties))
    assert len(known) > 100
    assert configured - known == set()


@pytest.mark.skipif(not java_available(), reason="java not found on PATH: needs a Java 17+ runtime")
def test_cli_start_detaches_and_stop_uses_the_pid_file(tmp_path: Path) -> None:
    """Two brokers started with only ``--port`` run side by side: each controller takes a port of
    its own (the one after ``--port`` when free), not one fixed port both would claim."""
    ports = [free_port()]
    while len(ports) < 2:
        port = free_port()
        if abs(port - ports[0]) > 1:
            ports.append(port)
    dirs = [tmp_path / "cli-kafka-a", tmp_path / "cli-kafka-b"]

    def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "raiwatch.dev.localkafka", *args, "--data", str(data)],
            capture_output=True, text=True, timeout=180, cwd=PROJECT_ROOT, check=False,
        )  # fmt: skip

    pids: list[int] = []
    try:
        for data, port in zip(dirs, ports, strict=True):
            started = cli(data, "start", "--port", str(port))
            assert started.returncode == 0, started.stderr
            pids.append(int((data / "broker.pid").read_text()))
            bootstrap = f"127.0.0.1:{port}"
            assert started.stdout.strip() == bootstrap
            assert (data / "bootstrap").read_text().strip() == bootstrap
        controllers = [
            int(read_properties(d / "server.properties")["controller.quorum.voters"].rpartition(":")[2])
            for d in dirs
        ]
        assert len(set(controllers) | set(ports)) == 4, (ports, controllers)
        for data, port in zip(dirs, ports, strict=True):
            status = cli(data, "status")  # the `start` process is gone; the broker is not
            assert status.returncode == 0 and "ready" in status.stdout, status.stdout + status.stderr
            assert cli(data, "start").stdout.strip() == f"127.0.0.1:{port}"  # already running: reports it
            create_topics(f"127.0.0.1:{port}", {"cli-check": 1})

        for data, pid in zip(dirs, pids, strict=True):
            stopped = cli(data, "stop")
            assert stopped.returncode == 0, stopped.stderr
            assert not alive(pid)
            assert not (data / "broker.pid").exists()
            assert cli(data, "status").returncode == 1
    finally:
        for data, pid in zip(dirs, pids, strict=False):
            if LocalKafka.attach(data) is not None:  # only if it is still our broker
                os.killpg(pid, signal.SIGKILL)
