"""``raiwatch demo``: the streaming path end to end on embedded defaults.

Starts the local Apache Kafka broker (from Maven Central jars, cached under .cache/), a worker
process, publishes synthetic telemetry with an injected self-harm spike, waits for the
incident, then shows the signals around the spike and the incident with its runbook. Without
Java it says so and runs the same pipeline through ``raiwatch replay`` instead.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from raiwatch.core.config import load_config
from raiwatch.core.errors import RaiwatchError
from raiwatch.dev import localkafka, synth
from raiwatch.report import print_incidents

console = Console()
PROGRESS = re.compile(rb"progress events=(\d+) signals=(\d+) .* open_windows=(\d+)")


MARKER = ".raiwatch-demo"


def run_demo(events: int, data_dir: Path) -> int:
    data_dir = data_dir.resolve()
    _prepare(data_dir)
    events_file = data_dir / "telemetry.jsonl"
    truth = synth.write(events_file, synth.demo_scenario(events))  # ends minutes ago: a worker takes it
    spike, drift, campaign, fair = truth["anomalies"]
    console.print(
        f"[bold]1/5[/] generated {events:,} events ({truth['malformed']} malformed on purpose) "
        f"from {truth['start']} to {truth['end']}; injected: {spike['category']} spike on "
        f"{spike['model_id']} at {spike['rate']:.0%} from {spike['start']} to {spike['end']}; "
        f"{drift['feature']} of {drift['model_id']} x{drift['factor']} "
        f"from {drift['start']} to {drift['end']}; {campaign['accounts']} new accounts sending "
        f"paraphrased jailbreaks to {campaign['model_id']} from {campaign['start']} to {campaign['end']}; "
        f"{fair['model_id']}'s {fair['dims']['attribute']}={fair['dims']['group']} favourable decisions "
        f"x{fair['factor']} from {fair['start']} to {fair['end']}"
    )
    if not localkafka.java_available():
        console.print(
            "[yellow]Java not found: no local Apache Kafka broker. Running the same pipeline with "
            "`raiwatch replay` instead (no broker involved).[/]"
        )
        from raiwatch.replay import replay
        from raiwatch.report import print_replay

        print_replay(replay(events_file, load_config(str(_demo_config(data_dir))), data_dir / "replay"))
        return 0
    console.print("[bold]2/5[/] starting Apache Kafka (KRaft, single node; first run downloads the jars)")
    localkafka.install()
    # the broker and the worker get SIGTERM if the demo is killed, even with SIGKILL: none is left behind
    broker = localkafka.LocalKafka(data_dir / "kafka", die_with_parent=True)
    bootstrap = broker.start()
    worker = None
    try:
        console.print(f"      broker ready at {bootstrap}")
        env = dict(os.environ, RAIWATCH_KAFKA_BOOTSTRAP=bootstrap, RAIWATCH_DATA_DIR=str(data_dir))
        log_path = data_dir / "worker.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "raiwatch.cli",
                    "run",
                    "--config",
                    str(_demo_config(data_dir)),
                    "--metrics-port",
                    "0",
                ],  # any free port: the log says which
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=localkafka.parent_death_signal(),
            )
        console.print(f"[bold]3/5[/] worker started (pid {worker.pid}, log {log_path})")
        _publish(events_file, bootstrap, events)
        console.print("[bold]4/5[/] waiting for the worker to drain the topic and close its windows")
        _wait_drained(log_path, worker, truth["valid"])
    finally:
        if worker and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        broker.stop()
    _show(data_dir, spike, drift, fair)
    return 0


def _prepare(data_dir: Path) -> None:
    """An empty folder for this run; a folder an earlier demo made is replaced, nothing else is touched."""
    if data_dir.exists() and not data_dir.is_dir():
        raise RaiwatchError(f"--data-dir {data_dir} is a file; give a folder for the demo's data")
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / MARKER).exists():
            raise RaiwatchError(
                f"{data_dir} is not empty and was not made by raiwatch demo; choose another --data-dir"
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("made by raiwatch demo; the next demo into this folder replaces it\n")


def _demo_config(data_dir: Path) -> Path:
    path = data_dir / "raiwatch.yaml"
    path.write_text(
        "kafka:\n  group_id: raiwatch-demo\n  session_timeout_s: 10\nwindows:\n  idle_close_s: 3\n"
        "monitors:\n  drift:\n    reference_s: 600  # a 25-minute demo: learn the reference from 10 minutes\n"
        "  abuse:\n    warmup_s: 600  # ... and know the regular accounts after 10 minutes\n"
    )
    return path


def _show_drift(client, drift: dict) -> None:
    rows = client.query(
        "SELECT ts, value, p_value, n FROM raiwatch.signals FINAL "
        "WHERE signal = 'drift.feature' AND model_id = {m:String} AND dims['feature'] = {f:String} "
        "ORDER BY ts",
        parameters={"m": drift["model_id"], "f": drift["feature"]},
    ).result_rows
    console.print(
        f"      drift of {drift['feature']} ({drift['model_id']}): the last 5 windows against the "
        "reference learned from the first 10 minutes (PSI; p-value adjusted over the model's tests)"
    )
    t = Table()
    for c in ("window end", "PSI", "p-value", "n", ""):
        t.add_column(c)
    for ts, v, p, n in rows:
        hot = v > 0.1 and p is not None and p < 1e-4
        pv = "-" if p is None else f"{p:.1e}"
        t.add_row(
            ts.strftime("%H:%M"),
            f"{v:.3f}",
            pv,
            str(n),
            ("[red]" if hot else "") + "█" * min(60, round(v * 50)),
        )
    console.print(t)


def _show_clusters(client) -> None:
    rows = client.query(
        "SELECT cluster_id, first_seen, last_seen, prompts_total, new_accounts, accounts, ip_hashes, "
        "violation_share, sample FROM raiwatch.abuse_clusters FINAL ORDER BY first_seen"
    ).result_rows
    if not rows:
        return
    t = Table(title="Prompt clusters the abuse monitor reported (abuse_clusters)")
    for c in (
        "cluster",
        "seen (event time)",
        "prompts",
        "new / all accounts (10 min)",
        "IPs",
        "flagged",
        "sample",
    ):
        t.add_column(c, overflow="fold")
    for cid, first, last, total, new, accounts, ips, flagged, sample in rows:
        seen = f"{first:%H:%M}-{last:%H:%M}"
        t.add_row(cid, seen, str(total), f"{new} / {accounts}", str(ips), f"{flagged:.0%}", sample[:60])
    console.print(t)


def _show_reports(client) -> None:
    rows = client.query(
        "SELECT trigger, if(incident_id = '', model_id, incident_id), drifted, columns, "
        "drifted_columns, path FROM raiwatch.drift_reports ORDER BY created_at"
    ).result_rows
    if not rows:
        return
    t = Table(title="Evidently drift reports the worker wrote (drift incident opened, or scheduled)")
    for c in ("trigger", "incident / model", "drifted", "report"):
        t.add_column(c, overflow="fold")
    for trigger, what, drifted, columns, names, path in rows:
        t.add_row(trigger, what, f"{drifted} of {columns}: {', '.join(names)}", f"file://{path}")
    console.print(t)


def _publish(path: Path, bootstrap: str, total: int) -> None:
    from streams.producer import produce

    with Progress(console=console, transient=True) as bar, path.open("rb") as f:
        task = bar.add_task("      publishing to ai.telemetry.v1", total=total)
        produce(f, bootstrap, "ai.telemetry.v1", progress=lambda n: bar.update(task, completed=n))
    console.print(f"      published {total:,} messages with kafka-python")


def _wait_drained(log_path: Path, worker: subprocess.Popen, valid: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    seen_incidents: set[bytes] = set()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("      worker", total=valid)
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RaiwatchError(f"the demo worker exited with {worker.returncode}; see {log_path}")
            text = log_path.read_bytes()
            for line in text.splitlines():
                at = line.find(b"INCIDENT ")
                if at >= 0 and line not in seen_incidents:
                    seen_incidents.add(line)
                    text_line = escape(line[at:].decode(errors="replace"))
                    console.print(f"      [red]{text_line}[/]", soft_wrap=True)
            matches = PROGRESS.findall(text)
            if matches:
                done, _, open_windows = (int(x) for x in matches[-1])
                bar.update(task, completed=done)
                if done >= valid and open_windows == 0:
                    return
            time.sleep(0.2)
    raise RaiwatchError(f"the demo worker did not drain the topic within {timeout_s:.0f}s; see {log_path}")


def _show_fairness(client, fair: dict) -> None:
    """The shifted attribute's groups over time: favourable share and the four-fifths ratio."""
    attr = fair["dims"]["attribute"]
    rows = client.query(
        "SELECT ts, group, n, rate, reference_group, ratio, p_value FROM raiwatch.fairness_metrics FINAL "
        "WHERE model_id = {m:String} AND attribute = {a:String} AND toMinute(ts) % 2 = 0 ORDER BY ts, group",
        parameters={"m": fair["model_id"], "a": attr},
    ).result_rows
    groups = sorted({r[1] for r in rows})
    console.print(
        f"Favourable share per {attr} group of {fair['model_id']} over the last 10 minutes, every 2 minutes "
        "(fairness_metrics; ratio = against the best-treated group, the four-fifths rule pages below 0.8 "
        "when p < 0.01)"
    )
    t = Table()
    t.add_column("window end")
    for g in groups:
        t.add_column(g)
    by_ts: dict = {}
    for ts, g, n, rate, _, ratio, p in rows:
        low = ratio is not None and ratio < 0.8 and p is not None and p < 0.01
        cell = "-" if rate is None else f"{rate:.0%} n={n}" + ("" if ratio is None else f" x{ratio:.2f}")
        by_ts.setdefault(ts, {})[g] = ("[red]" if low else "") + cell
    for ts, cells in by_ts.items():
        t.add_row(ts.strftime("%H:%M"), *(cells.get(g, "") for g in groups))
    console.print(t)


def _show(data_dir: Path, spike: dict, drift: dict, fair: dict | None = None) -> None:
    from storage.clickhouse import connect
    from storage.incidents import IncidentStore

    cfg = load_config(data_dir=str(data_dir))
    client = connect(cfg.clickhouse_dsn, cfg.clickhouse.database)
    rows = client.query(
        "SELECT ts, value, lower, upper, n, baseline FROM raiwatch.signals FINAL "
        "WHERE signal = 'safety.violation_rate' AND model_id = {m:String} "
        "AND dims = map('category', {c:String}) "
        "ORDER BY ts",
        parameters={"m": spike["model_id"], "c": spike["category"]},
    ).result_rows
    change = dict(
        client.query(
            "SELECT ts, value FROM raiwatch.signals FINAL WHERE signal = 'safety.rate_change' "
            "AND model_id = {m:String} AND dims = map('category', {c:String})",
            parameters={"m": spike["model_id"], "c": spike["category"]},
        ).result_rows
    )
    console.print(
        f"[bold]5/5[/] {spike['category']} violation rate of {spike['model_id']} per 60 s window "
        "(Wilson 95% interval, n = events with safety data; change = the CUSUM statistic over its "
        "limit, 1 pages)"
    )
    t = Table()
    for c in ("window end (event time)", "rate", "95% CI", "n", "baseline", "change", ""):
        t.add_column(c)
    for ts, v, lo, hi, n, base in rows:
        stat = change.get(ts)
        hot = stat is not None and stat >= 1
        t.add_row(
            ts.strftime("%H:%M"),
            f"{v:.1%}",
            f"{lo:.1%}–{hi:.1%}",
            str(n),
            "-" if base is None else f"{base:.1%}",
            "-" if stat is None else f"{stat:.2f}",
            ("[red]" if hot else "") + "█" * round(v * 100),
        )
    console.print(t)
    _show_drift(client, drift)
    if fair:
        _show_fairness(client, fair)
    incidents = IncidentStore(cfg.incident_db_url).list()
    print_incidents(incidents)
    _show_reports(client)
    _show_clusters(client)
    console.print(
        f"Data: ClickHouse (embedded chdb) at {data_dir / 'clickhouse'}, "
        f"incidents at {data_dir / 'incidents.db'}"
    )
    exe = shutil.which("raiwatch") or str(Path(sys.executable).with_name("raiwatch"))
    console.print(
        f'Query: {exe} query --data-dir {data_dir} "SELECT model_id, signal, dims, count() FROM '
        'raiwatch.signals FINAL GROUP BY ALL ORDER BY ALL"',
        soft_wrap=True,
    )
