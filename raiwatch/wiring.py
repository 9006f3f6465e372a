"""Wiring from config: the rules, both stores and the monitors, put together into a ``Pipeline``.

The one place that turns settings into parts; the pipeline itself only takes parts.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from alert_rules import RULES_DIR, Rule, RuleEngine, load_rules
from alert_rules.grouping import Problems
from monitors.base import Monitor
from monitors.registry import build_monitors, catalogue, monitor_classes, monitor_configs
from raiwatch.core import metrics
from raiwatch.core.catalogue import Catalogue
from raiwatch.core.config import Config
from raiwatch.drift_reporter import DriftReporter
from raiwatch.evaljoin import EvaluationJoin
from raiwatch.pipeline import Notify, Observe, Pipeline
from storage.clickhouse import ClickHouseWriter, Client, ConnectOptions, connect, migrate
from storage.incidents import IncidentStore
from storage.incidents.store import Route

log = logging.getLogger("raiwatch.pipeline")

# the collector's thresholds once the pipeline runs. CPython's (700, 10, 10) collect the young
# generation every 700 new containers, which a batch of 20,000 events (a few tuples, lists and
# dicts each) makes hundreds of times, and walk every object the monitors hold in a full
# collection every 100 of those: 1.35-1.50 s of a 200,000-event replay (timed with gc.callbacks).
# At (50,000, 20, 10) the replay still made 20 young collections, 0.28-0.36 s, each walking the
# batch in hand (its lists of 20,000 entries) to find 49 objects in all; at 200,000 it makes none.
# Events and monitor state hold no reference cycles (the one that did, clickhouse-connect's
# insert context, is broken by the writer), so no memory waits for a collection.
GC_THRESHOLDS = (200_000, 20, 10)


def clickhouse_client(cfg: Config, name: str = "", readonly: bool = False) -> Client:
    """The ClickHouse client the settings name (embedded chdb by default), with their timeouts;
    ``name`` one of its own for a thread that queries beside the writer; ``readonly``: one the
    engine refuses writes to."""
    ch = cfg.clickhouse
    options = ConnectOptions(ch.connect_timeout_s, ch.timeout_s, ch.verify_tls, ch.ca_cert)
    return connect(cfg.clickhouse_dsn, ch.database, options, name, readonly)


def settle_collector() -> None:
    """After start-up: freeze what it allocated (no collection walks it again), collect the young
    generation every 200,000 allocations instead of every 700, and turn the collector on.

    ``raiwatch replay`` runs its start-up with the collector off (its collections took 0.17 s of a
    replay of 50 events). That leaves 4,415 unreachable objects, 0.95 MB of cycles the imports
    make; they stay, frozen for good: collecting them here took 0.18-0.23 s."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.enable()  # the command line turns it off for start-up


def build_pipeline(
    cfg: Config,
    rules_dir: str | Path | None = None,
    notify: Sequence[Notify] = (),
    *,
    live: bool = False,
    stop: threading.Event | None = None,
    observers: Sequence[Observe] = (),
    routes: Route | None = None,
) -> Pipeline:
    """Check the monitor settings and the rules, migrate both stores, and wire the pipeline.

    Refuses (``ConfigError``, ``RuleError``) before touching any store when the settings or the
    rules are bad. ``live``: ClickHouse writes retry until they succeed or ``stop`` is set.
    """
    monitors = build_monitors(cfg.windows.size_s, cfg.monitors, cfg.false_alarms_per_model_week)
    evaluation_join = EvaluationJoin.from_config(cfg.otel)  # checks the OTel mapping file
    signals = catalogue()
    rules = load_rules(rules_dir or cfg.rules_dir or None, signals)
    _say_off(monitors, rules, signals)
    ch = cfg.clickhouse
    client = clickhouse_client(cfg)
    migrate(client, ch.database, ch.cluster, ch.events_ttl_days)
    metrics.CLICKHOUSE_UP.set(1)
    writer = ClickHouseWriter(
        client,
        ch.database,
        store_text=ch.store_text,
        retries=None if live else 5,
        stop=stop,
        on_status=_clickhouse_status,
    )
    store = IncidentStore(cfg.incident_db_url)
    engine = RuleEngine(rules, runbook_base(cfg), problems=problems(cfg))
    metrics.RULES_RELOAD_OK.set(1)
    pipe = Pipeline(
        cfg, monitors, engine, writer, store, notify, live=live, catalogue=signals, observers=observers,
        routes=routes,
    )  # fmt: skip
    if cfg.otel.spans_topic or cfg.otel.logs_topic:  # OTLP: operations wait in their window for evaluations
        pipe.evaluations = evaluation_join
    return pipe


def _say_off(monitors: Sequence[Monitor], rules: Sequence[Rule], signals: Catalogue) -> None:
    """One line naming the families turned off and the rules that therefore cannot fire."""
    off = sorted(set(monitor_classes()) - {m.family for m in monitors})
    if not off:
        return
    idle = [r.name for r in rules if (spec := signals.get(r.signal)) is not None and spec.family in off]
    why = f"rules that cannot fire: {', '.join(idle)}" if idle else "no rule reads their signals"
    log.warning("monitor families turned off (monitors.<family>.enabled: false): %s; %s", ", ".join(off), why)


def runbook_base(cfg: Config) -> str:
    """Where incident runbook links point: ``runbook_base_url``, or the shipped runbooks' folder."""
    return cfg.runbook_base_url or (RULES_DIR / "runbooks").as_uri()


def rule_engine(cfg: Config, rules_dir: str | Path | None = None) -> RuleEngine:
    """A rule engine on the rules as they are on disk now (``RuleError`` when they do not lint)."""
    rules = load_rules(rules_dir or cfg.rules_dir or None, catalogue())
    return RuleEngine(rules, runbook_base(cfg), problems=problems(cfg))


def problems(cfg: Config) -> Problems:
    """How incidents group into problems, one page each (``notify.group_by``, ``group_hold_s``)."""
    return Problems(cfg.notify.group_by, timedelta(seconds=cfg.notify.group_hold_s))


def reload_rules(pipe: Pipeline, cfg: Config, rules_dir: str | Path | None = None) -> bool:
    """Load, lint and build the rules on the calling thread (the watcher's, never the pipeline's),
    then hand the engine to ``pipe`` to swap in between batches. A bad edit keeps the old rules,
    logs why and sets ``raiwatch_rules_last_reload_successful`` to 0; False then."""
    try:
        engine = rule_engine(cfg, rules_dir)
    except Exception as e:  # a bad edit (or an unreadable file): the old rules keep running
        metrics.RULE_RELOADS.labels("failed").inc()
        metrics.RULES_RELOAD_OK.set(0)
        log.error("rule reload failed, the previous rules keep running: %s", e)
        return False
    pipe.request_reload(engine)
    return True


def rule_files(cfg: Config, rules_dir: str | Path | None = None) -> list[Path]:
    """The rule files a worker runs on (what a watcher watches)."""
    p = Path(rules_dir or cfg.rules_dir or RULES_DIR)
    return sorted(p.glob("*.yaml")) if p.is_dir() else [p]


def drift_reporter(cfg: Config) -> DriftReporter | None:
    """The worker's Evidently reporter from ``monitors.drift`` (None when both triggers are off, or
    the drift family is)."""
    drift = monitor_configs(cfg.monitors)["drift"]
    if not drift.enabled or (not drift.report_on_incident and not drift.report_every_s):
        return None
    return DriftReporter(
        lambda: clickhouse_client(cfg, "reports"),
        cfg.clickhouse.database,
        cfg.data_path / "reports",
        reference_s=drift.reference_s,
        recent_s=drift.sliding_windows * cfg.windows.size_s,
        every_s=drift.report_every_s,
        on_incident=drift.report_on_incident,
        rows=drift.report_rows,
    )


def _clickhouse_status(ok: bool, detail: str) -> None:
    metrics.CLICKHOUSE_UP.set(1 if ok else 0)
    if not ok:
        log.warning("ClickHouse is unavailable (%s): writes wait and retry; input is paused", detail)
