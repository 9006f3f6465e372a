"""Topic names and their creation (kafka-python admin), idempotent."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Sequence

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from raiwatch.core.config import KafkaConfig
from raiwatch.core.errors import RaiwatchError


def reachable(bootstrap_servers: str, timeout_s: float = 5.0) -> bool:
    """Whether any of the bootstrap servers accepts a TCP connection within ``timeout_s``."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def ensure_topics(cfg: KafkaConfig, timeout_s: float = 30.0, extra: Sequence[str] = ()) -> None:
    """Create the telemetry, feedback and dead-letter topics (and ``extra`` ones, partitioned like
    telemetry: the OTLP topics) if missing, and wait until they exist.

    Raises ``RaiwatchError`` within seconds when no bootstrap server accepts a connection.
    """
    if not reachable(cfg.bootstrap_servers):
        raise RaiwatchError(
            f"no Kafka broker answers at {cfg.bootstrap_servers}; start one (`raiwatch kafka start`) or set "
            "kafka.bootstrap_servers / RAIWATCH_KAFKA_BOOTSTRAP"
        )
    wanted = {cfg.telemetry_topic: cfg.partitions, cfg.feedback_topic: cfg.partitions, cfg.dlq_topic: 1}
    wanted.update(dict.fromkeys(extra, cfg.partitions))
    admin = KafkaAdminClient(bootstrap_servers=cfg.bootstrap_servers, client_id="raiwatch-admin")
    try:
        missing = [t for t in wanted if t not in set(admin.list_topics())]
        for name in missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, wanted[name], cfg.replication_factor)])
        deadline = time.monotonic() + timeout_s
        while not set(wanted) <= set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"topics {sorted(wanted)} not visible on {cfg.bootstrap_servers} after {timeout_s}s"
                )
            time.sleep(0.1)
    finally:
        admin.close()
