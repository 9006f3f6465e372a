"""Shared pytest fixtures.

Kafka
    ``kafka_bootstrap`` (session): bootstrap address of a real Apache Kafka broker. By default one
    ``raiwatch.dev.localkafka.LocalKafka`` is installed (jars cached in ``.cache/kafka``) and started on
    free ports in a temp dir for the whole session; set ``RAIWATCH_TEST_KAFKA_BOOTSTRAP=host:port``
    to use an existing broker instead. Tests that use it should carry ``@pytest.mark.kafka``.
    ``kafka_broker`` (function): the session's ``LocalKafka`` itself, for tests that stop, kill or
    restart it; it is running again after each test. Not available with an external broker.
    Both skip only when ``java`` is missing (and no external broker is configured).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from raiwatch.dev.localkafka import LocalKafka, install, java_available

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
