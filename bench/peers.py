"""What the tools a user would pick instead do with the same events: whylogs and Evidently.

    .venv/bin/python bench/peers.py EVENTS.jsonl [--window-s 60] [--budget-s 60]

Both get the events already flattened into one pandas frame (model, window, the numeric and
categorical fields raiwatch's monitors read: prompt and answer tokens, latency, score, label,
language, tenant, the request features, the safety scores): the flattening is not timed, so
they are timed on less work than raiwatch's replay, which decodes, validates, runs five
monitor families and writes ClickHouse and SQLite.

- **whylogs** 1.6.4 profiles each model's window (``why.log(pandas=...)``), as its docs show for
  batch profiling. whylogs needs numpy < 2, so it runs in a venv of its own that this script
  makes once under ``~/.cache/raiwatch/bench-whylogs`` (never a raiwatch dependency).
- **Evidently** 0.7.23 runs ``Report([DataDriftPreset()])`` on each model's window against that
  model's first window, the closest it has to raiwatch's per-window drift test.

Each runs over the windows in time order until ``--budget-s`` of wall time is spent (Evidently
takes about a second per report); the rate is events of the windows done per second of wall
time, as the replay is timed.
``bench_pipeline.py --peers`` runs this on its own events and prints raiwatch's ratio to each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import msgspec  # noqa: E402
import pandas as pd  # noqa: E402
import sidevenv  # noqa: E402

from raiwatch.core.records import TelemetryEvent  # noqa: E402

WHYLOGS_PINS = ("whylogs==1.6.4", "numpy<2", "pandas<2.3", "pyarrow<18")
_decode = msgspec.json.Decoder(TelemetryEvent).decode


def frame(path: Path, window_s: int) -> pd.DataFrame:
    """One row per valid event: model, window start and the flattened fields (not timed)."""
    rows = []
    with path.open("rb") as f:
        for line in f:
            try:
                ev = _decode(line)
            except msgspec.MsgspecError:
                continue
            q, r, s = ev.request, ev.response, ev.safety
            pred = r.prediction if r and r.prediction else None
            row: dict[str, object] = {
                "model": ev.model.id,
                "window": int(ev.timestamp.timestamp()) // window_s * window_s,
                "tenant": ev.tenant_id or None,
                "in_tokens": q.tokens if q and q.tokens else None,
                "language": q.language if q and q.language else None,
                "out_tokens": r.tokens if r and r.tokens else None,
                "latency_ms": r.latency_ms if r and r.latency_ms else None,
                "score": pred.score if pred else None,
                "label": pred.label if pred and pred.label else None,
            }
            if q and q.features:
                row.update({f"f_{k}": v for k, v in q.features.items()})
            if s and s.scores:
                row.update({f"safety_{k}": v for k, v in s.scores.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def groups(df: pd.DataFrame) -> list[tuple[str, int, pd.DataFrame]]:
    """Each model's windows in time order, without the columns that model never fills."""
    out = []
    for (model, window), g in df.groupby(["model", "window"], sort=False):
        out.append((str(model), int(window), g.drop(columns=["model", "window"]).dropna(axis=1, how="all")))
    out.sort(key=lambda x: (x[1], x[0]))
    return out


def evidently_rate(df: pd.DataFrame, budget_s: float) -> tuple[float, int, int]:
    """Events per second of ``DataDriftPreset`` per model window; windows and events done."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    reference: dict[str, pd.DataFrame] = {}
    done = events = 0
    spent = 0.0
    for model, _, g in groups(df):
        if model not in reference:
            reference[model] = g
            continue
        ref = reference[model]
        cols = [c for c in g.columns if c in ref.columns]
        if not cols or len(g) < 2:
            continue
        t0 = time.perf_counter()
        Report([DataDriftPreset()]).run(Dataset.from_pandas(g[cols]), Dataset.from_pandas(ref[cols]))
        spent += time.perf_counter() - t0
        done += 1
        events += len(g)
        if spent >= budget_s:
            break
    return events / spent if spent else 0.0, done, events


_WHYLOGS_CHILD = r"""
import json, sys, time
import pandas as pd
import whylogs as why
df = pd.read_parquet(sys.argv[1])
budget = float(sys.argv[2])
spent, done, events = 0.0, 0, 0
keys = sorted(df.groupby(["model", "window"]).groups.items(), key=lambda kv: (kv[0][1], kv[0][0]))
for (model, window), index in keys:
    g = df.loc[index].drop(columns=["model", "window"]).dropna(axis=1, how="all")
    t0 = time.perf_counter()
    why.log(pandas=g).view()
    spent += time.perf_counter() - t0
    done += 1
    events += len(g)
    if spent >= budget:
        break
print(json.dumps({"rate": events / spent if spent else 0.0, "windows": done, "events": events}))
"""


def whylogs_rate(df: pd.DataFrame, budget_s: float, work: Path) -> tuple[float, int, int]:
    """Events per second of a whylogs profile per model window, in whylogs' own venv."""
    python = sidevenv.ensure("bench-whylogs", WHYLOGS_PINS)
    data = work / "peers.parquet"
    df.to_parquet(data)
    child = work / "whylogs_child.py"
    child.write_text(_WHYLOGS_CHILD)
    env = {"WHYLOGS_NO_ANALYTICS": "True", "PATH": "/usr/bin:/bin"}
    cmd = [str(python), str(child), str(data), str(budget_s)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["rate"], res["windows"], res["events"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("events", type=Path)
    ap.add_argument("--window-s", type=int, default=60)
    ap.add_argument("--budget-s", type=float, default=60.0)
    args = ap.parse_args()
    df = frame(args.events, args.window_s)
    work = args.events.parent
    for name, (rate, done, n) in (
        ("whylogs profile per model window", whylogs_rate(df, args.budget_s, work)),
        ("Evidently DataDriftPreset per model window", evidently_rate(df, args.budget_s)),
    ):
        print(f"{name}: {rate:,.0f} events/s ({done} windows, {n:,} events)")


if __name__ == "__main__":
    main()
