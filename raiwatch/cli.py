"""The ``raiwatch`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from raiwatch.core.config import Config, load_config
from raiwatch.core.errors import RaiwatchError


def _cfg(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None), data_dir=getattr(args, "data_dir", None))


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from raiwatch.replay import replay
    from raiwatch.report import print_replay

    cfg = _cfg(args)
    size = Path(args.events).stat().st_size if Path(args.events).is_file() else 0
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        transient=True,
        disable=args.quiet,
    ) as bar:
        task = bar.add_task("replaying", total=size)
        s = replay(args.events, cfg, args.out, args.rules, args.feedback, lambda n: bar.advance(task, n))
    print_replay(s, feedback=bool(args.feedback))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from raiwatch.worker import run_worker

    return run_worker(_cfg(args), args.rules, args.metrics_port, args.log_level)


def cmd_produce(args: argparse.Namespace) -> int:
    from streams.producer import produce

    cfg = _cfg(args)
    bootstrap = args.bootstrap or cfg.kafka.bootstrap_servers
    topic = args.topic or cfg.kafka.telemetry_topic
    with open(args.file, "rb") as f:
        n = produce(f, bootstrap, topic)
    print(f"published {n} messages to {topic} on {bootstrap}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from raiwatch import synth

    truth = synth.write(args.out, synth.default_scenario(args.events, args.seed, args.garbage, args.rate))
    print(
        f"wrote {truth['events']} lines ({truth['malformed']} malformed) to {args.out}; "
        f"ground truth in {synth.truth_path(args.out)}"
    )
    return 0


def cmd_rules_lint(args: argparse.Namespace) -> int:
    from alert_rules import lint, load_rules

    paths = args.paths or [Path(args.rules_default)]
    problems = lint(paths)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    n = sum(len(load_rules(p)) for p in paths)
    print(f"ok: {n} rules")
    return 0


def _store(args: argparse.Namespace):
    from storage.incidents import IncidentStore

    return IncidentStore(_cfg(args).incident_db_url)


def cmd_incidents(args: argparse.Namespace) -> int:
    from raiwatch.report import print_history, print_incident, print_incidents

    store = _store(args)
    if args.action == "list":
        print_incidents(store.list(status=args.status, rule=args.rule, limit=args.limit), as_json=args.json)
        return 0
    if args.action == "show":
        print_incident(store.get(args.id), as_json=args.json)
        print_history(store.history(store.get(args.id).incident_id))
        return 0
    if args.action == "ack":
        inc = store.acknowledge(args.id, actor=args.by)
    elif args.action == "resolve":
        inc = store.resolve(args.id, actor=args.by)
    else:
        inc = store.set_feedback(args.id, args.verdict, actor=args.by, note=args.note)
    print(f"{inc.incident_id}: status={inc.status} feedback={inc.feedback or '-'}")
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from raiwatch.core.errors import StorageError
    from storage.clickhouse import ConnectOptions, connect, migrate
    from storage.clickhouse.client import redact, scrub
    from storage.incidents import migrate as migrate_incidents
    from storage.incidents.db import safe_url

    cfg = _cfg(args)
    head = migrate_incidents(cfg.incident_db_url)
    print(f"incident store {safe_url(cfg.incident_db_url)}: at revision {head}")
    ch = cfg.clickhouse
    options = ConnectOptions(ch.connect_timeout_s, ch.timeout_s, ch.verify_tls, ch.ca_cert)
    try:
        applied = migrate(
            connect(cfg.clickhouse_dsn, ch.database, options), ch.database, ch.cluster, ch.events_ttl_days
        )
    except StorageError as e:
        raise StorageError(scrub(str(e), cfg.clickhouse_dsn)) from None
    print(f"clickhouse {redact(cfg.clickhouse_dsn)}: applied {applied or 'nothing (up to date)'}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from raiwatch.report import print_frame
    from storage.clickhouse import connect

    cfg = _cfg(args)
    df = connect(cfg.clickhouse_dsn, cfg.clickhouse.database).query_df(args.sql)
    print_frame(df, as_json=args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from raiwatch.demo import run_demo

    return run_demo(events=args.events, data_dir=Path(args.data_dir or "var/demo"))


def cmd_kafka(args: argparse.Namespace) -> int:
    from raiwatch import localkafka

    argv = [args.action, "--data", args.data] + (["--port", str(args.port)] if args.port else [])
    return localkafka.main(argv if args.action != "install" else ["install"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raiwatch", description="Monitor AI models in production: signals, rules, incidents."
    )
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(name: str, help: str, fn, config: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        if config:
            sp.add_argument("--config", help="YAML config file (default: built-in defaults)")
            sp.add_argument("--data-dir", help="where embedded stores live (default: ./var)")
        return sp

    sp = cmd(
        "replay",
        "Run the monitors and rules over a JSON-lines file in event time, without Kafka.",
        cmd_replay,
    )
    sp.add_argument("events", help="telemetry-event.v1 JSON lines")
    sp.add_argument("--feedback", help="feedback-event.v1 JSON lines")
    sp.add_argument("--rules", help="rule folder or file (default: the shipped alert_rules/)")
    sp.add_argument("--out", default="replay-out", help="output folder (default: ./replay-out)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = cmd("run", "Start a streaming worker that consumes telemetry from Kafka until stopped.", cmd_run)
    sp.add_argument("--rules", help="rule folder or file (default: the shipped alert_rules/)")
    sp.add_argument(
        "--metrics-port", type=int, default=0, help="serve /metrics, /healthz and /readyz on this port"
    )
    sp.add_argument("--log-level", default="WARNING")

    sp = cmd("produce", "Publish a JSON-lines telemetry file to Kafka, keyed by model.id.", cmd_produce)
    sp.add_argument("file")
    sp.add_argument("--bootstrap", help="bootstrap servers (default: from config)")
    sp.add_argument("--topic", help="topic (default: ai.telemetry.v1)")

    sp = cmd(
        "generate",
        "Write synthetic telemetry with an injected safety spike, and its ground truth.",
        cmd_generate,
        config=False,
    )
    sp.add_argument("out")
    sp.add_argument("--events", type=int, default=60_000)
    sp.add_argument("--seed", type=int, default=7)
    sp.add_argument("--garbage", type=float, default=0.0, help="fraction of malformed lines")
    sp.add_argument("--rate", type=float, default=40.0, help="events per second of event time")

    rules = sub.add_parser(
        "rules", help="Work with alert rule files.", description="Work with alert rule files."
    )
    rsub = rules.add_subparsers(dest="rules_command", required=True)
    sp = rsub.add_parser(
        "lint",
        help="Check rule files; print FILE:LINE: problem for each problem found.",
        description="Check rule files; print FILE:LINE: problem for each problem found.",
    )
    sp.add_argument("paths", nargs="*", type=Path, help="rule files or folders (default: the shipped rules)")
    sp.set_defaults(
        fn=cmd_rules_lint, rules_default=str(Path(__file__).resolve().parent.parent / "alert_rules")
    )

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
    ]:
        sp = isub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=cmd_incidents)
        sp.add_argument("--config")
        sp.add_argument("--data-dir")
        if name == "list":
            sp.add_argument("--status", choices=["open", "acknowledged", "resolved"])
            sp.add_argument("--rule")
            sp.add_argument("--limit", type=int, default=50)
        else:
            sp.add_argument("id", help="incident id (a unique prefix is enough)")
        if name in ("list", "show"):
            sp.add_argument("--json", action="store_true")
        if name in ("ack", "resolve", "feedback"):
            sp.add_argument("--by", default="", help="who did it")
        if name == "feedback":
            sp.add_argument("verdict", choices=["true_positive", "false_positive"])
            sp.add_argument("--note", default="")

    db = sub.add_parser("db", help="Database schema tasks.", description="Database schema tasks.")
    dsub = db.add_subparsers(dest="db_command", required=True)
    sp = dsub.add_parser(
        "migrate",
        help="Apply pending ClickHouse and incident-store migrations.",
        description="Apply pending ClickHouse and incident-store migrations.",
    )
    sp.set_defaults(fn=cmd_db_migrate)
    sp.add_argument("--config")
    sp.add_argument("--data-dir")

    sp = cmd("query", "Run one SQL query on the ClickHouse trend tables and print the result.", cmd_query)
    sp.add_argument("sql")
    sp.add_argument("--json", action="store_true", help="one JSON object per row")

    sp = cmd(
        "demo",
        "Start a local Kafka broker and a worker, stream telemetry with a safety spike, show the incident.",
        cmd_demo,
        config=False,
    )
    sp.add_argument("--events", type=int, default=60_000)
    sp.add_argument("--data-dir", help="where the demo keeps its data (default: ./var/demo)")

    sp = sub.add_parser(
        "kafka",
        help="Install, start, stop the local Apache Kafka broker used by the demo and tests.",
        description="Install, start, stop the local Apache Kafka broker used by the demo and tests.",
    )
    sp.add_argument("action", choices=["install", "start", "stop", "status"])
    sp.add_argument("--data", default="var/kafka")
    sp.add_argument("--port", type=int)
    sp.set_defaults(fn=cmd_kafka)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for noisy in ("urllib3", "clickhouse_connect", "kafka", "aiokafka"):  # errors reach users as raiwatch's
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        return args.fn(args)
    except (RaiwatchError, KeyError, ValueError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"raiwatch: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
