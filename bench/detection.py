"""Detection quality of a rule set: every scenario generated, replayed, its incidents scored.

    .venv/bin/python bench/detection.py [--scenarios bench/scenarios] [--rules alert_rules]
                                        [--json bench/results/detection.json] [--work DIR] [-j N]

For each scenario file: ``raiwatch generate`` (events, delayed labels, ground truth), ``raiwatch
replay --feedback`` with the rules, then ``raiwatch.dev.scoring`` matches the incidents to the
injected anomalies. Prints, per family, detected / injected and the delay from onset; per
scenario, the false alarms per model-day; then every anomaly and every incident that matches
nothing. Writes all of it as JSON. Scenarios run in parallel (one process each, ``-j``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raiwatch.core.errors import RaiwatchError  # noqa: E402
from raiwatch.dev import scoring, synth  # noqa: E402


def run_scenario(path: Path, work: Path, rules: Path | None) -> dict:
    """Generate and replay one scenario; its truth, incidents and timings."""
    events = work / f"{path.stem}.jsonl"
    t0 = time.perf_counter()
    truth = synth.write(events, synth.load_scenario(path))
    t1 = time.perf_counter()
    out = work / f"{path.stem}-replay"
    cmd = [sys.executable, "-m", "raiwatch.cli", "replay", str(events), "--out", str(out), "--quiet"]
    cmd += ["--force"]  # --work DIR keeps the replays: the next run replaces its own
    if truth["labels"]:
        cmd += ["--feedback", str(synth.feedback_path(events))]
    if rules:
        cmd += ["--rules", str(rules)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{path.name}: replay failed: {p.stderr.strip()[-2000:]}")
    incidents = [orjson.loads(x) for x in (out / "incidents.jsonl").read_bytes().splitlines() if x]
    return {
        "truth": truth,
        "incidents": incidents,
        "generate_s": round(t1 - t0, 1),
        "replay_s": round(time.perf_counter() - t1, 1),
    }


def _delay(s: float | None) -> str:
    return "-" if s is None else f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", type=Path, default=ROOT / "bench" / "scenarios")
    ap.add_argument("--rules", type=Path, help="rule folder or file (default: the shipped alert_rules/)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "detection.json")
    ap.add_argument("--work", type=Path, help="keep generated events and replays here (default: a temp dir)")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    files = sorted(args.scenarios.glob("*.yaml")) if args.scenarios.is_dir() else [args.scenarios]
    if not files:
        print(f"no *.yaml scenarios in {args.scenarios}", file=sys.stderr)
        return 2
    for f in files:  # refuse a bad scenario before any work
        try:
            synth.load_scenario(f)
        except RaiwatchError as e:
            print(e, file=sys.stderr)
            return 2
    console = Console(width=None if sys.stdout.isatty() else 150)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs: dict[str, dict] = {}
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(run_scenario, f, work, args.rules): f for f in files}
            for fut in as_completed(futures):
                r = fut.result()
                runs[futures[fut].stem] = r
                t, took = r["truth"], f"generate {r['generate_s']} s, replay {r['replay_s']} s"
                console.print(
                    f"{futures[fut].stem}: {t['events']:,} events, {t['labels']:,} labels,",
                    f"{len(r['incidents'])} incidents ({took})",
                )
    wall = time.perf_counter() - t0
    scores = [scoring.score(runs[f.stem]["truth"], runs[f.stem]["incidents"]) for f in files]
    fams = scoring.by_family(scores)

    table = Table(title=f"Detection by family (rules: {args.rules or 'shipped'})")
    for col in ("family", "detected / injected", "median delay", "max delay"):
        table.add_column(col, justify="left" if col == "family" else "right")
    for row in fams:
        found = f"{row.detected} / {row.injected}"
        table.add_row(row.family, found, _delay(row.median_delay_s), _delay(row.max_delay_s))
    console.print(table)

    table = Table(title="Per scenario")
    cols = ("scenario", "events", "model-days", "incidents", "detected", "related", "false alarms")
    cols += ("per model-day",)
    for col in cols:
        table.add_column(col, justify="left" if col == "scenario" else "right")
    total_fa = total_md = 0.0
    for f, s in zip(files, scores, strict=True):
        r = runs[f.stem]
        total_fa += len(s.false_alarms)
        total_md += s.model_days
        table.add_row(
            s.scenario,
            f"{r['truth']['events']:,}",
            f"{s.model_days:.2f}",
            str(len(r["incidents"])),
            f"{sum(a.detected for a in s.anomalies)} / {len(s.anomalies)}",
            str(len(s.related)),
            str(len(s.false_alarms)),
            f"{s.false_alarms_per_model_day:.2f}",
        )
    table.add_row("all", "", f"{total_md:.2f}", "", "", "", str(int(total_fa)), f"{total_fa / total_md:.2f}")
    console.print(table)

    table = Table(title="Every anomaly")
    for col in ("scenario", "id", "kind", "model", "scope", "detected", "delay", "incidents"):
        table.add_column(col)
    for f, s in zip(files, scores, strict=True):
        truth = {a["id"]: a for a in runs[f.stem]["truth"]["anomalies"]}
        for a in s.anomalies:
            scope = ",".join(f"{k}={v}" for k, v in truth[a.id]["dims"].items())
            table.add_row(
                s.scenario, a.id, a.kind, a.model_id, scope, "yes" if a.detected else "no",
                _delay(a.delay_s), str(len(a.incidents)),
            )  # fmt: skip
    console.print(table)
    unmatched = [(s.scenario, fa) for s in scores for fa in s.false_alarms]
    if unmatched:
        table = Table(title="Incidents that match nothing (false alarms)")
        for col in ("scenario", "rule", "opened at", "labels"):
            table.add_column(col)
        for name, fa in unmatched:
            labels = ",".join(f"{k}={v}" for k, v in fa["labels"].items())
            table.add_row(name, fa["rule"], fa["opened_at"], labels)
        console.print(table)
    console.print(f"wall time {wall:.0f} s for {len(files)} scenarios ({args.jobs} at a time)")

    report = {
        "rules": str(args.rules or "alert_rules"),
        "wall_s": round(wall, 1),
        "families": [asdict(r) | {"recall": r.recall} for r in fams],
        "false_alarms": total_fa,
        "model_days": round(total_md, 3),
        "false_alarms_per_model_day": round(total_fa / total_md, 3) if total_md else 0.0,
        "scenarios": [
            asdict(s)
            | {
                "events": runs[f.stem]["truth"]["events"],
                "labels": runs[f.stem]["truth"]["labels"],
                "incidents": len(runs[f.stem]["incidents"]),
                "generate_s": runs[f.stem]["generate_s"],
                "replay_s": runs[f.stem]["replay_s"],
                "false_alarms_per_model_day": s.false_alarms_per_model_day,
            }
            for f, s in zip(files, scores, strict=True)
        ],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    console.print(f"JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
