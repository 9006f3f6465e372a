"""``raiwatch run``: one streaming worker — the pipeline behind the faust agent."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import faust
from prometheus_client import start_http_server

from raiwatch.batch import BatchResult
from raiwatch.config import Config
from raiwatch.pipeline import Pipeline
from raiwatch.records import IncidentChange
from streams.app import create_app
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
    """A line per batch-result with signals: counts so far, for people and for tests."""

    def __init__(self, pipe: Pipeline):
        self.pipe = pipe

    def __call__(self, result: BatchResult) -> None:
        if result.signals or result.rejected:
            print(
                f"progress events={self.pipe.events_in} signals={self.pipe.signals_out} "
                f"rejected+={len(result.rejected)} late+={result.late} "
                f"open_windows={len(self.pipe.open_windows())}",
                flush=True,
            )


def run_worker(
    cfg: Config, rules_dir: str | Path | None = None, metrics_port: int = 0, loglevel: str = "WARNING"
) -> None:
    """Create topics, restore rule state, then consume until SIGTERM/SIGINT."""
    logging.basicConfig(level=loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ensure_topics(cfg.kafka)
    pipe = Pipeline.from_config(cfg, rules_dir, notify=[log_changes])
    restored = pipe.warm_start()
    print(
        f"worker ready: {len(pipe.engine.firing())} incidents firing, {len(restored)} changes on warm start; "
        f"consuming {cfg.kafka.telemetry_topic} from {cfg.kafka.bootstrap_servers}",
        flush=True,
    )
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")
    app = create_app(cfg, pipe, on_result=_Progress(pipe))
    gc.freeze()  # what start-up allocated is never garbage: keep the collector off it
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
