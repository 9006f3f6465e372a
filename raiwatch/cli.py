"""The ``raiwatch`` command line.

A mistake of the user's (a bad path, bad SQL, no broker, a bad config) ends in one line on stderr
that says what is wrong and what to do, and exit status 2; never in a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import gc
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from raiwatch import datadir, otelcli
from raiwatch.core.config import Config, load_config
from raiwatch.core.errors import ConfigError, RaiwatchError

RULES_DIR = Path(__file__).resolve().parent.parent / "alert_rules"
PARTIAL = "use the output of a replay that did not finish (its history stops early)"


def _cfg(args: argparse.Namespace, monitors: bool = False) -> Config:
    """The settings of ``--config`` and ``--data-dir``; ``monitors``: check the ``monitors``
    section too (commands that run monitors, which cost seconds to import, ask for it)."""
    sections = None
    if monitors:
        from monitors.registry import monitor_classes

        sections = {"monitors": {family: cls.Config for family, cls in monitor_classes().items()}}
    return load_config(getattr(args, "config", None), sections, data_dir=getattr(args, "data_dir", None))


def cmd_replay(args: argparse.Namespace) -> int:
    # start-up (imports, the engine) leaves next to no garbage (``settle_collector`` says how much):
    # the collector is off until the replay's ``settle_collector``, or this ``finally``
    was_on = gc.isenabled()
    gc.disable()
    try:
        return _replay(args)
    finally:
        if was_on:
            gc.enable()


def _replay(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from raiwatch.replay import ReplayInterrupted, check_inputs, replay
    from raiwatch.report import print_replay

    check_inputs(args.events, args.feedback, args.otlp_logs)  # before the seconds checking the monitors takes
    cfg = _cfg(args, monitors=True)
    size = Path(args.events).stat().st_size if Path(args.events).is_file() else 0
    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=True,
            disable=args.quiet,
        ) as bar:
            task = bar.add_task("replaying", total=size)
            s = replay(
                args.events, cfg, args.out, args.rules, args.feedback, lambda n: bar.advance(task, n),
                force=args.force, otlp=args.otlp or bool(args.otlp_logs), otlp_logs=args.otlp_logs,
            )  # fmt: skip
    except ReplayInterrupted as e:
        print(f"raiwatch: {e}", file=sys.stderr)
        return 130
    print_replay(s, feedback=bool(args.feedback))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from raiwatch.worker import run_worker

    return run_worker(
        _cfg(args, monitors=True), args.rules, args.metrics_port, args.log_level, args.json_logs
    )


def cmd_produce(args: argparse.Namespace) -> int:
    from streams.producer import produce

    cfg = _cfg(args)
    path = _input_file(args.file, "telemetry events")
    bootstrap = args.bootstrap or cfg.kafka.bootstrap_servers
    topic = args.topic or cfg.kafka.telemetry_topic
    with path.open("rb") as f:
        report = produce(f, bootstrap, topic, max_bytes=cfg.kafka.max_message_bytes)
    print(f"published {report.sent} messages to {topic} on {bootstrap}")
    for line, why in report.skipped:
        print(f"{path}:{line}: not sent: {why}", file=sys.stderr)
    return 1 if report.skipped else 0


def cmd_generate(args: argparse.Namespace) -> int:
    from raiwatch.dev import synth

    builtin = {"--events": args.events, "--rate": args.rate, "--garbage": args.garbage}
    if args.scenario:
        given = [flag for flag, v in builtin.items() if v is not None]
        if given:
            flags = ", ".join(given)
            raise RaiwatchError(f"{flags} shape the built-in scenario; edit {args.scenario} instead")
        sc = synth.load_scenario(_input_file(args.scenario, "scenario (YAML)"))
    else:  # the demo's traffic, ending a few minutes ago unless --start says otherwise
        sc = synth.demo_scenario(
            args.events or synth.DEMO_EVENTS,
            args.rate or synth.DEMO_RATE,
            synth.DEMO_GARBAGE if args.garbage is None else args.garbage,
        )
    if args.seed is not None:
        sc = msgspec.structs.replace(sc, seed=args.seed)
    if args.start:
        sc = msgspec.structs.replace(sc, start=_start(args.start, sc))
    out = Path(args.out)
    if out.is_dir():
        raise RaiwatchError(f"{out} is a folder; give the events file to write, e.g. {out / 'events.jsonl'}")
    truth = synth.write(out, sc)
    extra = f", {truth['labels']} labels to {synth.feedback_path(out)}" if truth["labels"] else ""
    print(
        f"wrote {truth['events']} lines ({truth['malformed']} malformed) to {out}{extra}; "
        f"{len(truth['anomalies'])} anomalies in {synth.truth_path(out)}"
    )
    return 0


def _start(text: str, sc) -> datetime:
    """``--start``: ``recent`` (the scenario ends a few minutes ago) or an ISO time with a zone."""
    from raiwatch.dev import synth

    if text == "recent":
        span = synth.seconds(sc.duration)
        return synth.recent_start(int(span), 1.0)
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise RaiwatchError(f"--start {text!r}: write recent or a time like 2026-11-02T08:00:00Z") from None
    if start.tzinfo is None:
        raise RaiwatchError(f"--start {text!r} needs a time zone, e.g. {text}+00:00")
    return start


def cmd_reference_build(args: argparse.Namespace) -> int:
    from rich.table import Table

    from monitors.drift import REFERENCE_VERSION, ReferenceBuilder, ReferenceFile
    from monitors.registry import monitor_configs
    from raiwatch.core.codec import telemetry_codec
    from raiwatch.replay import read_chunks
    from raiwatch.report import terminal

    cfg = _cfg(args, monitors=True)
    path = _input_file(args.events, "telemetry events")
    out = Path(args.out)
    if out.is_dir():
        raise RaiwatchError(f"--out {out} is a folder; give the reference file to write")
    builder = ReferenceBuilder(monitor_configs(cfg.monitors)["drift"])
    bad = 0
    for _, lines in read_chunks(path, 20_000):
        res = telemetry_codec.decode_batch([b for b in lines if b.strip()])
        builder.add(res.events)
        bad += len(res.rejected)
    refs = builder.build()
    if not refs:
        raise RaiwatchError(f"{path}: no model has the 200 valid events a reference needs")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(
        msgspec.msgpack.encode(ReferenceFile(REFERENCE_VERSION, {m: r for m, (r, _) in refs.items()}))
    )
    t = Table(title=f"drift references in {out} ({bad} invalid lines skipped)")
    for c in ("model", "events read", "sample", "features", "numeric", "reference id"):
        t.add_column(c)
    for m, (r, n) in refs.items():
        numeric = sum(f.numeric for f in r.features)
        t.add_row(m, f"{n:,}", f"{r.n:,}", str(len(r.features)), str(numeric), r.id)
    terminal().print(t)
    print(f"use it: monitors: {{drift: {{reference_file: {out.resolve()}}}}} in the config file")
    return 0


def cmd_rules_test(args: argparse.Namespace) -> int:
    from alert_rules.ruletest import RuleTestError, run_file
    from monitors.registry import catalogue

    signals = catalogue()
    files = [f for p in args.files for f in (sorted(p.glob("*.test.yaml")) if p.is_dir() else [p])]
    if not files:
        raise ConfigError(f"no test files in {', '.join(map(str, args.files))} (they end in .test.yaml)")
    tests = failed = 0
    for f in files:
        try:
            n, failures = run_file(f, signals)
        except RuleTestError as e:
            raise ConfigError(str(e)) from None
        tests += n
        failed += len({x.test for x in failures})
        for x in failures:
            print(f"FAILED {f}: test {x.test!r} at {x.eval_time}:")
            for m in x.missing:
                print(f"  expected, not firing: {m}")
            for u in x.unexpected:
                print(f"  firing, not expected: {u}")
        if not failures:
            print(f"ok {f}: {n} tests")
    if failed:
        print(f"{failed} of {tests} tests failed", file=sys.stderr)
        return 1
    print(f"ok: {tests} tests in {len(files)} files")
    return 0


def _when(text: str | None, what: str) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RaiwatchError(f"{what} {text!r} is no date: write ISO 8601, e.g. 2026-11-02T09:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _stored_data(cfg: Config, what: str, write: bool = False):
    """A client on the stored trend tables, read-only unless ``write``; a one-line error when an
    embedded store is not there, or another process writes it.

    This process holds the data folder of an embedded store while it reads it (``raiwatch.datadir``):
    nothing replaces the store under it. While a worker holds it, the client reads through the
    read-only HTTP endpoint the worker serves it on (``clickhouse.serve_http``)."""
    from raiwatch.wiring import clickhouse_client
    from storage.clickhouse import ConnectOptions, connect
    from storage.clickhouse.client import held_by_another_process, served_url

    dsn = cfg.clickhouse_dsn
    if not dsn.startswith("chdb:"):
        return clickhouse_client(cfg, readonly=not write)
    if not Path(dsn[len("chdb://") :]).is_dir():
        raise RaiwatchError(
            f"no raiwatch data under {cfg.data_path} (no clickhouse/ folder there): check --data-dir "
            "(a replay's data is in its --out folder), or run a replay or a worker first"
        )
    try:
        datadir.hold(cfg.data_path, what)
    except datadir.DataDirBusy as busy:
        if not held_by_another_process(dsn) or not busy.by_worker:
            raise
        url = served_url(dsn)
        if url is None:
            raise RaiwatchError(
                f"{busy.holder} holds the ClickHouse data under {cfg.data_path} and serves it to no one "
                "(clickhouse.serve_http is off): stop it, or restart it with clickhouse.serve_http on"
            ) from None
    else:
        if not held_by_another_process(dsn):
            return clickhouse_client(cfg, readonly=not write)
        url = served_url(dsn)  # a process that opened the store without holding its folder
        if url is None:
            raise RaiwatchError(
                f"another process has the ClickHouse data under {cfg.data_path} open and serves it to "
                "no one: stop it, or if it is a worker, restart it with clickhouse.serve_http on"
            )
    if write:
        raise RaiwatchError(
            f"a running worker holds the ClickHouse data under {cfg.data_path} and serves it "
            "read-only: stop it to write"
        )
    ch = cfg.clickhouse
    return connect(url, ch.database, ConnectOptions(ch.connect_timeout_s, ch.timeout_s))


def _what(args: argparse.Namespace) -> str:
    """This command as a holder of a data folder is named to others: ``raiwatch rules backtest``."""
    words = [args.command] + [
        getattr(args, k, None) for k in ("rules_command", "db_command", "reference_command", "action")
    ]
    return " ".join(["raiwatch", *(w for w in words if w)])


def _signal_history(cfg: Config, args: argparse.Namespace, why: str):
    """``(client, since, until)``: the stored signals' span, narrowed by ``--since``/``--until``.

    Refuses the output of a replay that did not finish unless ``--partial`` is given: its signals
    stop early, so counts, precision and plots would be wrong without a word."""
    from storage.clickhouse import signal_span

    client = _stored_data(cfg, _what(args))
    mark = datadir.replay_mark(cfg.data_path)
    if mark is not None and not mark.complete and not getattr(args, "partial", False):
        raise RaiwatchError(
            f"{cfg.data_path} holds {mark.describe()}: its history stops early; replay again with "
            "--force for a whole one, or add --partial to use it as it is"
        )
    span = signal_span(client, cfg.clickhouse.database)
    if span is None:
        raise RaiwatchError(f"no signals stored under {cfg.data_path}: {why}")
    since = _when(args.since, "--since") or span[0]
    until = _when(args.until, "--until") or span[1]
    if since >= until:
        raise RaiwatchError(f"--since {since.isoformat()} is not before --until {until.isoformat()}")
    return client, since, until


def _incident_store(cfg: Config):
    """The incident store the settings name, opened (and brought to the newest schema); a one-line
    error, and nothing created, when there is none: a mistyped --data-dir must not look like an
    empty store. ``raiwatch db migrate``, a worker and a replay create one."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError

    from storage.incidents import IncidentStore, make_engine
    from storage.incidents.db import safe_url
    from storage.incidents.models import VERSION_TABLE

    url = cfg.incident_db_url
    hint = (
        "check --data-dir (a replay's data is in its --out folder), or run a replay, a worker or "
        "`raiwatch db migrate` first"
    )
    try:
        parsed = make_url(url)
    except ArgumentError:
        return IncidentStore(url)  # which says what is wrong with the URL
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).is_file():
            raise RaiwatchError(f"no incident store at {parsed.database}: {hint}")
        return IncidentStore(url)
    engine = make_engine(url)
    try:
        found = inspect(engine).has_table(VERSION_TABLE)
    except DBAPIError as e:
        first = str(e.orig).strip().splitlines()[0] if str(e.orig).strip() else type(e.orig).__name__
        raise RaiwatchError(f"incident store {safe_url(url)}: cannot connect: {first}") from None
    finally:
        engine.dispose()
    if not found:
        raise RaiwatchError(f"no raiwatch incident store in {safe_url(url)}: {hint}")
    return IncidentStore(url)


def cmd_rules_backtest(args: argparse.Namespace) -> int:
    from alert_rules import load_rules
    from alert_rules.backtest import backtest, score
    from monitors.registry import catalogue
    from raiwatch.report import print_backtest
    from raiwatch.wiring import problems
    from storage.clickhouse import signals_between

    cfg = _cfg(args)
    signals = catalogue()
    versions = [("new", load_rules(args.rules, signals))]
    if args.compare:
        versions.insert(0, ("old", load_rules(args.compare, signals)))
    client, since, until = _signal_history(cfg, args, "nothing to backtest on")
    with _incident_store(cfg) as store:
        judged = [i for i in store.list(limit=100_000) if i.feedback and since <= i.opened_at <= until]
    results = []
    for name, rules in versions:
        names = sorted({r.signal for r in rules})
        history = signals_between(client, cfg.clickhouse.database, since, until, names)
        fired = backtest(rules, history, problems(cfg))
        results.append((name, fired, score(rules, fired, judged)))
    if args.json:
        for name, fired, scores in results:
            for f in fired:
                row = {"kind": "incident", "version": name, "rule": f.rule, "labels": dict(f.labels),
                       "severity": f.severity, "opened_at": f.opened_at.isoformat(),
                       "resolved_at": f.resolved_at.isoformat() if f.resolved_at else None,
                       "group_id": f.group_id}  # fmt: skip
                print(json.dumps(row))
            for sc in scores.values():
                row = {"kind": "rule", "version": name, "rule": sc.rule, "incidents": len(sc.fired),
                       "true_positives": sc.true_positives, "false_positives": sc.false_positives,
                       "precision": sc.precision, "missed": [i.incident_id for i in sc.missed]}  # fmt: skip
                print(json.dumps(row))
        return 0
    print_backtest(results, since, until, len(judged))
    return 0


def cmd_rules_suggest(args: argparse.Namespace) -> int:
    from alert_rules import load_rules
    from alert_rules.suggest import observed_weeks, pick, suggest
    from monitors.registry import catalogue
    from raiwatch.report import print_suggestions
    from storage.clickhouse import signals_between

    if (args.target_per_week is None) == (args.target_precision is None):
        raise RaiwatchError("give one target: --target-per-week N or --target-precision P")
    cfg = _cfg(args)
    rules = {r.name: r for r in load_rules(args.rules, catalogue())}
    rule = rules.get(args.rule)
    if rule is None:
        close = difflib.get_close_matches(args.rule, list(rules), n=1)
        raise RaiwatchError(f"no rule {args.rule!r}" + (f": did you mean {close[0]!r}?" if close else ""))
    client, since, until = _signal_history(cfg, args, "nothing to learn a threshold from")
    signals = [
        s for b in signals_between(client, cfg.clickhouse.database, since, until, [rule.signal]) for s in b
    ]
    with _incident_store(cfg) as store:
        judged = [i for i in store.list(rule=rule.name, limit=100_000) if i.feedback]
    weeks = max(observed_weeks(signals), 1e-9)
    options = suggest(rule, signals, judged, weeks)
    chosen = pick(options, args.target_per_week, args.target_precision)
    print_suggestions(rule, options, chosen, since, until, weeks)
    return 0


def cmd_silences(args: argparse.Namespace) -> int:
    from alert_rules.conditions import parse_duration
    from raiwatch.report import print_silences

    cfg = _cfg(args)
    with _incident_store(cfg) as store:
        if args.action == "add":
            matchers = {}
            for m in args.match:
                key, sep, value = m.partition("=")
                if not sep or not key or not value:
                    raise RaiwatchError(
                        f"--match {m!r}: write LABEL=VALUE (VALUE may be !v, ~regex or !~regex)"
                    )
                matchers[key.strip()] = value.strip()
            starts = _when(args.starts, "--starts") or datetime.now(UTC)
            if (args.duration is None) == (args.until is None):
                raise RaiwatchError("give how long: --for 2h or --until 2026-11-28T09:00Z")
            ends = _when(args.until, "--until") if args.until else starts + parse_duration(args.duration)
            sil = store.add_silence(matchers, starts, ends, args.author, args.comment)
            span = f"from {starts:%Y-%m-%d %H:%M}Z to {ends:%Y-%m-%d %H:%M}Z"
            print(f"{sil['silence_id']}: silences {matchers} {span}")
        elif args.action == "expire":
            sil = store.expire_silence(args.id)
            print(f"{sil['silence_id']}: expired at {sil['ends_at']:%Y-%m-%d %H:%M:%S}Z")
        else:
            print_silences(store.silences(include_expired=args.all))
    return 0


def cmd_rules_lint(args: argparse.Namespace) -> int:
    from alert_rules import lint, load_rules
    from alert_rules.loader import evidence_check
    from monitors.registry import catalogue

    signals = catalogue()
    paths = args.paths or [RULES_DIR]
    for p in paths:  # a path that is not there is the user's mistake (2), not a problem found (1)
        if not p.exists():
            raise RaiwatchError(f"{p}: no such file or folder")
    problems = lint(paths, signals)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    rules = [r for p in paths for r in load_rules(p, signals)]
    warnings = evidence_check(rules, signals)[1]
    for w in warnings:
        print(w)
    print(f"ok: {len(rules)} rules" + (f", {len(warnings)} warning(s)" if warnings else ""))
    return 0


def cmd_incidents(args: argparse.Namespace) -> int:
    from raiwatch.report import print_history, print_incident, print_incidents

    cfg = _cfg(args)
    store = _incident_store(cfg)
    if args.action == "list":
        print_incidents(store.list(status=args.status, rule=args.rule, limit=args.limit), as_json=args.json)
        return 0
    if args.action == "show":
        inc = store.get(args.id)
        print_incident(inc, as_json=args.json)
        if not args.json:
            print_history(store.history(inc.incident_id))
            report = cfg.data_path / "reports" / f"{inc.incident_id}.html"
            if report.is_file():
                print(f"drift report: file://{report.resolve()}")
            for n in store.notifications(inc.incident_id):
                state = (
                    f"delivered {n['delivered_at']:%Y-%m-%d %H:%M:%S}Z after {n['attempts']} attempt(s)"
                    if n["delivered_at"]
                    else f"pending, {n['attempts']} failed attempt(s), next {n['next_attempt_at']:%H:%M:%S}Z"
                    + (f": {n['last_error']}" if n["last_error"] else "")
                )
                print(f"notification {n['kind']} to {n['route']}: {state}")
            if inc.group_id:
                members = store.problem(inc.group_id)
                print(f"problem {inc.group_id}: {len(members)} incident(s), paged once")
                for m in members:
                    mark = "*" if m.incident_id == inc.incident_id else " "
                    print(f" {mark} {m.opened_at:%Y-%m-%d %H:%M}Z {m.incident_id} [{m.severity}] {m.rule} "
                          f"{m.status}{' ' + m.feedback if m.feedback else ''}")  # fmt: skip
        return 0
    if args.action == "report":
        return _drift_report(cfg, store, args)
    if args.action == "stats":
        from raiwatch.report import print_stats

        rows = store.stats(since=_when(args.since, "--since"))
        if args.json:
            for row in rows:
                print(json.dumps(row))
        else:
            print_stats(rows, args.fp_goal)
        return 0
    if args.action == "ack":
        from raiwatch.delivery import router

        inc = store.acknowledge(args.id, actor=args.by, routes=router(cfg.notify))
    elif args.action == "resolve":
        inc = store.resolve(args.id, actor=args.by)
    else:
        inc = store.set_feedback(args.id, args.verdict, actor=args.by, note=args.note)
    print(f"{inc.incident_id}: status={inc.status} feedback={inc.feedback or '-'}")
    print(_mirror(cfg, inc, _what(args)))
    return 0


def _drift_report(cfg: Config, store, args: argparse.Namespace) -> int:
    from monitors.registry import monitor_configs
    from raiwatch.drift_report import incident_report
    from raiwatch.drift_reporter import report_row
    from raiwatch.wiring import clickhouse_client
    from storage.clickhouse import ClickHouseWriter
    from storage.clickhouse.client import held_by_another_process

    inc = store.get(args.id)
    if held_by_another_process(cfg.clickhouse_dsn):
        raise RaiwatchError(
            "a running worker holds the embedded ClickHouse store: stop it, or use a server DSN"
        )
    datadir.hold_for(cfg, _what(args))  # it writes the report's row: nobody else may write meanwhile
    drift = monitor_configs(cfg.monitors)["drift"]
    recent_s = drift.sliding_windows * cfg.windows.size_s
    out = cfg.data_path / "reports"
    client = clickhouse_client(cfg)
    report = incident_report(client, cfg.clickhouse.database, inc, drift.reference_s, recent_s, out)
    row = report_row(report, "manual", inc.incident_id)
    ClickHouseWriter(client, cfg.clickhouse.database).write_drift_report(row)
    print(f"{inc.incident_id}: {report.summary()}")
    return 0


def _mirror(cfg: Config, inc, what: str) -> str:
    """Copy an incident on-call changed to the ClickHouse mirror now, or say who will."""
    from raiwatch.wiring import clickhouse_client
    from storage.clickhouse import ClickHouseWriter
    from storage.clickhouse.client import held_by_another_process

    worker = "ClickHouse copy: the running worker updates it within seconds"
    if held_by_another_process(cfg.clickhouse_dsn):
        return worker
    if cfg.clickhouse_dsn.startswith("chdb:") and not Path(cfg.clickhouse_dsn[len("chdb://") :]).is_dir():
        return "ClickHouse copy: none yet (no trend tables under this data dir)"
    try:
        datadir.hold_for(cfg, what)
    except datadir.DataDirBusy as busy:  # a worker starting, or a replay writing
        if busy.by_worker:
            return worker
        return f"ClickHouse copy: not updated ({busy.holder} holds the data); run this again once it ended"
    ClickHouseWriter(clickhouse_client(cfg), cfg.clickhouse.database).write_incidents([inc])
    return "ClickHouse copy: updated"


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from raiwatch.wiring import clickhouse_client
    from storage.clickhouse import migrate
    from storage.clickhouse.client import redact
    from storage.incidents import migrate as migrate_incidents
    from storage.incidents.db import safe_url

    cfg = _cfg(args)
    datadir.hold_for(cfg, "raiwatch db migrate")
    head = migrate_incidents(cfg.incident_db_url)
    print(f"incident store {safe_url(cfg.incident_db_url)}: at revision {head}")
    ch = cfg.clickhouse
    applied = migrate(clickhouse_client(cfg), ch.database, ch.cluster, ch.events_ttl_days)
    print(f"clickhouse {redact(cfg.clickhouse_dsn)}: applied {applied or 'nothing (up to date)'}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from clickhouse_connect.driver.exceptions import DatabaseError

    from raiwatch.report import print_frame
    from storage.clickhouse.client import held_by_another_process, query_error, writes_a_file
    from storage.clickhouse.saved import saved_queries, saved_query

    cfg = _cfg(args)
    if args.list:
        for q in saved_queries(cfg.queries_dir or None).values():
            params = ", ".join(f"{k} ({v})" for k, v in q.params.items())
            print(f"{q.name:<20} {q.description}" + (f"  [params: {params}]" if params else ""))
        return 0
    given = dict(_param(p) for p in args.param)
    if args.saved:
        if args.sql:
            raise RaiwatchError("give either SQL or --saved NAME, not both")
        q = saved_query(args.saved, cfg.queries_dir or None)
        sql, params = q.sql, q.bind(given)
    else:
        sql, params = (args.sql or "").strip().rstrip(";").strip(), given
    if not sql:
        raise RaiwatchError(
            'nothing to run: give one SQL query, e.g. raiwatch query "SELECT count() FROM raiwatch.signals", '
            "or --saved NAME (--list shows them)"
        )
    fmt = "json" if args.json else args.format
    if fmt == "parquet" and not args.out:
        raise RaiwatchError("--format parquet writes a file: add --out FILE.parquet")
    client = _stored_data(cfg, _what(args), write=args.write)
    # in this process, readonly = 1 lets these through (a worker's endpoint refuses them itself)
    direct = cfg.clickhouse_dsn.startswith("chdb:") and not held_by_another_process(cfg.clickhouse_dsn)
    try:
        why = writes_a_file(client, sql) if direct and not args.write else None
        if why:
            raise RaiwatchError(
                f"{why}; raiwatch query only reads unless given --write (--out FILE saves a result)"
            )
        df = client.query_df(sql, parameters=params or None)
    except DatabaseError as e:
        hint = "" if args.write else " (raiwatch query reads only unless given --write)"
        raise RaiwatchError(
            f"ClickHouse refused the query: {query_error(e)}" + (hint if "(READONLY)" in str(e) else "")
        ) from None
    out = Path(args.out) if args.out else None
    if out is not None and out.is_dir():
        raise RaiwatchError(f"{out} is a folder; give a file to write, e.g. {out / ('result.' + fmt)}")
    if fmt == "parquet":
        df.to_parquet(out, index=False)
    elif fmt == "csv":
        df.to_csv(out or sys.stdout, index=False)
    elif out is not None:
        with out.open("w") as f:
            print_frame(df, as_json=fmt == "json", file=f)
    else:
        print_frame(df, as_json=fmt == "json")
    if out is not None:
        print(f"{len(df):,} rows written to {out}", file=sys.stderr)
    return 0


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise RaiwatchError(f"--param {text!r}: write NAME=VALUE, e.g. --param model_id=helpdesk-assistant")
    return name.strip(), value


def cmd_report(args: argparse.Namespace) -> int:
    from raiwatch.trend_report import write_report

    cfg = _cfg(args)
    client, since, until = _signal_history(cfg, args, "run a replay or a worker first")
    out = Path(args.out)
    if out.is_file():
        raise RaiwatchError(f"{out} is a file; give a folder for the report (index.html and its images)")
    path = write_report(client, cfg.clickhouse.database, since, until, out)
    print(f"report of {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.otel:
        from raiwatch.otel_demo import run_otel_demo

        return run_otel_demo(Path(args.data_dir or "var/demo-otel"))
    from raiwatch.demo import run_demo

    return run_demo(events=args.events, data_dir=Path(args.data_dir or "var/demo"))


def cmd_kafka(args: argparse.Namespace) -> int:
    from raiwatch.dev import localkafka

    argv = [args.action, "--data", args.data] + (["--port", str(args.port)] if args.port else [])
    return localkafka.main(argv if args.action != "install" else ["install"])


def _input_file(path: str, what: str) -> Path:
    p = Path(path)
    if p.is_dir():
        raise RaiwatchError(f"{p} is a folder; give a JSON-lines file of {what}")
    if not p.is_file():
        raise RaiwatchError(f"{p}: no such file")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raiwatch", description="Monitor AI models in production: signals, rules, incidents."
    )
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(
        name: str, help: str, fn, config: bool = True, parent=sub, stores: bool = True
    ) -> argparse.ArgumentParser:
        """A command; ``config``: it takes --config, and --data-dir too when it uses ``stores``."""
        sp = parent.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        if config:
            sp.add_argument("--config", help="YAML config file (default: built-in defaults)")
        if config and stores:
            sp.add_argument("--data-dir", help="where embedded stores live (default: ./var)")
        return sp

    sp = cmd(
        "replay",
        "Run the monitors and rules over a JSON-lines file in event time, without Kafka.",
        cmd_replay,
        stores=False,  # its stores are made in --out
    )
    sp.add_argument("events", help="telemetry-event.v1 JSON lines")
    sp.add_argument("--feedback", help="feedback-event.v1 JSON lines (delayed labels)")
    sp.add_argument("--rules", help="rule folder or file (default: the shipped alert_rules/)")
    sp.add_argument("--out", default="replay-out", help="output folder (default: ./replay-out)")
    sp.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier replay's output in --out (on-call's work in its incident store is kept)",
    )
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.add_argument(
        "--otlp", action="store_true",
        help="EVENTS holds OTLP/JSON span messages (the Collector's kafka exporter, encoding otlp_json)",
    )  # fmt: skip
    sp.add_argument(
        "--otlp-logs", help="OTLP/JSON log messages with gen_ai.evaluation.result events (implies --otlp)"
    )

    sp = cmd("run", "Start a streaming worker that consumes telemetry from Kafka until stopped.", cmd_run)
    sp.add_argument("--rules", help="rule folder or file (default: the shipped alert_rules/)")
    sp.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics, /healthz and /readyz on this port (default: metrics.port, 9464; 0: any)",
    )
    sp.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sp.add_argument("--json-logs", action="store_true", help="one JSON object per log line")

    sp = cmd(
        "produce",
        "Publish a JSON-lines telemetry file to Kafka, keyed by model.id.",
        cmd_produce,
        stores=False,
    )
    sp.add_argument("file")
    sp.add_argument("--bootstrap", help="bootstrap servers (default: from config)")
    sp.add_argument("--topic", help="topic (default: ai.telemetry.v1)")

    sp = cmd(
        "generate",
        "Write synthetic telemetry (and labels) from a scenario, with its ground truth beside it.",
        cmd_generate,
        config=False,
    )
    sp.add_argument("out", help="events file to write (OUT.truth.json and OUT.feedback.jsonl beside it)")
    sp.add_argument("--scenario", help="scenario YAML (see bench/scenarios/); default: the demo's traffic")
    sp.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    sp.add_argument(
        "--start",
        help="'recent' (ends a few minutes ago) or an ISO time; default: the scenario's start as written,"
        " recent for the demo's traffic",
    )
    sp.add_argument("--events", type=int, help="built-in scenario: number of events (default 60000)")
    sp.add_argument("--rate", type=float, help="built-in scenario: events per second (default 40)")
    sp.add_argument(
        "--garbage", type=float, help="built-in scenario: share of malformed lines (default 0.005)"
    )

    rules = sub.add_parser(
        "rules", help="Work with alert rule files.", description="Work with alert rule files."
    )
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    sp = cmd(
        "lint", "Check rule files; print FILE:LINE: problem for each problem found.", cmd_rules_lint,
        config=False, parent=rsub,
    )  # fmt: skip
    sp.add_argument("paths", nargs="*", type=Path, help="rule files or folders (default: the shipped rules)")
    sp = cmd(
        "backtest",
        "Evaluate rules over the signals already stored (no re-processing of events): incidents per rule,"
        " and precision where on-call gave feedback on overlapping incidents.",
        cmd_rules_backtest,
        parent=rsub,
    )
    sp.add_argument("rules", nargs="?", type=Path, help="rule file or folder (default: the shipped rules)")
    sp.add_argument("--since", help="window ends after this time (ISO 8601; default: the first stored)")
    sp.add_argument("--until", help="... and at or before this one (default: the last stored)")
    sp.add_argument("--compare", type=Path, help="another version of the rules, shown beside them")
    sp.add_argument("--json", action="store_true", help="print every incident as a JSON line instead")
    sp.add_argument("--partial", action="store_true", help=PARTIAL)
    sp = cmd(
        "suggest",
        "Propose a threshold for a rule from the stored history of its signal: the trade-off between"
        " incidents per week and precision, as a table.",
        cmd_rules_suggest,
        parent=rsub,
    )
    sp.add_argument("rule", help="alert name, e.g. FeatureDrift")
    sp.add_argument("--rules", type=Path, help="rule file or folder (default: the shipped rules)")
    sp.add_argument("--target-per-week", type=float, help="at most this many incidents a week")
    sp.add_argument(
        "--target-precision", type=float, help="at least this precision (0-1) on judged incidents"
    )
    sp.add_argument("--since", help="history from (ISO 8601; default: the first stored window)")
    sp.add_argument("--until", help="history to (default: the last stored window)")
    sp.add_argument("--partial", action="store_true", help=PARTIAL)
    sp = cmd(
        "test", "Run rule unit tests (like promtool test rules): signal series in, expected incidents out.",
        cmd_rules_test, config=False, parent=rsub,
    )  # fmt: skip
    sp.add_argument(
        "files",
        nargs="+",
        type=Path,
        help="test files (*.test.yaml) or folders of them, e.g. alert_rules/tests",
    )

    ref = sub.add_parser(
        "reference",
        help="Build drift references from a file of events.",
        description="Build drift references from a file of events.",
    )
    refsub = ref.add_subparsers(dest="reference_command", required=True)
    sp = cmd(
        "build",
        "Learn each model's drift reference from EVENTS.jsonl (e.g. its validation traffic) and write "
        "it to OUT; set monitors.drift.reference_file: OUT to compare with it from the first event.",
        cmd_reference_build,
        parent=refsub,
        stores=False,
    )
    sp.add_argument("events", help="telemetry-event.v1 JSON lines")
    sp.add_argument("--out", required=True, help="reference file to write")

    inc = sub.add_parser(
        "incidents",
        help="List, inspect, acknowledge, resolve incidents and give feedback.",
        description="List, inspect, acknowledge, resolve incidents and give feedback.",
    )
    isub = inc.add_subparsers(dest="action", required=True)
    for name, help in [
        ("list", "List incidents, newest first."),
        ("show", "Show one incident and its history."),
        ("ack", "Acknowledge an incident."),
        ("resolve", "Resolve an incident by hand."),
        ("feedback", "Mark an incident a true or false positive (feeds rule precision)."),
        ("report", "Write Evidently's drift report of a drift incident to DATA_DIR/reports; show links it."),
        (
            "stats",
            "Per rule: incidents, on-call's verdicts, precision, median time to acknowledge and resolve.",
        ),
    ]:
        sp = cmd(name, help, cmd_incidents, parent=isub)
        if name == "stats":
            sp.add_argument("--since", help="incidents opened at or after this time (ISO 8601)")
            sp.add_argument("--json", action="store_true", help="one JSON object per rule")
            sp.add_argument(
                "--fp-goal",
                type=float,
                default=0.2,
                help="false-positive share critical rules must stay under",
            )
        elif name == "list":
            sp.add_argument("--status", choices=["open", "acknowledged", "resolved"])
            sp.add_argument("--rule")
            sp.add_argument("--limit", type=int, default=50)
        else:
            sp.add_argument("id", help="incident id (a unique prefix is enough)")
        if name in ("list", "show"):
            sp.add_argument("--json", action="store_true", help="incident.v1 JSON (one object per line)")
        if name in ("ack", "resolve", "feedback"):
            sp.add_argument("--by", default="", help="who did it")
        if name == "feedback":
            sp.add_argument("verdict", choices=["true_positive", "false_positive"])
            sp.add_argument("--note", default="")

    what = "Hold back the notifications of matching incidents for a while (the incidents still open)."
    sil = sub.add_parser("silences", help=what, description=what)
    ssub = sil.add_subparsers(dest="action", required=True)
    sp = cmd("add", "Add a silence: matchers, a time range, who and why.", cmd_silences, parent=ssub)
    sp.add_argument(
        "--match", action="append", required=True, metavar="LABEL=VALUE",
        help="an incident label (or alertname, severity) and its value: v, !v, ~regex or !~regex",
    )  # fmt: skip
    sp.add_argument("--for", dest="duration", help="how long, e.g. 2h")
    sp.add_argument("--until", help="or until when (ISO 8601)")
    sp.add_argument("--starts", help="from when (ISO 8601; default now)")
    sp.add_argument("--author", required=True)
    sp.add_argument("--comment", required=True, help="why (shown on the incidents it holds back)")
    sp = cmd("list", "Active and pending silences (with --all, expired ones too).", cmd_silences, parent=ssub)
    sp.add_argument("--all", action="store_true")
    sp = cmd("expire", "End a silence now.", cmd_silences, parent=ssub)
    sp.add_argument("id", help="silence id (a unique prefix is enough)")

    db = sub.add_parser("db", help="Database schema tasks.", description="Database schema tasks.")
    dsub = db.add_subparsers(dest="db_command", required=True)
    cmd("migrate", "Apply pending ClickHouse and incident-store migrations.", cmd_db_migrate, parent=dsub)

    sp = cmd("query", "Run one SQL query (or a saved one) on the ClickHouse trend tables.", cmd_query)
    sp.add_argument("sql", nargs="?", help="the SQL; or --saved NAME")
    sp.add_argument("--saved", metavar="NAME", help="run a saved query (--list shows them)")
    sp.add_argument("--list", action="store_true", help="list the saved queries and their parameters")
    sp.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="a {NAME:Type} parameter"
    )
    sp.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table")
    sp.add_argument("--json", action="store_true", help="same as --format json: one JSON object per row")
    sp.add_argument("--out", help="write the result to this file instead of the terminal")
    sp.add_argument(
        "--write",
        action="store_true",
        help="let the SQL change data (INSERT, ALTER, DROP...); without it the engine refuses to",
    )

    sp = cmd(
        "report", "Write a static HTML report with plots of the main signals and the incidents.", cmd_report
    )
    sp.add_argument("--since", help="ISO 8601 start (default: the first stored window)")
    sp.add_argument("--until", help="ISO 8601 end (default: the last stored window)")
    sp.add_argument("--out", default="report", help="folder for index.html and its PNGs (default ./report)")
    sp.add_argument("--partial", action="store_true", help=PARTIAL)

    sp = cmd(
        "demo",
        "Start a local Kafka broker and a worker, stream telemetry with a safety spike, show the incident.",
        cmd_demo,
        config=False,
    )
    sp.add_argument("--events", type=int, default=60_000)
    sp.add_argument("--data-dir", help="where the demo keeps its data (default: ./var/demo)")
    sp.add_argument(
        "--otel", action="store_true",
        help="an OpenTelemetry-instrumented OpenAI app through the Collector instead (./var/demo-otel)",
    )  # fmt: skip

    sp = cmd(
        "kafka", "Install, start, stop the local Apache Kafka broker used by the demo and tests.", cmd_kafka,
        config=False,
    )  # fmt: skip
    sp.add_argument("action", choices=["install", "start", "stop", "status"])
    sp.add_argument("--data", default="var/kafka")
    sp.add_argument("--port", type=int)

    otelcli.add_commands(sub, cmd)  # raiwatch otel lint | build-collector
    return p


# threads of numpy's and scipy's BLAS (two OpenBLAS builds, a pool each), read as they load. The
# monitors' BLAS work is small matrices (drift's embedding kernels), as fast on one thread, and an
# idle OpenBLAS thread spins after each call: perf put them at 6% of a 200,000-event replay's
# samples, CPU the engine's threads could have used. A user's own OPENBLAS_NUM_THREADS stands.
BLAS_THREADS = "1"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", BLAS_THREADS)  # before any command loads numpy
    args = build_parser().parse_args(argv)
    for noisy in ("urllib3", "clickhouse_connect", "kafka", "aiokafka"):  # errors reach users as raiwatch's
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        code = args.fn(args)
        sys.stdout.flush()  # inside the try: a reader that went away is handled below
        return code
    except RaiwatchError as e:
        return _fail(str(e))
    except BrokenPipeError:  # `raiwatch ... | head` stopped reading: what it printed is what was asked for
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout at exit
        return 141
    except KeyError as e:  # an incident id that is not there
        return _fail(str(e.args[0]) if e.args else "not found")
    except (ValueError, OSError) as e:  # a path that is not there, a value out of range
        return _fail(str(e))
    except KeyboardInterrupt:
        return 130


def _fail(message: str) -> int:
    print(f"raiwatch: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
