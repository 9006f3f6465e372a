"""Grafana dashboards as code (grafana-foundation-sdk), written to ``dashboards/*.json``.

    .venv/bin/python -m dashboards.generate          # rewrite the JSON next to this file

Three dashboards, for the data sources ``deploy/compose/grafana/datasources.yaml`` provisions:

- ``raiwatch-pipeline``: worker health from Prometheus (input, rejections, stage and write
  latency, event-time and consumer lag, incidents firing, the notification outbox);
- ``raiwatch-ai-signals``: safety-violation rates and drift from the ClickHouse trend tables, with
  the shipped rules' thresholds drawn in and incidents as annotations;
- ``raiwatch-fairness-abuse``: favourable-share ratios per group against the four-fifths line,
  over-blocking per group, and the abuse campaigns the worker reported.

The ClickHouse panels use the grafana-clickhouse-datasource plugin's SQL editor and its macros
(``$__timeFilter``, ``$__timeInterval``); the tests run every one of those queries against the
schema on replayed data, and every PromQL expression through ``promtool``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, Threshold

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "alert_rules"
PROM = DataSourceRef(type_val="prometheus", uid="raiwatch-prometheus")
CH = DataSourceRef(type_val="grafana-clickhouse-datasource", uid="raiwatch-clickhouse")
MODEL = "model_id IN (${model:singlequote})"


@dataclass
class ClickHouseQuery(cogvariants.Dataquery):
    """A query of the grafana-clickhouse-datasource plugin, in its SQL editor."""

    raw_sql: str
    ref_id: str = "A"
    table: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": {"type": CH.type_val, "uid": CH.uid},
            "editorType": "sql",
            "queryType": "table" if self.table else "timeseries",
            "format": 1 if self.table else 0,  # the plugin's Format: 0 time series, 1 table
            "rawSql": self.raw_sql,
        }


class ClickHouse(cogbuilder.Builder[ClickHouseQuery]):
    def __init__(self, sql: str, ref_id: str = "A", table: bool = False):
        self._query = ClickHouseQuery(" ".join(sql.split()), ref_id, table)

    def build(self) -> ClickHouseQuery:
        return self._query


def rule_threshold(file: str, alert: str) -> float:
    """The number in the ``fire_when`` of a shipped rule (its first comparison), for a threshold line."""
    for group in yaml.safe_load((RULES / file).read_text())["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                return float(re.search(r"[<>]=?\s*([0-9.eE+-]+)", rule["fire_when"]).group(1))
    raise KeyError(f"{alert} not in {file}")


def _threshold_line(value: float, color: str = "red") -> gd.ThresholdsConfig:
    return gd.ThresholdsConfig().mode("absolute").steps([Threshold(None, "green"), Threshold(value, color)])


def _line(panel: timeseries.Panel, threshold: float | None = None) -> timeseries.Panel:
    if threshold is not None:
        panel = panel.thresholds(_threshold_line(threshold)).thresholds_style(
            GraphThresholdsStyleConfig().mode("line")
        )
    return panel


def _model_variable() -> gd.QueryVariable:
    return (
        gd.QueryVariable("model")
        .label("Model")
        .datasource(CH)
        .query("SELECT DISTINCT model_id FROM raiwatch.signals ORDER BY model_id")
        .multi(True)
        .include_all(True)
    )


def _annotation_with_sql(sql: str) -> gd.AnnotationQuery:
    class WithSql(gd.AnnotationQuery):
        def build(self):  # the plugin reads the annotation's SQL from its target
            built = super().build()
            built.target = {"rawSql": " ".join(sql.split()), "editorType": "sql", "format": 1}  # type: ignore[assignment]
            return built

    return WithSql().name("Incidents").datasource(CH).enable(True).icon_color("red")


def pipeline() -> gd.Dashboard:
    def q(expr: str, legend: str = "") -> prometheus.Dataquery:
        return prometheus.Dataquery().expr(expr).legend_format(legend or "__auto")

    def ts(title: str, unit: str, *queries: prometheus.Dataquery, w: int = 12) -> timeseries.Panel:
        p = timeseries.Panel().title(title).datasource(PROM).unit(unit).height(8).span(w)
        for i, query in enumerate(queries):
            p = p.with_target(query.ref_id(chr(65 + i)))
        return p

    return (
        gd.Dashboard("raiwatch: pipeline health")
        .uid("raiwatch-pipeline")
        .tags(["raiwatch"])
        .refresh("30s")
        .time("now-6h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_row(gd.Row("Input"))
        .with_panel(
            ts(
                "Events per second",
                "ops",
                q("sum(rate(raiwatch_events_total[5m]))", "valid"),
                q("sum by (kind) (rate(raiwatch_rejected_events_total[5m]))", "rejected: {{kind}}"),
            )
        )
        .with_panel(
            ts(
                "Late, replayed and duplicate events per second",
                "ops",
                q("sum(rate(raiwatch_late_events_total[5m]))", "late"),
                q("sum(rate(raiwatch_duplicate_events_total[5m]))", "duplicate"),
                q("sum(rate(raiwatch_replayed_events_total[5m]))", "replayed"),
            )
        )
        .with_row(gd.Row("Latency and lag"))
        .with_panel(
            ts(
                "Stage time per batch, p99",
                "s",
                q(
                    "histogram_quantile(0.99, sum by (le, stage) (rate(raiwatch_stage_seconds_bucket[5m])))",
                    "{{stage}}",
                ),
            )
        )
        .with_panel(
            ts(
                "ClickHouse write time per batch, p99",
                "s",
                q(
                    "histogram_quantile(0.99, sum by (le, table) "
                    "(rate(raiwatch_clickhouse_write_seconds_bucket[5m])))",
                    "{{table}}",
                ),
                q("sum by (sink) (increase(raiwatch_write_failures_total[5m]))", "failed: {{sink}}"),
            )
        )
        .with_panel(
            ts(
                "Event-time lag, and how far the rollups trail the watermark",
                "s",
                q("max by (instance) (raiwatch_event_time_lag_seconds)", "{{instance}}"),
                q(
                    "max by (instance) ("
                    "raiwatch_watermark_timestamp_seconds - raiwatch_rollups_timestamp_seconds)",
                    "rollups behind the watermark: {{instance}}",
                ),
            )
        )
        .with_panel(
            ts(
                "Consumer lag per partition",
                "short",
                q("sum by (topic, partition) (raiwatch_consumer_lag_messages)", "{{topic}}/{{partition}}"),
            )
        )
        .with_row(gd.Row("Health and incidents"))
        .with_panel(
            ts(
                "Up",
                "short",
                q("min(raiwatch_kafka_up)", "kafka"),
                q("min(raiwatch_clickhouse_up)", "clickhouse"),
                q("min(raiwatch_ready)", "ready"),
                q("max(raiwatch_input_paused)", "input paused"),
                w=8,
            )
        )
        .with_panel(
            ts(
                "Incidents firing",
                "short",
                q("max by (severity) (raiwatch_incidents_firing)", "{{severity}}"),
                w=8,
            )
        )
        .with_panel(
            ts(
                "Notification outbox",
                "short",
                q("max(raiwatch_notification_outbox_depth)", "waiting"),
                q(
                    "sum by (route, outcome) (increase(raiwatch_notifications_total[5m]))",
                    "{{route}} {{outcome}}",
                ),
                w=8,
            )
        )
        .with_panel(
            stat.Panel()
            .title("Workers")
            .datasource(PROM)
            .height(4)
            .span(6)
            .with_target(q("count(raiwatch_build_info)", "workers"))
        )
        .with_panel(
            stat.Panel()
            .title("Rules reload")
            .datasource(PROM)
            .height(4)
            .span(6)
            .with_target(q("min(raiwatch_rules_last_reload_successful)", "ok"))
        )
    )


# The ClickHouse panels' SQL (the plugin's macros; ${model:singlequote}: the chosen models)
INCIDENT_MARKS = """
SELECT opened_at AS time, coalesce(resolved_at, now()) AS timeEnd,
       concat(severity, ' ', rule, ': ', summary) AS text
FROM raiwatch.incidents FINAL
WHERE $__timeFilter(opened_at) AND labels['model_id'] IN (${model:singlequote})"""
SAFETY_RATES = f"""
SELECT $__timeInterval(ts) AS time, concat(model_id, ' ', dims['category']) AS series,
       sum(value * n) / sum(n) AS rate
FROM raiwatch.signals FINAL
WHERE $__timeFilter(ts) AND signal = 'safety.violation_rate' AND NOT mapContains(dims, 'tenant_id')
  AND {MODEL}
GROUP BY time, series ORDER BY time"""
TRAFFIC = f"""
SELECT $__timeInterval(hour) AS time, model_id AS series, sum(events) AS requests
FROM raiwatch.events_1h
WHERE $__timeFilter(hour) AND {MODEL}
GROUP BY time, series ORDER BY time"""
SAFETY_DAILY = f"""
SELECT * FROM raiwatch.safety_rates_daily
WHERE {MODEL} AND day >= toDate($__fromTime) ORDER BY day DESC, rate DESC"""
DRIFT = f"""
SELECT $__timeInterval(ts) AS time, concat(model_id, ' ', dims['feature']) AS series, max(value) AS psi
FROM raiwatch.signals FINAL
WHERE $__timeFilter(ts) AND signal = 'drift.feature' AND {MODEL}
GROUP BY time, series ORDER BY time"""
DRIFT_DAILY = f"""
SELECT * FROM raiwatch.drift_daily
WHERE {MODEL} AND day >= toDate($__fromTime) ORDER BY day DESC, max_psi DESC LIMIT 100"""
INCIDENTS = """
SELECT opened_at, severity, rule, status, labels['model_id'] AS model, summary, feedback, runbook_url
FROM raiwatch.incidents FINAL
WHERE $__timeFilter(opened_at) AND labels['model_id'] IN (${model:singlequote})
ORDER BY opened_at DESC"""
FAIRNESS_RATIOS = f"""
SELECT $__timeInterval(ts) AS time, concat(model_id, ' ', attribute, '=', `group`) AS series,
       min(ratio) AS lowest_ratio
FROM raiwatch.fairness_metrics FINAL
WHERE $__timeFilter(ts) AND ratio IS NOT NULL AND {MODEL}
GROUP BY time, series ORDER BY time"""
BLOCK_RATES = f"""
SELECT $__timeInterval(ts) AS time, concat(model_id, ' ', attribute, '=', `group`) AS series,
       max(block_rate) AS highest_block_rate
FROM raiwatch.fairness_metrics FINAL
WHERE $__timeFilter(ts) AND block_rate IS NOT NULL AND {MODEL}
GROUP BY time, series ORDER BY time"""
FAIRNESS_DAILY = f"""
SELECT * FROM raiwatch.fairness_daily
WHERE {MODEL} AND day >= toDate($__fromTime) ORDER BY day DESC, ratio LIMIT 200"""
ABUSE_CLUSTERS = f"""
SELECT model_id, cluster_id, mode, first_seen, last_seen, prompts_total, accounts, new_accounts,
       violation_share, sample
FROM raiwatch.abuse_clusters FINAL
WHERE last_seen >= $__fromTime AND {MODEL} ORDER BY last_seen DESC LIMIT 100"""


def _series(title: str, sql: str, unit: str = "", threshold: float | None = None) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).datasource(CH).height(9).span(24).with_target(ClickHouse(sql))
    return _line(panel.unit(unit) if unit else panel, threshold)


def _table(title: str, sql: str) -> table.Panel:
    return (
        table.Panel().title(title).datasource(CH).height(8).span(24).with_target(ClickHouse(sql, table=True))
    )


def _clickhouse_board(title: str, uid: str) -> gd.Dashboard:
    """A dashboard on the trend tables: the last day, a model picker, incidents as annotations."""
    return (
        gd.Dashboard(title)
        .uid(uid)
        .tags(["raiwatch"])
        .refresh("1m")
        .time("now-24h", "now")
        .with_variable(_model_variable())
        .annotation(_annotation_with_sql(INCIDENT_MARKS))
    )


def ai_signals() -> gd.Dashboard:
    violation = rule_threshold("safety.yaml", "SafetyViolationRateHigh")
    psi = rule_threshold("drift.yaml", "FeatureDrift")
    return (
        _clickhouse_board("raiwatch: AI signals", "raiwatch-ai-signals")
        .with_row(gd.Row("Traffic"))
        .with_panel(_series("Requests per model and hour (events_1h rollup)", TRAFFIC))
        .with_row(gd.Row("Safety"))
        .with_panel(
            _series(
                f"Safety-violation rate per model and category (SafetyViolationRateHigh at {violation:.0%})",
                SAFETY_RATES,
                "percentunit",
                violation,
            )
        )
        .with_panel(_table("Daily safety-violation rates", SAFETY_DAILY))
        .with_row(gd.Row("Drift"))
        .with_panel(_series(f"Feature drift, PSI (rule FeatureDrift above {psi:g})", DRIFT, threshold=psi))
        .with_panel(_table("Most drifted features by day", DRIFT_DAILY))
        .with_row(gd.Row("Incidents"))
        .with_panel(_table("Incidents", INCIDENTS))
    )


def fairness_abuse() -> gd.Dashboard:
    four_fifths = rule_threshold("fairness.yaml", "FavourableOutcomeDisparity")
    return (
        _clickhouse_board("raiwatch: fairness and abuse", "raiwatch-fairness-abuse")
        .with_row(gd.Row("Fairness"))
        .with_panel(
            _series(
                f"Favourable share against the best-treated group (four-fifths line at {four_fifths:g})",
                FAIRNESS_RATIOS,
                threshold=four_fifths,
            )
        )
        .with_panel(_series("Blocked share per group against the rest", BLOCK_RATES, "percentunit"))
        .with_panel(_table("Daily fairness, lowest ratios first", FAIRNESS_DAILY))
        .with_row(gd.Row("Abuse"))
        .with_panel(_table("Prompt clusters reported (campaigns)", ABUSE_CLUSTERS))
    )


DASHBOARDS = {"pipeline-health": pipeline, "ai-signals": ai_signals, "fairness-abuse": fairness_abuse}


def render() -> dict[str, str]:
    """File name -> the dashboard's JSON text."""
    return {
        f"{name}.json": json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(out: Path = HERE) -> int:
    for name, text in render().items():
        (out / name).write_text(text)
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE))
