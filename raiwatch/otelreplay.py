"""The OTLP side of ``raiwatch replay --otlp``: files of OTLP/JSON messages instead of telemetry events.

Each line of the events file is one ``ExportTraceServiceRequest`` in OTLP/JSON — a message of the
Collector's ``kafka`` exporter with ``encoding: otlp_json``, or a line of its ``file`` exporter —
and each line of ``--otlp-logs`` one ``ExportLogsServiceRequest`` carrying
``gen_ai.evaluation.result`` events. Evaluations are fed ahead of the spans, in event time: up to
one window plus the allowed lateness past the newest span, which is as far as a stream's join
would reach (an evaluation that comes before its operation waits for it; it moves no event time).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

from raiwatch.core.batch import BatchResult
from raiwatch.core.config import Config
from raiwatch.core.otelmap import load_mapping
from raiwatch.core.otlp import OtlpLogs, OtlpSpans, SpansDecoded
from raiwatch.evaljoin import EvaluationJoin
from raiwatch.pipeline import Pipeline

BATCH = 200  # messages per batch (each holds many spans), so event time moves in small steps


class OtlpReplay:
    """Codecs and the evaluation feed of one OTLP replay; ``before_batch`` runs ahead of each span batch."""

    def __init__(
        self,
        cfg: Config,
        pipe: Pipeline,
        logs_path: Path | None,
        lines: Callable[[Path], Iterator[tuple[int, bytes]]],
        on_result: Callable[[BatchResult], None],
    ):
        mapping = load_mapping(cfg.otel.mapping)
        self.spans = OtlpSpans(mapping, "otlp_json")
        self.logs = OtlpLogs("otlp_json")
        self.pipe = pipe
        pipe.evaluations = EvaluationJoin(mapping, cfg.otel.max_held, cfg.otel.max_early)
        self.reach = cfg.windows.size_s + cfg.windows.allowed_lateness_s
        self.path = logs_path
        self.on_result = on_result
        self._lines = lines(logs_path) if logs_path is not None else iter(())
        self._next: tuple[int, bytes, float] | None = None

    def before_batch(self, lines: list[bytes], origin: Callable[[int], str]) -> _Decoded:
        """Decode a batch of span lines and feed the evaluations it may meet; the codec that hands
        ``Pipeline.process`` this decoding."""
        decoded = self.spans.decode_batch(lines, origin)
        newest = max(decoded.ts, default=self.pipe.clock.newest)
        if math.isfinite(newest):
            self.feed(newest + self.reach)
        return _Decoded(decoded)

    def feed(self, until: float) -> None:
        """Hand the pipeline every evaluation line dated up to ``until`` (its earliest result)."""
        batch: list[tuple[int, bytes]] = []
        while True:
            if self._next is None:
                got = next(self._lines, None)
                if got is None:
                    break
                stamps = [e.ts for e in self.logs.decode_batch([got[1]]).evaluations]
                self._next = (*got, min(stamps, default=-math.inf))
            number, line, ts = self._next
            if ts > until:
                break
            self._next = None
            if line.strip():
                batch.append((number, line))
            if len(batch) >= BATCH:
                self._send(batch)
                batch = []
        self._send(batch)

    def _send(self, batch: list[tuple[int, bytes]]) -> None:
        if not batch:
            return
        name = self.path.name if self.path else ""
        res = self.pipe.process_evaluations(
            [ln for _, ln in batch], [0] * len(batch), lambda i: f"{name}:{batch[i][0]}", codec=self.logs
        )
        self.on_result(res)


class _Decoded:
    """A codec whose answer is already known (the batch was decoded to see how far it reaches)."""

    def __init__(self, decoded: SpansDecoded):
        self.decoded = decoded

    def decode_batch(self, raws: object, origin: object = None) -> SpansDecoded:
        return self.decoded
