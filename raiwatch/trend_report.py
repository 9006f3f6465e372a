"""``raiwatch report``: a static HTML report of the main signals over a span, for people who would
rather look than read.

One PNG per family (matplotlib, no display needed): events per minute, safety-violation rates,
drift (PSI), fairness ratios; the shipped rules' thresholds drawn as dashed lines and each
incident's span shaded on the plots of its model. Then the incidents with their runbooks, in an
``index.html`` beside the images; no script, no network.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only: no display here or on a server
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd

from dashboards.generate import rule_threshold

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

MAX_SERIES = 8  # lines per plot: the series that reach highest (or lowest, for ratios)
SEVERITY_COLOURS = {"critical": "#d62728", "high": "#ff7f0e", "warning": "#bcbd22", "info": "#7f7f7f"}


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    sql: str
    ylabel: str
    threshold: float | None = None
    lowest_first: bool = False  # ratios: the lowest series matter
    percent: bool = False


SPAN = "ts >= {since:DateTime64(3)} AND ts < {until:DateTime64(3)}"
EVENTS_SQL = f"""
SELECT toStartOfMinute(ts) AS t, model_id AS series, toFloat64(count()) AS y
FROM {{db}}.telemetry_events FINAL WHERE {SPAN} GROUP BY t, series ORDER BY t"""
SAFETY_SQL = f"""
SELECT ts AS t, concat(model_id, ' ', dims['category']) AS series, value AS y
FROM {{db}}.signals FINAL
WHERE signal = 'safety.violation_rate' AND NOT mapContains(dims, 'tenant_id') AND {SPAN} ORDER BY t"""
DRIFT_SQL = f"""
SELECT ts AS t, model_id AS series, max(value) AS y
FROM {{db}}.signals FINAL WHERE signal = 'drift.feature' AND {SPAN} GROUP BY t, series ORDER BY t"""
FAIRNESS_SQL = f"""
SELECT ts AS t, concat(model_id, ' ', attribute) AS series, min(ratio) AS y
FROM {{db}}.fairness_metrics FINAL WHERE ratio IS NOT NULL AND {SPAN} GROUP BY t, series ORDER BY t"""
INCIDENTS_SQL = """
SELECT incident_id, severity, rule, status, labels['model_id'] AS model_id, opened_at, resolved_at,
       summary, runbook_url, feedback
FROM {db}.incidents FINAL
WHERE opened_at < {until:DateTime64(3)} AND (resolved_at IS NULL OR resolved_at >= {since:DateTime64(3)})
ORDER BY opened_at"""


def _plots() -> list[Plot]:
    return [
        Plot("events", "Events per minute, per model", EVENTS_SQL, "events / min"),
        Plot(
            "safety", "Safety-violation rate per model and category (60 s windows)", SAFETY_SQL, "rate",
            rule_threshold("safety.yaml", "SafetyViolationRateHigh"), percent=True,
        ),
        Plot(
            "drift", "Feature drift per model: the highest PSI of its features", DRIFT_SQL, "PSI",
            rule_threshold("drift.yaml", "FeatureDrift"),
        ),
        Plot(
            "fairness", "Favourable share against the best-treated group: the lowest group per attribute",
            FAIRNESS_SQL, "ratio to the best group",
            rule_threshold("fairness.yaml", "FavourableOutcomeDisparity"), lowest_first=True,
        ),
    ]  # fmt: skip


def _query(client: Client, sql: str, db: str, since: datetime, until: datetime) -> pd.DataFrame:
    return client.query_df(sql.replace("{db}", db), parameters={"since": since, "until": until})


def _draw(
    plot: Plot, df: pd.DataFrame, incidents: pd.DataFrame, since: datetime, until: datetime, path: Path
) -> int:
    """Write one plot; return how many series it shows."""
    fig, ax = plt.subplots(figsize=(12, 4.2), dpi=100)
    shown = 0
    if len(df):
        extreme = df.groupby("series")["y"].min() if plot.lowest_first else df.groupby("series")["y"].max()
        keep = extreme.sort_values(ascending=plot.lowest_first).index[:MAX_SERIES]
        for series in keep:
            part = df[df["series"] == series]
            ax.plot(part["t"], part["y"], label=series, linewidth=1.2)
        shown = len(keep)
        models = {s.split(" ", 1)[0] for s in keep}
        for inc in incidents.itertuples():
            if inc.model_id in models:
                end = inc.resolved_at if pd.notna(inc.resolved_at) else until
                ax.axvspan(
                    inc.opened_at, end, color=SEVERITY_COLOURS.get(inc.severity, "#7f7f7f"), alpha=0.12
                )
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.text(0.5, 0.5, "no data in this span", ha="center", va="center", transform=ax.transAxes)
    if plot.threshold is not None:
        ax.axhline(plot.threshold, color="black", linestyle="--", linewidth=1, label="rule threshold")
    if plot.percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_xlim(since, until)
    ax.set_title(plot.title, fontsize=10)
    ax.set_ylabel(plot.ylabel)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return shown


def write_report(client: Client, db: str, since: datetime, until: datetime, out: Path) -> Path:
    """Write ``out/index.html`` and its PNGs for ``[since, until)``; return the HTML's path."""
    out.mkdir(parents=True, exist_ok=True)
    incidents = _query(client, INCIDENTS_SQL, db, since, until)
    sections = []
    for plot in _plots():
        df = _query(client, plot.sql, db, since, until)
        png = out / f"{plot.name}.png"
        shown = _draw(plot, df, incidents, since, until, png)
        total = df["series"].nunique() if len(df) else 0
        note = f"{shown} series shown" + (f" of {total}" if shown < total else "")
        if plot.threshold is not None:
            note += f"; dashed line: the shipped rule's threshold ({plot.threshold:g})"
        title = html.escape(plot.title)
        sections.append(
            f'<h2>{title}</h2>\n<img src="{png.name}" alt="{title}">\n'
            f"<p class=note>{html.escape(note)}; shaded: incidents of the models shown</p>"
        )
    rows = "\n".join(_incident_row(i) for i in incidents.itertuples())
    span = f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"
    counts = incidents["severity"].value_counts().items() if len(incidents) else []
    summary = ", ".join(f"{n} {sev}" for sev, n in counts) or "none"
    head = "".join(
        f"<th>{h}</th>" for h in ("opened (UTC)", "severity", "rule", "model", "status", "summary", "")
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>raiwatch report, {span}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}}img{{max-width:100%}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}
.note{{color:#666;font-size:13px}}</style></head><body>
<h1>raiwatch report</h1>
<p>{span}: {len(incidents)} incidents ({summary}).</p>
{chr(10).join(sections)}
<h2>Incidents</h2>
<table><tr>{head}</tr>
{rows}
</table>
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path


def _incident_row(i: Any) -> str:
    cells = (i.opened_at.strftime("%Y-%m-%d %H:%M"), i.severity, i.rule, i.model_id, i.status, i.summary)
    link = f'<td><a href="{html.escape(i.runbook_url)}">runbook</a></td>'
    return "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in cells) + link + "</tr>"
