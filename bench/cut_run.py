"""Cut a clean-week run (one stopped early, or a replay of its first hours) at an event-time
horizon, for bench/detection.py --rescore.

    .venv/bin/python bench/cut_run.py NAME TRUTH INCIDENTS(.jsonl|.db) CUTOFF_ISO OUTDIR

Writes OUTDIR/work/NAME.truth.json (end = cutoff, bursts that start before it),
OUTDIR/work/NAME-replay/incidents.jsonl (incidents opened before the cutoff; open ones as they
stood), OUTDIR/scen/NAME.yaml (a copy of the scenario, only its stem is used by --rescore).
"""

import shutil
import sys
from datetime import datetime
from pathlib import Path

import orjson

name, truth_p, inc_p, cutoff, out = sys.argv[1:6]
cut = datetime.fromisoformat(cutoff)
out = Path(out)
(out / "work" / f"{name}-replay").mkdir(parents=True, exist_ok=True)
(out / "scen").mkdir(parents=True, exist_ok=True)
truth = orjson.loads(Path(truth_p).read_bytes())
truth["end"] = cut.isoformat()
truth["benign"] = [b for b in truth["benign"] if datetime.fromisoformat(b["start"]) < cut]
(out / "work" / f"{name}.truth.json").write_bytes(orjson.dumps(truth))
if inc_p.endswith(".db"):
    from storage.incidents.store import IncidentStore

    store = IncidentStore(f"sqlite:///{inc_p}", migrate=False)
    incs, cursor = [], 0
    while True:
        got, cursor2 = store.changed_since(cursor, 5000)
        incs += got
        if not got or cursor2 == cursor:
            break
        cursor = cursor2
    rows = {i.incident_id: i.to_contract() for i in incs}.values()
else:
    rows = [orjson.loads(x) for x in Path(inc_p).read_bytes().splitlines() if x]
rows = sorted(
    (r for r in rows if datetime.fromisoformat(r["opened_at"].replace("Z", "+00:00")) < cut),
    key=lambda r: (r["opened_at"], r["incident_id"]),
)
with (out / "work" / f"{name}-replay" / "incidents.jsonl").open("wb") as f:
    for r in rows:
        f.write(orjson.dumps(r) + b"\n")
(out / "work" / f"{name}.timings.json").write_bytes(
    orjson.dumps({"reused": True, "generate_s": 0, "generate_cpu_s": 0, "replay_s": 0, "replay_cpu_s": 0})
)
shutil.copy(Path(__file__).parent / "scenarios" / f"{name}.yaml", out / "scen" / f"{name}.yaml")
print(f"{name}: {len(rows)} incidents opened before {cut.isoformat()}")
