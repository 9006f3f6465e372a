"""``raiwatch run``: one streaming worker — the pipeline behind the Kafka loop, until stopped.

Exit status: 0 after SIGTERM/SIGINT (what was done is committed), 1 when something stopped the
worker (the error is logged with its traceback), so a supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from kafka.errors import KafkaError
from pythonjsonlogger.json import JsonFormatter

from raiwatch import __version__, health
from raiwatch.core import metrics
from raiwatch.core.batch import BatchResult
from raiwatch.core.config import Config
from raiwatch.core.errors import RaiwatchError
from raiwatch.core.records import IncidentChange
from raiwatch.datadir import WORKER, hold_for
from raiwatch.delivery import Delivery, router
from raiwatch.pipeline import Pipeline
from raiwatch.wiring import build_pipeline, drift_reporter, reload_rules, rule_files, settle_collector
from storage.clickhouse import served_url_file
from storage.clickhouse.httpserver import ClickHouseHTTPServer
from streams.consumer import StreamWorker
from streams.topics import ensure_topics

log = logging.getLogger("raiwatch.worker")


def serve_store(cfg: Config, pipe: Pipeline) -> ClickHouseHTTPServer | None:
    """Serve an embedded store read-only over ClickHouse's HTTP interface while this worker holds it,
    and write its URL, with the random password it takes, beside the data path for ``raiwatch query``
    (mode 0600: who can read it can query). None: a server DSN, or off."""
    from storage.clickhouse.client import write_served_url
    from storage.clickhouse.httpserver import Limits

    ch = cfg.clickhouse
    if not ch.serve_http or not cfg.clickhouse_dsn.startswith("chdb:"):
        return None
    limits = Limits(
        max_execution_time_s=ch.http_max_execution_time_s, max_result_rows=ch.http_max_result_rows
    )
    try:
        server = ClickHouseHTTPServer(
            pipe.writer.client, ch.http_host, ch.http_port, readonly=True, limits=limits
        )
        server.start()
    except OSError as e:
        raise RaiwatchError(
            f"cannot serve the ClickHouse data on {ch.http_host}:{ch.http_port} ({e.strerror or e}); "
            "set clickhouse.http_port to a free port (0 picks one) or clickhouse.serve_http: false"
        ) from None
    write_served_url(served_url_file(cfg.clickhouse_dsn), server.dsn)
    log.info("serving the trend tables read-only on %s (ClickHouse HTTP interface)", server.url)
    return server


class RuleWatcher:
    """Calls ``on_change``, on its own thread, when a rule file's size or modification time changes
    (checked every ``every_s``; 0: never), a file appears in or leaves its folder, or ``trigger``
    is called (SIGHUP)."""

    def __init__(self, files: list[Path], every_s: float, on_change: Callable[[], None]):
        self.folders = sorted({f.parent for f in files})
        self.every_s = every_s
        self.on_change = on_change
        self._stop = threading.Event()
        self._asked = threading.Event()
        self._seen = self._fingerprint()

    def _fingerprint(self) -> dict[Path, tuple[int, int]]:
        out = {}
        for folder in self.folders:
            for f in folder.glob("*.yaml"):
                try:
                    st = f.stat()
                except OSError:
                    continue
                out[f] = (st.st_mtime_ns, st.st_size)
        return out

    def start(self) -> None:
        threading.Thread(target=self._loop, name="raiwatch-rule-watch", daemon=True).start()

    def trigger(self) -> None:
        """Reload now, whether or not a file changed (any thread; returns at once)."""
        self._asked.set()

    def stop(self) -> None:
        self._stop.set()
        self._asked.set()

    def _loop(self) -> None:
        while True:
            asked = self._asked.wait(self.every_s or None)
            if self._stop.is_set():
                return
            self._asked.clear()
            now = self._fingerprint()
            if asked or now != self._seen:
                self._seen = now
                log.info("rule reload asked for (SIGHUP)" if asked else "rule files changed: reloading")
                self.on_change()


def log_changes(changes: list[IncidentChange]) -> None:
    """Log each incident opened or resolved (updates are quiet), with its runbook."""
    for c in changes:
        inc = c.incident
        fields = {"incident_id": inc.incident_id, "rule": inc.rule, "severity": inc.severity, **inc.labels}
        if c.kind == "opened":
            log.info(
                "INCIDENT OPENED [%s] %s %s runbook: %s",
                inc.severity, inc.incident_id, inc.summary, inc.runbook_url, extra=fields,
            )  # fmt: skip
        elif c.kind == "resolved":
            log.info("INCIDENT RESOLVED %s (%s %s)", inc.incident_id, inc.rule, inc.labels, extra=fields)
        elif c.kind == "reopened":
            log.info("INCIDENT REOPENED %s (%s %s): fired again soon after resolving, not paged again",
                     inc.incident_id, inc.rule, inc.labels, extra=fields)  # fmt: skip


class _Progress:
    """A line per result with signals, incident changes or rejections, and one when no window is left
    unsettled (open, or closed but not yet written and checkpointed): counts so far, for people and
    for tests. After the input stops, that ``open_windows=0`` line says everything read is written
    and its offsets may be committed; it can come a tick after the last signals, as a closed
    window's checkpoint may follow its results by up to ``kafka.commit_interval_s``."""

    def __init__(self, pipe: Pipeline):
        self.pipe = pipe
        self._open = 0  # unsettled windows in the last line

    def __call__(self, result: BatchResult) -> None:
        open_windows = len(self.pipe.open_windows())
        if not (result.signals or result.rejected or result.changes) and (open_windows or not self._open):
            return
        self._open = open_windows
        counts = {
            "events": self.pipe.events_in,
            "signals": self.pipe.signals_out,
            "rejected": len(result.rejected),
            "late": result.late,
            "replayed": result.replayed,
            "duplicates": result.duplicates,
            "open_windows": open_windows,
        }
        log.info(
            "progress events=%(events)d signals=%(signals)d rejected+=%(rejected)d late+=%(late)d "
            "replayed+=%(replayed)d duplicates+=%(duplicates)d open_windows=%(open_windows)d",
            counts,
            extra=counts,
        )


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Log lines to stdout, plain (time, level, logger, message) or one JSON object each, with the
    fields a line carries (incident and model ids, counts); libraries' retry noise held back."""
    handler = logging.StreamHandler(sys.stdout)
    if json_lines:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    try:
        root.setLevel(level.upper())
    except ValueError:
        raise RaiwatchError(f"log level {level!r} is not one of DEBUG, INFO, WARNING, ERROR") from None
    for noisy in ("urllib3", "clickhouse_connect", "kafka", "aiokafka", "alembic"):
        # aiokafka logs one ERROR per 100 ms of a broker outage; raiwatch says once what happens
        logging.getLogger(noisy).setLevel(logging.CRITICAL if noisy != "alembic" else logging.WARNING)


def run_worker(
    cfg: Config,
    rules_dir: str | Path | None = None,
    metrics_port: int | None = None,
    loglevel: str = "INFO",
    json_logs: bool = False,
) -> int:
    """Create topics, then consume until SIGTERM/SIGINT; return the exit status."""
    hold_for(cfg, WORKER)  # the embedded store's folder is this worker's until it ends
    setup_logging(loglevel, json_logs)
    try:
        ensure_topics(cfg.kafka, extra=[t for t in (cfg.otel.spans_topic, cfg.otel.logs_topic) if t])
    except (KafkaError, TimeoutError) as e:
        raise RaiwatchError(
            f"no Kafka broker answers at {cfg.kafka.bootstrap_servers} ({type(e).__name__}); start one "
            "(`raiwatch kafka start`) or set kafka.bootstrap_servers / RAIWATCH_KAFKA_BOOTSTRAP"
        ) from None
    started: list[StreamWorker] = []  # /readyz says "starting" until the consumer exists
    if cfg.metrics.enabled:
        port = cfg.metrics.port if metrics_port is None else metrics_port
        try:
            http = health.serve(
                cfg.metrics.host, port, lambda: _readiness(started[0]) if started else (False, "starting")
            )
        except OSError as e:
            raise RaiwatchError(
                f"cannot serve /metrics on {cfg.metrics.host}:{port} ({e.strerror or e}); set metrics.port "
                "(or --metrics-port) to a free port, 0 for any, or metrics.enabled: false"
            ) from None
        host, bound = http.server_address[:2]
        log.info("serving /metrics, /healthz and /readyz on http://%s:%d", host, bound)
    metrics.BUILD_INFO.labels(__version__, platform.python_version()).set(1)
    stop = threading.Event()
    reporter = drift_reporter(cfg)
    observers = [reporter] if reporter else []
    pipe = build_pipeline(
        cfg,
        rules_dir,
        notify=[log_changes],
        live=True,
        stop=stop,
        observers=observers,
        routes=router(cfg.notify),
    )
    served = serve_store(cfg, pipe)
    delivery = Delivery(pipe.store, cfg.notify) if cfg.notify.routes else None
    if delivery:
        pipe.notify.append(delivery.wake)  # the outbox is read as soon as a window's changes are stored
        delivery.start()
    worker = StreamWorker(
        cfg, pipe, on_result=_Progress(pipe), stop_event=stop, writable=lambda: pipe.writer.available
    )
    started.append(worker)
    log.info(  # a model's rule state comes back from the store when its partition is assigned here
        "worker ready: consuming %s from %s", cfg.kafka.telemetry_topic, cfg.kafka.bootstrap_servers
    )
    settle_collector()

    # rules are loaded, linted and built on the watcher's thread (on a change, or SIGHUP); the
    # pipeline thread only swaps the engine in between batches
    watcher = RuleWatcher(
        rule_files(cfg, rules_dir), cfg.rules_watch_s, lambda: reload_rules(pipe, cfg, rules_dir)
    )
    watcher.start()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        loop.add_signal_handler(signal.SIGHUP, watcher.trigger)
        await worker.run()

    try:
        asyncio.run(main())
    except Exception:
        log.exception("the worker stopped on an error; its uncommitted input will be read again")
        return 1
    finally:
        if reporter:
            reporter.close()
        if delivery:
            delivery.stop()
        watcher.stop()
        if served:
            served.stop()
            served_url_file(cfg.clickhouse_dsn).unlink(missing_ok=True)
    pipe.mirror_now()  # what on-call did since the last copy reaches the ClickHouse mirror too
    pipe.roll_up_now()  # and the rollups reach the last closed window
    log.info("worker stopped")
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
