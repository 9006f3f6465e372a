"""Drift computation against Evidently's DataDriftPreset: time and peak memory, one run, as ratios.

    .venv/bin/python bench/drift.py [--rows 100000] [--columns 20]

The same data for all: a reference and a current frame of ``--rows`` rows and ``--columns``
features (three in four numeric of assorted shapes, the rest categorical), one numeric feature
scaled by 1.25 in the current frame. Each contender runs in its own process, which reports its
wall time and its peak RSS above the RSS it had once the data was built:

- evidently: ``Report([DataDriftPreset()]).run(current, reference)`` at its defaults;
- raiwatch tests: the drift monitor's statistics on the columns (quantile bins from the
  reference, counts, PSI, chi-square, KS, Jensen-Shannon for every feature at once);
- raiwatch monitor: the streaming path itself, event by event (``features_of`` rows through the
  monitor's counting and tests), as a worker runs it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def frames(rows: int, columns: int, seed: int = 1):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)

    def make(drift: bool) -> pd.DataFrame:
        data = {}
        for j in range(columns):
            kind = j % 4
            if kind == 0:
                col = rng.lognormal(3 + j % 3, 0.5, rows)
                if drift and j == 0:
                    col = col * 1.25
            elif kind == 1:
                col = rng.normal(10 * j, 1 + j % 5, rows)
            elif kind == 2:
                col = rng.integers(0, 10 + j, rows).astype(float)
            else:
                col = rng.choice([f"c{i}" for i in range(3 + j % 6)], rows)
            data[f"f{j:02d}"] = col
        return pd.DataFrame(data)

    return make(False), make(True)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def contender(name: str, rows: int, columns: int) -> dict:
    ref, cur = frames(rows, columns)
    import gc

    gc.collect()
    base = _rss_mb()
    t0 = time.perf_counter()
    if name == "evidently":
        from evidently import Report
        from evidently.presets import DataDriftPreset

        snap = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
        counts = [m for m in snap.dict()["metrics"] if m["metric_name"].startswith("DriftedColumnsCount")]
        found = int(counts[0]["value"]["count"])
    elif name == "raiwatch tests":
        import numpy as np

        from detectors.drift import chi2_homogeneity, js_distance, ks_binned, psi

        bins_ref, bins_cur = [], []
        for c in ref.columns:
            r, x = ref[c].to_numpy(), cur[c].to_numpy()
            if r.dtype == object:
                cats = {v: i for i, v in enumerate(sorted(set(r)))}
                ri = np.fromiter((cats.get(v, len(cats)) for v in r), np.int64, len(r))
                xi = np.fromiter((cats.get(v, len(cats)) for v in x), np.int64, len(x))
                width = len(cats) + 1
            else:
                cuts = np.unique(np.quantile(r, np.linspace(0, 1, 21)[1:-1]))
                ri, xi = np.searchsorted(cuts, r, "right"), np.searchsorted(cuts, x, "right")
                width = len(cuts) + 1
            bins_ref.append(np.bincount(ri, minlength=21)[:21])
            bins_cur.append(np.bincount(xi, minlength=21)[:21])
            assert width <= 21
        R, C = np.array(bins_ref), np.array(bins_cur)
        p = chi2_homogeneity(R, C).p_value * len(ref.columns)
        effect = psi(R, C).effect
        ks_binned(R, C), js_distance(R, C)
        found = int(((p < 1e-4) & (effect > 0.1)).sum())
    else:
        from detectors.drift import chi2_homogeneity, psi
        from monitors.drift import DriftConfig, _Counts, build_reference

        ref_rows = ref.to_dict("records")
        cur_rows = cur.to_dict("records")
        reference = build_reference(ref_rows, DriftConfig(reference_sample=rows), "bench", "")
        counts = _Counts(reference)
        for i in range(0, len(cur_rows), 2000):
            counts.add_rows(reference, cur_rows[i : i + 2000])
        import numpy as np

        R = np.zeros_like(counts.bins)
        for i, f in enumerate(reference.features):
            R[i, : f.width] = f.counts
        p = chi2_homogeneity(R, counts.bins).p_value * len(reference.features)
        found = int(((p < 1e-4) & (psi(R, counts.bins).effect > 0.1)).sum())
    seconds = time.perf_counter() - t0
    return {"name": name, "seconds": seconds, "peak_mb": _rss_mb() - base, "drifted": found}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--columns", type=int, default=20)
    ap.add_argument("--contender", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.contender:
        print(json.dumps(contender(args.contender, args.rows, args.columns)))
        return 0
    results = {}
    for name in ("evidently", "raiwatch tests", "raiwatch monitor"):
        cmd = [
            sys.executable,
            __file__,
            "--contender",
            name,
            "--rows",
            str(args.rows),
            "--columns",
            str(args.columns),
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if p.returncode:
            print(p.stderr[-3000:], file=sys.stderr)
            return 1
        results[name] = json.loads(p.stdout.strip().splitlines()[-1])
    ev = results["evidently"]
    shape = f"{args.rows:,} rows x {args.columns} features"
    print(f"{shape} against a {args.rows:,}-row reference, one feature x1.25")
    print(f"{'':18} {'seconds':>8} {'peak MB':>8} {'drifted':>8} {'speed-up':>9} {'memory':>7}")
    for name, r in results.items():
        speed = ev["seconds"] / r["seconds"]
        mem = ev["peak_mb"] / r["peak_mb"] if r["peak_mb"] > 0 else float("inf")
        print(
            f"{name:18} {r['seconds']:8.2f} {r['peak_mb']:8.0f} {r['drifted']:8d} {speed:8.1f}x {mem:6.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
