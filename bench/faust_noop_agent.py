"""A faust agent that only decodes: the ceiling faust's per-message stream sets on this machine.

    python bench/faust_noop_agent.py BOOTSTRAP TOPIC N BATCH [FETCH_MAX_WAIT_MS]   (prints "DONE <seconds>")

Same settings as the raiwatch worker (streams/app.py): ``noack_take`` batches, acks after each,
the fetch wait tuned as the worker tunes it (50 ms unless given).
"""

from __future__ import annotations

import os
import sys
import time

import faust

from raiwatch.codec import telemetry_codec
from streams.app import tune_fetch_wait


def main() -> None:
    bootstrap, topic, total, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tune_fetch_wait(int(sys.argv[5]) if len(sys.argv) > 5 else 50)
    app = faust.App(
        f"noop-{time.time_ns()}", broker=f"kafka://{bootstrap}", value_serializer="raw", key_serializer="raw",
        web_enabled=False, store="memory://", consumer_auto_offset_reset="earliest",
        datadir=f"/tmp/faust-noop-{os.getpid()}", broker_commit_interval=1.0,
    )  # fmt: skip
    seen = {"n": 0, "t0": 0.0}

    @app.agent(app.topic(topic))
    async def process(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(batch, within=0.5):
            seen["t0"] = seen["t0"] or time.perf_counter()
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
