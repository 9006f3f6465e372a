"""``raiwatch run``: one streaming worker — the pipeline behind the Kafka loop, until stopped.

Exit status: 0 after SIGTERM/SIGINT (what was done is committed), 1 when something stopped the
worker (the error is logged with its traceback), so a supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from pathlib import Path

from kafka.errors import KafkaError

from raiwatch import health
from raiwatch.core.batch import BatchResult
from raiwatch.core.config import Config
from raiwatch.core.errors import RaiwatchError
from raiwatch.core.records import IncidentChange
from raiwatch.pipeline import Pipeline
from streams.consumer import StreamWorker
from streams.topics import ensure_topics

log = logging.getLogger("raiwatch.worker")


def log_changes(changes: list[IncidentChange]) -> None:
    """Print each incident opened or resolved (updates are quiet), with its runbook."""
    for c in changes:
        inc = c.incident
        if c.kind == "opened":
            print(
                f"INCIDENT OPENED [{inc.severity}] {inc.incident_id} {inc.summary} "
                f"runbook: {inc.runbook_url}",
                flush=True,
            )
        elif c.kind == "resolved":
            print(f"INCIDENT RESOLVED {inc.incident_id} ({inc.rule} {inc.labels})", flush=True)


class _Progress:
    """A line per batch-result with signals or rejections: counts so far, for people and for tests."""

    def __init__(self, pipe: Pipeline):
        self.pipe = pipe

    def __call__(self, result: BatchResult) -> None:
        print(
            f"progress events={self.pipe.events_in} signals={self.pipe.signals_out} "
            f"rejected+={len(result.rejected)} late+={result.late} replayed+={result.replayed} "
            f"duplicates+={result.duplicates} open_windows={len(self.pipe.open_windows())}",
            flush=True,
        )


def run_worker(
    cfg: Config,
    rules_dir: str | Path | None = None,
    metrics_port: int = 0,
    loglevel: str = "WARNING",
    metrics_host: str = "127.0.0.1",
) -> int:
    """Create topics, restore rule state, then consume until SIGTERM/SIGINT; return the exit status."""
    logging.basicConfig(level=loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("urllib3", "clickhouse_connect", "kafka", "aiokafka"):
        # their retries and reconnects (aiokafka logs one ERROR per 100 ms of a broker outage) are
        # reported once by raiwatch, with what it does about them
        logging.getLogger(noisy).setLevel(max(logging.CRITICAL, logging.getLogger().level))
    try:
        ensure_topics(cfg.kafka)
    except (KafkaError, TimeoutError) as e:
        raise RaiwatchError(
            f"no Kafka broker answers at {cfg.kafka.bootstrap_servers} ({type(e).__name__}); start one "
            "(`raiwatch kafka start`) or set kafka.bootstrap_servers / RAIWATCH_KAFKA_BOOTSTRAP"
        ) from None
    stop = threading.Event()
    pipe = Pipeline.from_config(cfg, rules_dir, notify=[log_changes], live=True, stop=stop)
    restored = pipe.warm_start()
    worker = StreamWorker(
        cfg, pipe, on_result=_Progress(pipe), stop_event=stop, writable=lambda: pipe.writer.available
    )
    if metrics_port:
        health.serve(metrics_host, metrics_port, lambda: _readiness(worker))
    print(
        f"worker ready: {len(pipe.engine.firing())} incidents firing, {len(restored)} changes on warm start; "
        f"consuming {cfg.kafka.telemetry_topic} from {cfg.kafka.bootstrap_servers}",
        flush=True,
    )
    gc.freeze()  # what start-up allocated is never garbage: keep the collector off it

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    try:
        asyncio.run(main())
    except Exception:
        log.exception("the worker stopped on an error; its uncommitted input will be read again")
        return 1
    print("worker stopped", flush=True)
    return 0


def _readiness(worker: StreamWorker) -> tuple[bool, str]:
    if worker.ready:
        return True, "ready: consuming and writing"
    if worker.broker_down:
        return False, "not ready: Kafka does not answer fetches"
    if worker.paused:
        return False, "not ready: input paused while writes wait (is ClickHouse reachable?)"
    if not worker.writable():
        return False, "not ready: ClickHouse writes are failing and being retried"
    return False, "not ready: no partitions assigned yet"
