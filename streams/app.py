"""The faust worker: batches from ``ai.telemetry.v1`` into a batch handler, bad events to the DLQ.

The agent is the loop and nothing more; the handler (``raiwatch.pipeline.Pipeline``) does the
work and writes durably before it returns. Offsets advance only for events whose window has
closed (see ``streams.acks``). An idle timer closes open windows after ``idle_close_s`` of
silence so the last windows of a burst are not held forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from raiwatch.batch import BatchHandler, BatchResult
from raiwatch.codec import Rejected
from raiwatch.config import Config
from streams.acks import AckTracker

log = logging.getLogger("raiwatch.worker")


def tune_fetch_wait(max_wait_ms: int) -> None:
    """Make faust's Kafka consumer wait at most ``max_wait_ms`` for an empty fetch.

    faust-streaming 0.15 builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no
    setting to change it. aiokafka fetches only partitions with nothing buffered, so a fetch of
    empty partitions holds up the next fetch of full ones for the whole wait: measured here, a
    faust agent that only decodes drained 30,000 events in 12.2 s with 1500 ms and 2.2 s with
    50 ms (bench/faust_noop_agent.py). The consumer keeps the value in ``_fetch_max_wait_ms``
    until ``start()``, so it is set right after faust creates it.
    """
    cls = faust_aiokafka.AIOKafkaConsumerThread
    create = cls.__dict__.get("_raiwatch_create", cls._create_worker_consumer)

    def create_worker_consumer(self, transport):  # type: ignore[no-untyped-def]
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms
        return consumer

    cls._raiwatch_create = create
    cls._create_worker_consumer = create_worker_consumer


def broker_url(bootstrap_servers: str) -> str:
    """faust's broker URL for a comma-separated bootstrap list."""
    return ";".join(f"kafka://{h.strip()}" for h in bootstrap_servers.split(",") if h.strip())


def create_app(
    cfg: Config, handler: BatchHandler, on_result: Callable[[BatchResult], None] | None = None
) -> faust.App:
    """A faust app whose one agent feeds ``handler``; run it with ``faust.Worker(app)``."""
    k = cfg.kafka
    tune_fetch_wait(k.fetch_max_wait_ms)
    app = faust.App(
        k.group_id,
        broker=broker_url(k.bootstrap_servers),
        datadir=str(cfg.data_path / "faust"),
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        web_enabled=False,
        topic_partitions=k.partitions,
        topic_replication_factor=k.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=k.session_timeout_s,
        broker_heartbeat_interval=min(3.0, k.session_timeout_s / 3),
        broker_commit_interval=1.0,
        producer_acks=-1,
        stream_wait_empty=False,
    )
    telemetry = app.topic(k.telemetry_topic, partitions=k.partitions)
    dlq = app.topic(k.dlq_topic, partitions=1)
    acks = AckTracker()
    last_batch = [time.monotonic()]

    async def dead_letter(rejected: list[Rejected], keys: list[bytes | None]) -> None:
        """Send each rejected event with its reason, and wait until the broker has them all."""
        now = datetime.now(UTC).isoformat().encode()
        futures = [
            await dlq.send(
                key=key,
                value=r.raw,
                headers=[("reason", r.reason.encode()), ("source", r.source.encode()), ("rejected_at", now)],
            )
            for r, key in zip(rejected, keys, strict=True)
        ]
        for fut in futures:
            await fut

    @app.agent(telemetry)
    async def process(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(k.batch_size, within=k.batch_within_s):
            msgs = [e.message for e in events]
            result = handler.process(
                [m.value or b"" for m in msgs],
                [m.partition for m in msgs],
                lambda i, msgs=msgs: f"{msgs[i].topic}/{msgs[i].partition}@{msgs[i].offset}",
            )
            if result.rejected:
                await dead_letter(result.rejected, [msgs[r.index].key for r in result.rejected])
            acks.hold(stream, events, result.windows, result.durable)
            await acks.release(handler.open_windows())
            last_batch[0] = time.monotonic()
            if on_result:
                on_result(result)

    @app.on_partitions_revoked.connect
    async def forget_revoked(app: faust.App, revoked: set, **kwargs: object) -> None:
        """A partition handed to another worker must not hold this worker's watermark back."""
        for tp in revoked:
            if tp.topic == k.telemetry_topic:
                handler.forget_source(tp.partition)

    @app.timer(interval=0.5)
    async def close_idle_windows() -> None:
        if time.monotonic() - last_batch[0] < cfg.windows.idle_close_s:
            return
        if handler.open_windows():
            result = handler.close_all()
            if on_result:
                on_result(result)
        if acks.held:
            handler.flush()
            await acks.release(handler.open_windows())

    return app
