"""A real worker with one injected fault, for the crash tests: ``python -m tests.faults STAGE AT ARGS``
runs ``raiwatch run ARGS`` with one part of its pipeline raising the first time it works on the
window starting at AT (epoch seconds) or a later one.

The fault goes through the pipeline's own seam (it is built from parts: monitors, rule engine,
writer): the part is wrapped right after ``build_pipeline`` made it, and nothing in the product
knows about faults. STAGE is where a window's results can be lost between its events and the
commit of their offsets:

- ``observe``: the safety monitor taking a batch of events, once every window before AT closed
- ``close``: the safety monitor closing the window at AT
- ``rules``: the rule engine evaluating its signals
- ``write``: the writer storing its signals
- ``checkpoint``: the writer storing the checkpoint that says it is done
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from raiwatch import cli, worker
from raiwatch.pipeline import Pipeline

Part = Callable[[Pipeline], tuple[Any, str]]
Due = Callable[[Pipeline, float, tuple], bool]  # (pipeline, AT, the call's arguments) -> raise now?


def _safety(pipe: Pipeline) -> Any:
    return next(m for m in pipe.monitors if m.family == "safety")


def _signals_of(at: float, signals: Any) -> bool:
    return any(s.ts.timestamp() > at for s in signals)  # a signal's ts is its window's end


STAGES: dict[str, tuple[Part, Due]] = {
    "observe": (
        lambda p: (_safety(p), "observe"),
        lambda p, at, a: bool(a[0]) and p.clock.closed_until >= at,
    ),
    "close": (lambda p: (_safety(p), "close"), lambda p, at, a: a[0] >= at),
    "rules": (lambda p: (p.engine, "evaluate"), lambda p, at, a: _signals_of(at, a[0])),
    "write": (lambda p: (p.writer, "write_signals"), lambda p, at, a: _signals_of(at, a[0])),
    "checkpoint": (lambda p: (p.writer, "write_checkpoints"), lambda p, at, a: any(r[2] > at for r in a[0])),
}


class InjectedFault(RuntimeError):
    """What the wrapped part raises."""


def main(argv: list[str]) -> int:
    stage, at, *args = argv
    part_of, due = STAGES[stage]
    build = worker.build_pipeline

    def build_with_fault(*a: Any, **kw: Any) -> Pipeline:
        pipe = build(*a, **kw)
        part, name = part_of(pipe)
        real = getattr(part, name)

        def failing(*call: Any, **kwargs: Any) -> Any:
            if due(pipe, float(at), call):
                raise InjectedFault(f"injected fault: {stage} at {at}")
            return real(*call, **kwargs)

        setattr(part, name, failing)
        return pipe

    worker.build_pipeline = build_with_fault
    return cli.main(["run", *args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
