"""``raiwatch otel ...``: lint an OpenTelemetry mapping file, build the minimal collector."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def cmd_lint(args: argparse.Namespace) -> int:
    from raiwatch.core.otelmap import lint

    problems = [p for path in args.paths for p in lint(path)]
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"ok: {len(args.paths)} mapping file(s)")
    return 0


def cmd_build_collector(args: argparse.Namespace) -> int:
    from raiwatch.dev import otelcol

    print(otelcol.build(log=lambda line: print(line, file=sys.stderr)))
    return 0


def add_commands(sub: argparse._SubParsersAction, cmd: Callable[..., argparse.ArgumentParser]) -> None:
    """The ``otel`` command group (``cmd`` is the CLI's own parser helper)."""
    what = "OpenTelemetry input: check a mapping file, build the minimal collector."
    otel = sub.add_parser("otel", help=what, description=what)
    osub = otel.add_subparsers(dest="otel_command", required=True)
    sp = cmd(
        "lint", "Check OpenTelemetry mapping files; print FILE:LINE: problem for each problem found.",
        cmd_lint, config=False, parent=osub,
    )  # fmt: skip
    sp.add_argument("paths", nargs="+", help="mapping files (otel-mapping.v1)")
    cmd(
        "build-collector",
        "Build the OpenTelemetry Collector with the OTLP receiver and the Kafka exporter (Go, ocb) into "
        "~/.cache/raiwatch once per machine; print its path.",
        cmd_build_collector, config=False, parent=osub,
    )  # fmt: skip
