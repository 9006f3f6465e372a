"""faust-streaming on the same broker and topic as the bare consumer: why the worker is not a faust app.

``bench_pipeline.py --faust`` runs ``faust_noop_agent.py`` (an agent that only decodes) in a venv
of its own under ``~/.cache/raiwatch/bench-faust`` and prints its rate beside the bare aiokafka
consumer's. faust-streaming is not a raiwatch dependency; the README's "Why not faust-streaming"
quotes this measurement.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import sidevenv

FAUST_PINS = ("faust-streaming==0.15.3", "aiokafka==0.14.0", "msgspec==0.22.0")
AGENT = Path(__file__).with_name("faust_noop_agent.py")


class FaustRun(NamedTuple):
    first: float  # seconds from the agent's start to its first batch (app start-up and group join)
    drained: float  # seconds from its first batch until it had decoded every event


def faust_noop(bootstrap: str, topic: str, total: int, work: Path, batch: int = 2000) -> FaustRun:
    """Time the no-op agent over ``total`` events of ``topic``, read from the start; faust keeps
    its files in ``work``."""
    python = sidevenv.ensure("bench-faust", FAUST_PINS)
    run = subprocess.run(
        [str(python), str(AGENT), bootstrap, topic, str(total), str(batch), str(work)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = run.stdout + run.stderr  # faust may route stderr
    first, done = re.search(r"FIRST (\S+)", out), re.search(r"DONE (\S+)", out)
    if not (first and done):
        sys.exit(f"the faust agent did not finish (exit {run.returncode}):\n{out[-2000:]}")
    return FaustRun(float(first.group(1)), float(done.group(1)))
