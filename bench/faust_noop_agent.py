"""A faust agent that only decodes: the ceiling faust-streaming's per-message stream sets here.

    <faust venv>/bin/python bench/faust_noop_agent.py BOOTSTRAP TOPIC N BATCH DATADIR
    (prints "FIRST <seconds to its first batch>" and "DONE <seconds from its first batch to the Nth event>")

Run by ``bench/faust_baseline.py`` in a venv of its own (faust-streaming is not a raiwatch
dependency). It does what raiwatch's faust worker did before it was replaced: ``noack_take``
batches, decoded with raiwatch's telemetry codec, each event acked; the consumer's fetch wait
lowered from faust's hard-coded 1500 ms to 50 ms (with 1500 ms, a fetch of empty partitions holds
up the next fetch of full ones: 12.2 s against 2.2 s for 30,000 events, measured 2026-11-27), and
its fetch size per partition 4 MiB, as raiwatch's worker and the bare consumer use.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from raiwatch.core.codec import telemetry_codec

FETCH_MAX_WAIT_MS = 50


def lower_fetch_wait() -> None:
    """faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no setting for it;
    the consumer keeps the value in ``_fetch_max_wait_ms`` until ``start()``."""
    cls = faust_aiokafka.AIOKafkaConsumerThread
    create = cls._create_worker_consumer

    def create_worker_consumer(self, transport):  # type: ignore[no-untyped-def]
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    cls._create_worker_consumer = create_worker_consumer


def main() -> None:
    bootstrap, topic, datadir = sys.argv[1], sys.argv[2], sys.argv[5]
    total, batch = int(sys.argv[3]), int(sys.argv[4])
    lower_fetch_wait()
    began = time.perf_counter()
    app = faust.App(
        f"noop-{time.time_ns()}", broker=f"kafka://{bootstrap}", value_serializer="raw", key_serializer="raw",
        web_enabled=False, store="memory://", consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=4 * 1024 * 1024, datadir=datadir,
        broker_commit_interval=1.0,
    )  # fmt: skip
    seen = {"n": 0, "t0": 0.0}

    @app.agent(app.topic(topic))
    async def process(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(batch, within=0.5):
            if not seen["t0"]:
                seen["t0"] = time.perf_counter()
                sys.stderr.write(f"FIRST {seen['t0'] - began:.3f}\n")
            telemetry_codec.decode_batch([e.message.value for e in events])
            for e in events:
                await stream.ack(e)
            seen["n"] += len(events)
            if seen["n"] >= total:
                sys.stderr.write(f"DONE {time.perf_counter() - seen['t0']:.3f}\n")
                sys.stderr.flush()
                os._exit(0)

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
