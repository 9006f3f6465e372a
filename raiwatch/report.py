"""Terminal tables for incidents, signals and query results (rich), or JSON lines.

On a terminal, tables fit its width; piped or written to a file, they print whole (rich would cut
them to 80 columns), unless ``COLUMNS`` says how wide to be.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TextIO

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from raiwatch.core.records import Incident

UNBOUNDED = 100_000  # columns of a console that is not a terminal: no table is cut or squeezed


def terminal(file: TextIO | None = None) -> Console:
    """A console on ``file`` (stdout by default): the terminal's width on a terminal, else unbounded."""
    c = Console(file=file)
    if c.is_terminal or "COLUMNS" in os.environ:
        return c
    return Console(file=file, width=UNBOUNDED)


def print_incidents(incidents: Sequence[Incident], as_json: bool = False) -> None:
    """One block per incident: what, how bad, when (event time), the sentence, the runbook."""
    if as_json:
        for inc in incidents:
            print(orjson.dumps(inc.to_contract()).decode())
        return
    if not incidents:
        terminal().print("no incidents")
        return
    colour = {"critical": "red", "high": "yellow", "warning": "cyan", "info": "white"}
    for i in incidents:
        when = f"opened {i.opened_at:%Y-%m-%d %H:%M:%S}Z"
        if i.resolved_at:
            when += f", resolved {i.resolved_at:%H:%M:%S}Z"
        terminal().print(
            f"[bold {colour[i.severity]}]{i.severity.upper()}[/] {i.rule} [dim]{i.incident_id}[/] "
            f"{i.status}{f' feedback={i.feedback}' if i.feedback else ''}\n"
            f"  {i.summary}\n  {when} (event time)\n  runbook: {i.runbook_url}",
            soft_wrap=True,
        )


def print_replay(s, feedback: bool = False) -> None:
    """What a replay did (a ``raiwatch.replay.ReplaySummary``): counts, incidents, where the output is."""
    print(
        f"replayed {s.lines} lines in {s.seconds:.1f}s ({s.events_per_s:,.0f} lines/s): "
        f"{s.events} events, {s.rejected} rejected, {s.late} late, {s.duplicates} duplicates, "
        f"{s.signals} signals, {len(s.incidents)} incidents"
    )
    if feedback:
        print(f"feedback: {s.feedback} labels read, {s.feedback_rejected} rejected")
    if s.events and s.monitor_seconds:
        cost = ", ".join(f"{k} {v / s.events * 1e6:.1f}" for k, v in s.monitor_seconds.items())
        print(f"monitor cost, microseconds per event: {cost}")
    print_incidents(s.incidents)
    print(f"out: {s.out}/incidents.jsonl, {s.out}/rejected.jsonl, ClickHouse at {s.out}/clickhouse")
    if s.kept:
        print(f"{s.kept} (in {s.out}/incidents.db)")


def print_incident(inc: Incident, as_json: bool = False) -> None:
    """Every incident.v1 field, one per line."""
    if as_json:
        print(orjson.dumps(inc.to_contract(), option=orjson.OPT_INDENT_2).decode())
        return
    for k, v in inc.to_contract().items():
        terminal().print(f"[bold]{k:>16}[/]: {escape(str(v))}", soft_wrap=True)


def print_history(rows: Sequence[dict]) -> None:
    """The audit trail: when, what, who, details."""
    if rows:
        terminal().print("[bold]history[/]")
    for r in rows:
        detail = r.get("detail") or ""
        terminal().print(
            f"  {r['at']} {r['kind']:<12} {r.get('actor') or '-'} {escape(str(detail))}", soft_wrap=True
        )


def print_frame(df, as_json: bool = False, title: str | None = None, file: TextIO | None = None) -> None:
    """A pandas DataFrame as a table (or one JSON object per row), on the terminal or to ``file``."""
    if as_json:
        for rec in df.to_dict(orient="records"):
            print(orjson.dumps(rec, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode(), file=file)
        return
    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c), overflow="fold")
    for row in df.itertuples(index=False):
        t.add_row(*(_fmt(v) for v in row))
    terminal(file).print(t)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_backtest(results: Sequence[tuple], since, until, judged: int) -> None:
    """A backtest's table: per rule and version, the incidents it opened, when, for how long, and
    their verdicts from on-call's feedback on overlapping incidents."""
    console = terminal()
    versions = [name for name, _, _ in results]
    console.print(
        f"Backtest over {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC "
        f"({judged} incidents with on-call feedback in the span)",
        soft_wrap=True,
    )
    t = Table()
    t.add_column("rule")
    for v in versions:
        prefix = f"{v}: " if len(versions) > 1 else ""
        t.add_column(f"{prefix}incidents", justify="right")
        t.add_column(f"{prefix}opened (UTC)")
        t.add_column(f"{prefix}median span", justify="right")
        t.add_column(f"{prefix}TP / FP", justify="right")
        t.add_column(f"{prefix}precision", justify="right")
        t.add_column(f"{prefix}missed TPs", justify="right")
    names = sorted({r for _, _, scores in results for r in scores})
    for rule in names:
        row = [rule]
        for _, _, scores in results:
            s = scores.get(rule)
            if s is None:
                row += ["(no rule)", "", "", "", "", ""]
                continue
            when = [f.opened_at.strftime("%m-%d %H:%M") for f in s.fired]
            span = s.median_duration(until)
            row += [
                str(len(s.fired)),
                ", ".join(when[:3]) + (f" +{len(when) - 3}" if len(when) > 3 else ""),
                "-" if span is None else f"{span.total_seconds() / 60:.0f} min",
                f"{s.true_positives} / {s.false_positives}",
                "-" if s.precision is None else f"{s.precision:.0%}",
                str(len(s.missed)),
            ]
        if any(c not in ("0", "", "-", "0 / 0") for c in row[1:]):
            t.add_row(*row)
    console.print(t)
    for name, _, scores in results:
        for s in scores.values():
            for inc in s.missed:
                console.print(
                    f"{name}: {s.rule} would have missed true positive {inc.incident_id} "
                    f"(opened {inc.opened_at:%Y-%m-%d %H:%M}, {escape(inc.summary)})"
                )


def print_stats(rows: Sequence[dict], fp_goal: float) -> None:
    """``incidents stats``: per rule, volume, verdicts, precision, time to acknowledge and resolve."""
    t = Table(title=f"Alert quality per rule (goal: critical rules under {fp_goal:.0%} false positives)")
    for c in (
        "rule",
        "severity",
        "incidents",
        "TP",
        "FP",
        "unrated",
        "precision",
        "to ack",
        "to resolve",
        "goal",
    ):
        t.add_column(c, justify="left" if c in ("rule", "severity", "goal") else "right")

    def minutes(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f} min"

    for r in rows:
        share = r["false_positive_share"]
        goal = ""
        if r["severity"] == "critical":
            goal = "no feedback" if share is None else ("[green]met" if share < fp_goal else "[red]missed")
        t.add_row(
            r["rule"], r["severity"], str(r["incidents"]), str(r["true_positive"]), str(r["false_positive"]),
            str(r["unlabelled"]), "-" if r["precision"] is None else f"{r['precision']:.0%}",
            minutes(r["median_minutes_to_ack"]), minutes(r["median_minutes_to_resolve"]), goal,
        )  # fmt: skip
    terminal().print(t)


def print_suggestions(rule, options: Sequence, chosen, since, until, weeks: float) -> None:
    """``rules suggest``: each candidate threshold, its incidents per week and precision, with bars."""
    console = terminal()
    first = rule.fire_when.clauses[0]
    console.print(
        f"{rule.name}: {first.field} {first.op} THRESHOLD{' * ' + first.ref if first.ref else ''}"
        f" over {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC, {weeks * 7:.2f} days of it with signals"
        " (the rule alone, no inhibition)",
        soft_wrap=True,
    )
    t = Table()
    for c in ("threshold", "incidents", "per week", "TP / FP", "precision", ""):
        t.add_column(c, justify="left" if c in ("threshold", "") else "right")
    top = max((o.per_week for o in options), default=0) or 1
    for o in options:
        mark = " (current)" if o.current else ""
        mark += " ← suggested" if chosen is not None and o is chosen else ""
        t.add_row(
            f"{o.threshold:g}{mark}", str(o.incidents), f"{o.per_week:.1f}",
            f"{o.true_positives} / {o.false_positives}", "-" if o.precision is None else f"{o.precision:.0%}",
            "█" * round(20 * o.per_week / top),
        )  # fmt: skip
    console.print(t)
    if chosen is None:
        console.print(
            "no candidate meets the target: the rule needs another signal or condition, not a threshold"
        )
    else:
        text = rule.fire_when.text.replace(f"{first.coef:g}", f"{chosen.threshold:g}", 1)
        console.print(f"suggested: fire_when: {text}")


def print_silences(rows: Sequence[dict]) -> None:
    t = Table(title="Silences (they hold back notifications of the incidents they match)")
    t.add_column("id", no_wrap=True, min_width=16)
    for c in ("matchers", "from", "until", "author", "comment"):
        t.add_column(c)
    for r in rows:
        matchers = ", ".join(f"{k}={v}" for k, v in r["matchers"].items())
        t.add_row(r["silence_id"], escape(matchers), f"{r['starts_at']:%Y-%m-%d %H:%M}Z",
                  f"{r['ends_at']:%Y-%m-%d %H:%M}Z", escape(r["author"]), escape(r["comment"]))  # fmt: skip
    terminal().print(t)
