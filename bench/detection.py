"""Detection quality of a rule set: every scenario generated, replayed, its incidents scored.

    .venv/bin/python bench/detection.py [--scenarios bench/scenarios] [--match 'clean-week-*']
                                        [--only-clean] [--rules alert_rules] [--work DIR] [-j N]
                                        [--json bench/results/detection.json]

For each scenario file: generate its events, delayed labels and ground truth (``raiwatch.dev.synth``;
with ``--work``, events already generated from the same scenario and generator are reused),
``raiwatch replay --feedback`` with the rules, then ``raiwatch.dev.scoring`` matches the incidents
to the injected anomalies and groups them into pages (incidents sharing a ``group_id``). Prints,
against the issue's targets:

- false pages per model-week on the clean runs of a week or more, per rule and in all, with exact
  Poisson 95% intervals (target: at most 1 per model-week);
- pages per injected problem per scenario (target: at most 1.5), with incidents and pages;
- precision of critical and high pages, overall and per rule (target: at least 80%);
- per family, detected / injected and the median delay from onset against its target (drift 5 min,
  safety and abuse 10 min, fairness 15 min, quality the label delay + 15 min; 100% detected);

then every anomaly, the false pages of each run by rule, and what paged during benign bursts.
Writes all of it as JSON. Scenarios run in parallel (one process each, ``-j``).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import msgspec
import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raiwatch.core.errors import RaiwatchError  # noqa: E402
from raiwatch.dev import scoring, synth  # noqa: E402

WEEK_DAYS = 7.0  # clean runs at least this long are the false-page benchmark
TARGET_FALSE_PAGES = 1.0  # per model-week
TARGET_PAGES_PER_PROBLEM = 1.5
TARGET_PRECISION = 0.8


def _fingerprint(path: Path) -> str:
    """What generated events depend on: the scenario (as parsed: comments do not count) and the
    generator's code."""
    h = hashlib.sha256(msgspec.json.encode(synth.load_scenario(path)))
    h.update(Path(synth.__file__).read_bytes())
    return h.hexdigest()


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_scenario(path: Path, work: Path, rules: Path | None) -> dict:
    """Generate (or reuse) and replay one scenario; its truth, incidents and timings (wall and CPU)."""
    events = work / f"{path.stem}.jsonl"
    stamp = work / f"{path.stem}.fingerprint"
    fingerprint = _fingerprint(path)
    t0, c0 = time.perf_counter(), time.process_time()
    reused = stamp.exists() and stamp.read_text() == fingerprint and synth.truth_path(events).exists()
    if reused:
        truth = orjson.loads(synth.truth_path(events).read_bytes())
    else:
        stamp.unlink(missing_ok=True)
        truth = synth.write(events, synth.load_scenario(path))
        stamp.write_text(fingerprint)
    t1, c1 = time.perf_counter(), time.process_time()
    out = work / f"{path.stem}-replay"
    cmd = [sys.executable, "-m", "raiwatch.cli", "replay", str(events), "--out", str(out), "--quiet"]
    cmd += ["--force"]  # --work DIR keeps the replays: the next run replaces its own
    if truth["labels"]:
        cmd += ["--feedback", str(synth.feedback_path(events))]
    if rules:
        cmd += ["--rules", str(rules)]
    r0 = _cpu_children()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{path.name}: replay failed: {p.stderr.strip()[-2000:]}")
    timings = {
        "reused": reused,
        "generate_s": round(t1 - t0, 1),
        "generate_cpu_s": round(c1 - c0, 1),
        "replay_s": round(time.perf_counter() - t1, 1),
        "replay_cpu_s": round(_cpu_children() - r0, 1),
    }
    (work / f"{path.stem}.timings.json").write_bytes(orjson.dumps(timings))
    return load_run(path, work)


def load_run(path: Path, work: Path) -> dict:
    """A scenario's truth, incidents and timings as a run left them in ``work``."""
    events = work / f"{path.stem}.jsonl"
    replayed = work / f"{path.stem}-replay" / "incidents.jsonl"
    timings = work / f"{path.stem}.timings.json"
    if not (synth.truth_path(events).exists() and replayed.exists() and timings.exists()):
        raise RaiwatchError(f"{work} holds no finished run of {path.name}: run without --rescore first")
    return {
        "truth": orjson.loads(synth.truth_path(events).read_bytes()),
        "incidents": [orjson.loads(x) for x in replayed.read_bytes().splitlines() if x],
        **orjson.loads(timings.read_bytes()),
    }


def _delay(s: float | None) -> str:
    return "-" if s is None else f"{s:.0f} s" if abs(s) < 120 else f"{s / 60:.1f} min"


def _pass(ok: bool | None) -> str:
    return "-" if ok is None else "pass" if ok else "FAIL"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _days(truth: dict) -> float:
    span = datetime.fromisoformat(truth["end"]) - datetime.fromisoformat(truth["start"])
    return span.total_seconds() / 86400


def _select(args: argparse.Namespace) -> list[Path]:
    files = sorted(args.scenarios.glob("*.yaml")) if args.scenarios.is_dir() else [args.scenarios]
    files = [f for f in files if fnmatch.fnmatch(f.name, args.match) or fnmatch.fnmatch(f.stem, args.match)]
    if args.only_clean:
        files = [f for f in files if not synth.load_scenario(f).anomalies]
    return files


def _table(title: str, *cols: str, left: tuple[str, ...] = ()) -> Table:
    table = Table(title=title)
    for i, col in enumerate(cols):
        table.add_column(col, justify="left" if i == 0 or col in left else "right")
    return table


@dataclass
class Bench:
    """One benchmark run, scored: what every table is made from."""

    rules: str
    names: list[str]  # scenario names, in file order
    runs: dict[str, dict]  # name -> truth, incidents, timings
    scores: dict[str, scoring.ScenarioScore]
    week: list[str] = field(init=False)  # the clean runs of a week or more
    injected: list[str] = field(init=False)  # the runs with anomalies

    def __post_init__(self) -> None:
        self.week = [
            n for n in self.names if self.scores[n].clean and _days(self.runs[n]["truth"]) >= WEEK_DAYS
        ]
        self.injected = [n for n in self.names if not self.scores[n].clean]

    @property
    def model_weeks(self) -> float:
        return sum(self.scores[n].model_weeks for n in self.week)

    def false_pages(self) -> tuple[list[scoring.RuleRow], int, float, float]:
        """Per rule on the week-long clean runs, and the total with its 95% interval."""
        rows = scoring.false_pages_by_rule([(self.scores[n], self.runs[n]["incidents"]) for n in self.week])
        total = sum(r.pages for r in rows)
        return (rows, total, *scoring.rate_interval(total, self.model_weeks))


def false_page_table(b: Bench) -> Table:
    rows, total, low, high = b.false_pages()
    weeks = b.model_weeks
    kinds = Counter(m["kind"] for n in b.week for m in b.runs[n]["truth"]["models"])
    models = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    table = _table(
        f"False pages per model-week on the week-long clean runs ({', '.join(b.week)}: {weeks:.1f} "
        f"model-weeks, {models}; rules: {b.rules})",
        *("rule", "severity", "incidents", "pages", "per model-week", "95% CI", "pages by model"),
        left=("severity", "pages by model"),
    )
    for r in rows:
        by_model = ", ".join(f"{m} {n}" for m, n in sorted(r.models.items(), key=lambda x: -x[1])) or "-"
        ci = f"{r.low:.2f}-{r.high:.2f}"
        table.add_row(
            r.rule, r.severity, str(r.incidents), str(r.pages), f"{r.per_model_week:.2f}", ci, by_model
        )
    incidents = sum(r.incidents for r in rows)
    rate = total / weeks if weeks else 0.0
    table.add_row("all rules", "", str(incidents), str(total), f"{rate:.2f}", f"{low:.2f}-{high:.2f}", "")
    return table


def pages_table(b: Bench) -> Table:
    table = _table(
        "Pages per injected problem (a page: incidents sharing a group_id; true: one of them detects or is "
        "related to an anomaly)",
        *(
            "scenario",
            "anomalies",
            "incidents",
            "pages",
            "true pages",
            "false pages",
            "pages / problem",
            "<= 1.5",
        ),
    )
    for n in b.injected:
        sc = b.scores[n]
        ppp = sc.pages_per_problem or 0.0
        true = sum(p.true for p in sc.pages)
        row = (len(sc.anomalies), len(b.runs[n]["incidents"]), len(sc.pages), true, len(sc.false_pages))
        table.add_row(n, *map(str, row), f"{ppp:.2f}", _pass(ppp <= TARGET_PAGES_PER_PROBLEM))
    return table


def precision_table(b: Bench) -> Table:
    prec = scoring.precision([b.scores[n] for n in b.names])
    title = "Precision of critical and high pages, all runs (a page counts for its first incident's rule)"
    table = _table(title, "rule", "pages", "true", "precision")
    for rule, p in sorted(prec.items(), key=lambda kv: (kv[0] != "", -kv[1].pages, kv[0])):
        table.add_row(rule or "all critical and high", str(p.pages), str(p.true), _pct(p.value))
    return table


def _target(family: str) -> str:
    return "label delay + 15 min" if family == "quality" else f"<= {_delay(scoring.TARGET_S[family])}"


def family_table(b: Bench) -> Table:
    fams = scoring.by_family([b.scores[n] for n in b.names])
    cols = ("family", "detected / injected", "median delay", "max delay", "target (median)", "met")
    table = _table(f"Detection by family (rules: {b.rules})", *cols)
    for r in fams:
        found = f"{r.detected} / {r.injected}"
        table.add_row(
            r.family,
            found,
            _delay(r.median_delay_s),
            _delay(r.max_delay_s),
            _target(r.family),
            _pass(r.meets_target),
        )
    return table


def targets(b: Bench) -> list[tuple[str, str, str, bool | None]]:
    """The issue's targets: (what, bar, measured, met)."""
    _, total, low, high = b.false_pages()
    weeks = b.model_weeks
    out: list[tuple[str, str, str, bool | None]] = []
    if weeks:
        measured = f"{total / weeks:.2f} ({low:.2f}-{high:.2f})"
        out.append(("false pages per model-week, week-long clean runs", "<= 1", measured, total / weeks <= 1))
    ppps = [b.scores[n].pages_per_problem or 0.0 for n in b.injected]
    if ppps:
        worst = max(ppps)
        out.append(("pages per injected problem, worst scenario", "<= 1.5", f"{worst:.2f}", worst <= 1.5))
    overall = scoring.precision([b.scores[n] for n in b.names])[""].value
    if overall is not None:
        out.append(
            ("precision of critical and high pages", ">= 80%", _pct(overall), overall >= TARGET_PRECISION)
        )
    fams = [r for r in scoring.by_family([b.scores[n] for n in b.names]) if r.injected]
    if fams:
        found, injected = sum(r.detected for r in fams), sum(r.injected for r in fams)
        out.append(("anomalies detected", "100%", f"{found} / {injected}", found == injected))
    for r in fams:
        out.append((f"median delay, {r.family}", _target(r.family), _delay(r.median_delay_s), r.meets_target))
    return out


def targets_table(b: Bench) -> Table:
    table = _table("Targets (issue 22)", "target", "bar", "measured", "met")
    for name, bar, measured, ok in targets(b):
        table.add_row(name, bar, measured, _pass(ok))
    return table


def scenario_table(b: Bench) -> Table:
    cols = ("scenario", "days", "models", "events", "labels", "incidents", "pages", "detected", "related")
    cols += ("false pages", "per model-week", "generate s (CPU)", "replay s (CPU)", "replay events / CPU s")
    table = _table("Per scenario", *cols)
    for n in b.names:
        sc, r = b.scores[n], b.runs[n]
        t = r["truth"]
        gen = "reused" if r["reused"] else f"{r['generate_s']:.0f} ({r['generate_cpu_s']:.0f})"
        rate = t["events"] / r["replay_cpu_s"] if r["replay_cpu_s"] else 0
        detected = f"{sum(a.detected for a in sc.anomalies)} / {len(sc.anomalies)}"
        false = len(sc.false_pages)
        table.add_row(
            n, f"{_days(t):.2f}", str(len(t["models"])), f"{t['events']:,}", f"{t['labels']:,}",
            str(len(r["incidents"])), str(len(sc.pages)), detected, str(len(sc.related)), str(false),
            f"{false / sc.model_weeks:.2f}", gen, f"{r['replay_s']:.0f} ({r['replay_cpu_s']:.0f})",
            f"{rate:,.0f}",
        )  # fmt: skip
    return table


def anomaly_table(b: Bench) -> Table:
    cols = ("scenario", "id", "kind", "model", "scope", "detected", "delay", "target", "incidents", "pages")
    table = _table("Every anomaly", *cols, left=cols)
    for n in b.injected:
        truth = {a["id"]: a for a in b.runs[n]["truth"]["anomalies"]}
        for a in b.scores[n].anomalies:
            scope = ",".join(f"{k}={v}" for k, v in truth[a.id]["dims"].items())
            found = "yes" if a.detected else "no"
            table.add_row(
                n, a.id, a.kind, a.model_id, scope, found, _delay(a.delay_s), _delay(a.target_s),
                str(len(a.incidents)), str(len(a.pages)),
            )  # fmt: skip
    return table


def false_page_list(b: Bench) -> Table | None:
    """The false pages of every run, by rule and model, with the first one's time and labels."""
    groups: dict[tuple[str, str, str, str], list[scoring.Page]] = {}
    for n in b.names:
        for p in b.scores[n].false_pages:
            groups.setdefault((n, p.rule, p.severity, p.model_id or "-"), []).append(p)
    if not groups:
        return None
    cols = ("scenario", "rule", "severity", "model", "pages", "first", "labels of the first")
    table = _table(
        "False pages by run, rule and model (pages that match no injected anomaly)", *cols, left=cols
    )
    for (n, rule, severity, model), pages in sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1]))):
        first = pages[0]
        inc = next(i for i in b.runs[n]["incidents"] if i["incident_id"] == first.incidents[0])
        labels = ",".join(
            f"{k}={v}" for k, v in inc.get("labels", {}).items() if k not in ("model_id", "team")
        )
        table.add_row(n, rule, severity, model, str(len(pages)), first.opened_at[:16], labels)
    return table


def burst_table(b: Bench) -> Table | None:
    bursts = [(n, x) for n in b.names for x in b.runs[n]["truth"].get("benign", [])]
    if not bursts:
        return None
    cols = ("scenario", "id", "model", "start", "prompt", "per min", "new accounts", "false pages", "rules")
    table = _table(
        "Benign bursts (viral prompts): false pages opened during them or up to 15 min after", *cols
    )
    for n, x in bursts:
        during = [p for p in b.scores[n].false_pages if x["id"] in p.benign]
        rules = ", ".join(sorted({p.rule for p in during})) or "-"
        new = f"{100 * x['new_share']:.0f}%"
        table.add_row(n, x["id"], x["model_id"], x["start"][:16], x["prompt"], f"{x['per_minute']:g}", new,
                      str(len(during)), rules)  # fmt: skip
    return table


def as_json(b: Bench, wall: float) -> dict:
    rows, total, low, high = b.false_pages()
    weeks = b.model_weeks
    prec = scoring.precision([b.scores[n] for n in b.names])
    fams = scoring.by_family([b.scores[n] for n in b.names])
    return {
        "rules": b.rules,
        "wall_s": round(wall, 1),
        "targets": [{"target": n, "bar": bar, "measured": m, "met": ok} for n, bar, m, ok in targets(b)],
        "week_clean_runs": b.week,
        "model_weeks": round(weeks, 3),
        "false_pages": total,
        "false_pages_per_model_week": round(total / weeks, 3) if weeks else None,
        "false_pages_per_model_week_ci95": [round(low, 3), round(high, 3)] if weeks else None,
        "false_pages_by_rule": [asdict(r) for r in rows],
        "precision_critical_high": {k or "all": asdict(v) | {"precision": v.value} for k, v in prec.items()},
        "families": [asdict(r) | {"recall": r.recall, "meets_target": r.meets_target} for r in fams],
        "scenarios": [
            asdict(b.scores[n])
            | {k: v for k, v in b.runs[n].items() if k not in ("truth", "incidents")}
            | {
                "clean": b.scores[n].clean,
                "days": _days(b.runs[n]["truth"]),
                "model_weeks": b.scores[n].model_weeks,
                "events": b.runs[n]["truth"]["events"],
                "labels": b.runs[n]["truth"]["labels"],
                "incidents": len(b.runs[n]["incidents"]),
                "false_pages": len(b.scores[n].false_pages),
                "pages_per_problem": b.scores[n].pages_per_problem,
                "benign": b.runs[n]["truth"].get("benign", []),
                "standing": b.runs[n]["truth"].get("standing", []),
            }
            for n in b.names
        ],
    }


def _run_all(console: Console, files: list[Path], args: argparse.Namespace) -> dict[str, dict]:
    """Every scenario generated and replayed, ``args.jobs`` at a time, the longest first."""
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        # the longest first, so that a week-long run does not start last
        order = sorted(files, key=lambda f: -synth.seconds(synth.load_scenario(f).duration))
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(run_scenario, f, work, args.rules): f for f in order}
            for fut in as_completed(futures):
                r = fut.result()
                runs[futures[fut].stem] = r
                t = r["truth"]
                gen = "events reused" if r["reused"] else f"generated in {r['generate_s']} s"
                console.print(
                    f"{futures[fut].stem}: {t['events']:,} events, {t['labels']:,} labels,",
                    f"{len(r['incidents'])} incidents; {gen} ({r['generate_cpu_s']} s CPU),",
                    f"replayed in {r['replay_s']} s ({r['replay_cpu_s']} s CPU)",
                )
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--scenarios", type=Path, default=ROOT / "bench" / "scenarios", help="a folder or one file"
    )
    ap.add_argument("--match", default="*", help="only scenario files whose name matches this glob")
    ap.add_argument("--only-clean", action="store_true", help="only scenarios with nothing injected")
    ap.add_argument("--rules", type=Path, help="rule folder or file (default: the shipped alert_rules/)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "detection.json")
    ap.add_argument(
        "--work",
        type=Path,
        help="keep generated events and replays here, and reuse events (default: a temp dir)",
    )
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rescore", action="store_true", help="score the runs left in --work again, no replay")
    args = ap.parse_args()
    try:  # refuse a bad scenario before any work
        files = _select(args)
        for f in files:
            synth.load_scenario(f)
    except RaiwatchError as e:
        print(f"raiwatch: error: {e}", file=sys.stderr)
        return 2
    if not files:
        print(f"raiwatch: error: no scenario in {args.scenarios} matches", file=sys.stderr)
        return 2
    console = Console(width=None if sys.stdout.isatty() else 160)
    t0 = time.perf_counter()
    runs: dict[str, dict] = {}
    if args.rescore:
        if args.work is None:
            print("raiwatch: error: --rescore reads the runs left in --work DIR: give it", file=sys.stderr)
            return 2
        try:
            runs = {f.stem: load_run(f, args.work) for f in files}
        except RaiwatchError as e:
            print(f"raiwatch: error: {e}", file=sys.stderr)
            return 2
    else:
        runs = _run_all(console, files, args)
    wall = time.perf_counter() - t0
    names = [f.stem for f in files]
    scores = {n: scoring.score(runs[n]["truth"], runs[n]["incidents"]) for n in names}
    b = Bench(str(args.rules or "alert_rules (shipped)"), names, runs, scores)
    tables = [false_page_table(b) if b.week else None, pages_table(b) if b.injected else None]
    tables += [precision_table(b), family_table(b), targets_table(b), scenario_table(b)]
    tables += [anomaly_table(b) if b.injected else None, false_page_list(b), burst_table(b)]
    for table in tables:
        if table is not None:
            console.print(table)
    events = sum(runs[n]["truth"]["events"] for n in names)
    if args.rescore:
        console.print(f"rescored the runs left in {args.work}: {len(files)} scenarios, {events:,} events")
    else:
        console.print(
            f"wall time {wall:.0f} s for {len(files)} scenarios, {events:,} events ({args.jobs} at a time)"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(as_json(b, wall), option=orjson.OPT_INDENT_2))
    console.print(f"JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
