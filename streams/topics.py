"""Topic names and their creation (kafka-python admin), idempotent."""

from __future__ import annotations

import contextlib
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from raiwatch.core.config import KafkaConfig


def ensure_topics(cfg: KafkaConfig, timeout_s: float = 30.0) -> None:
    """Create the telemetry, feedback and dead-letter topics if missing, and wait until they exist."""
    wanted = {cfg.telemetry_topic: cfg.partitions, cfg.feedback_topic: cfg.partitions, cfg.dlq_topic: 1}
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
