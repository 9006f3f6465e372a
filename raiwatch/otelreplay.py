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
from raiwatch.timedfeed import TimedFeed

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
        self.feed = TimedFeed(
            lines(logs_path) if logs_path else iter(()), self._stamp, self._send, BATCH
        ).feed_until

    def before_batch(self, lines: list[bytes], origin: Callable[[int], str]) -> _Decoded:
        """Decode a batch of span lines and feed the evaluations it may meet; the codec that hands
        ``Pipeline.process`` this decoding."""
        decoded = self.spans.decode_batch(lines, origin)
        newest = max(decoded.ts, default=self.pipe.clock.newest)
        if math.isfinite(newest):
            self.feed(newest + self.reach)
        return _Decoded(decoded)

    def _stamp(self, line: bytes) -> float:
        """An evaluation message's earliest result, in epoch seconds (-inf: none, fed at once)."""
        return min((e.ts for e in self.logs.decode_batch([line]).evaluations), default=-math.inf)

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
