"""``raiwatch replay``: the pipeline over a JSON-lines file, in event time, with no Kafka.

Writes into OUT: ``incidents.jsonl`` (incident.v1, final state of each incident),
``rejected.jsonl`` (each bad line with its line number and reason), the ClickHouse data
(``OUT/clickhouse``: raw events, signals, incidents) and the incident store
(``OUT/incidents.db``). It is the backtest engine: point ``--rules`` at a draft rule folder.
"""

from __future__ import annotations

import base64
import gc
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from hashlib import sha256
from pathlib import Path

import msgspec
import orjson

from raiwatch.core.batch import BatchResult
from raiwatch.core.codec import Rejected
from raiwatch.core.config import Config
from raiwatch.core.errors import RaiwatchError
from raiwatch.core.records import Incident
from raiwatch.otelreplay import BATCH as OTLP_BATCH
from raiwatch.otelreplay import OtlpReplay
from raiwatch.pipeline import Pipeline
from raiwatch.wiring import build_pipeline

MARKER = ".raiwatch-replay"
BATCH = 20_000


@dataclass
class ReplaySummary:
    lines: int = 0
    events: int = 0
    rejected: int = 0
    late: int = 0
    replayed: int = 0
    duplicates: int = 0
    signals: int = 0
    feedback: int = 0
    feedback_rejected: int = 0
    seconds: float = 0.0
    incidents: list[Incident] = field(default_factory=list)
    monitor_seconds: dict[str, float] = field(default_factory=dict)  # per family: observe + close
    out: Path = Path()

    @property
    def events_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


def prepare_out(out: Path) -> None:
    """Make OUT empty for a new run; refuse a non-empty folder that a replay did not create."""
    if out.exists() and not out.is_dir():
        raise RaiwatchError(f"--out {out} is a file; give a folder (it is created if missing)")
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise RaiwatchError(
                f"{out} is not empty and was not made by raiwatch replay; choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by raiwatch replay; the next replay into this folder replaces it\n")


def read_chunks(path: Path, size: int) -> Iterator[tuple[int, list[bytes]]]:
    """Lines (without their line ends) in chunks of ``size``, each with the 1-based number of its first.

    Reads big blocks and splits them, rather than iterating over the file line by line.
    """
    chunk: list[bytes] = []
    first = 1
    tail = b""
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            data = tail + block
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n")
            lines = data.split(b"\n")
            tail = lines.pop()
            while lines:
                take = size - len(chunk)
                chunk += lines[:take]
                del lines[:take]
                if len(chunk) == size:
                    yield first, chunk
                    first += size
                    chunk = []
    if tail:
        chunk.append(tail.removesuffix(b"\r"))
    if chunk:
        yield first, chunk


def replay(
    events_path: str | Path,
    cfg: Config,
    out: str | Path,
    rules_dir: str | Path | None = None,
    feedback_path: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    otlp: bool = False,
    otlp_logs: str | Path | None = None,
) -> ReplaySummary:
    """Run the pipeline over ``events_path``; ``progress`` is called with bytes read so far.
    ``otlp``: the file holds OTLP/JSON span messages, ``otlp_logs`` their evaluations
    (``raiwatch.otelreplay``)."""
    events_path, out = Path(events_path), Path(out).resolve()
    for path, what in ((events_path, "telemetry events"), (feedback_path, "feedback events"),
                       (otlp_logs, "OTLP/JSON log messages")):  # fmt: skip
        if path is None:
            continue
        if Path(path).is_dir():
            raise RaiwatchError(f"{path} is a folder; give a JSON-lines file of {what}")
        if not Path(path).is_file():
            raise RaiwatchError(f"{path}: no such file")
    prepare_out(out)
    cfg = _replay_config(cfg, out)
    pipe = build_pipeline(cfg, rules_dir)
    gc.freeze()  # what start-up allocated is never garbage: keep the collector off it
    summary = ReplaySummary(out=out)
    incidents: dict[str, Incident] = {}
    t0 = time.perf_counter()
    with (out / "rejected.jsonl").open("wb") as rej:
        labels = _Labels(Path(feedback_path), pipe, summary, rej) if feedback_path else None
        spans = None
        if otlp:
            spans = OtlpReplay(cfg, pipe, Path(otlp_logs) if otlp_logs else None, _numbered,
                               lambda r: _collect_evaluations(r, summary, incidents, rej))  # fmt: skip
        for first, lines in read_chunks(events_path, OTLP_BATCH if otlp else BATCH):
            numbers = range(first, first + len(lines))
            if not all(lines):  # blank lines are skipped, not rejected
                numbers = [n for n, b in zip(numbers, lines, strict=True) if b.strip()]
                lines = [b for b in lines if b.strip()]
            name = events_path.name
            origin = lambda i, name=name, numbers=numbers: f"{name}:{numbers[i]}"  # noqa: E731
            codec = spans.before_batch(lines, origin) if spans is not None else None
            res = pipe.process(lines, [0] * len(lines), origin, codec=codec)
            _collect(res, summary, incidents, rej)
            if labels:  # labels dated up to the newest event so far: their inferences came before them
                labels.feed_until(pipe.clock.newest)
            if progress:
                progress(sum(map(len, lines)) + len(lines))
        if labels:
            labels.feed_until(math.inf)
        if spans is not None:
            spans.feed(math.inf)
        _collect(pipe.close_all(), summary, incidents, rej)
        summary.rejected += len(pipe.storage_rejected)
        _write_rejected(rej, pipe.storage_rejected)
    summary.events = pipe.events_in
    summary.feedback = pipe.feedback_in
    summary.seconds = time.perf_counter() - t0
    summary.monitor_seconds = dict(pipe.monitor_seconds)
    summary.incidents = sorted(incidents.values(), key=lambda i: (i.opened_at, i.incident_id))
    with (out / "incidents.jsonl").open("wb") as f:
        for inc in summary.incidents:
            f.write(orjson.dumps(inc.to_contract()) + b"\n")
    return summary


def _collect(res: BatchResult, summary: ReplaySummary, incidents: dict[str, Incident], rej) -> None:
    summary.lines += len(res.windows)
    summary.rejected += len(res.rejected)
    summary.late += res.late
    summary.replayed += res.replayed
    summary.duplicates += res.duplicates
    summary.signals += len(res.signals)
    _write_rejected(rej, res.rejected)
    for c in res.changes:
        incidents[c.incident.incident_id] = c.incident


def _collect_evaluations(
    res: BatchResult, summary: ReplaySummary, incidents: dict[str, Incident], rej
) -> None:
    """An OTLP evaluation batch's outcome: its rejections count as feedback's, its closes as any."""
    summary.feedback_rejected += len(res.rejected)
    summary.signals += len(res.signals)
    _write_rejected(rej, res.rejected)
    for c in res.changes:
        incidents[c.incident.incident_id] = c.incident


def _numbered(path: Path) -> Iterator[tuple[int, bytes]]:
    return ((n, ln) for first, chunk in read_chunks(path, BATCH) for n, ln in enumerate(chunk, first))


class _Stamp(msgspec.Struct):
    timestamp: datetime


_STAMP = msgspec.json.Decoder(_Stamp)


class _Labels:
    """The feedback file, fed to the pipeline in event time beside the events (a label is fed once
    the events have reached its timestamp); bad lines go to rejected.jsonl like bad events."""

    def __init__(self, path: Path, pipe: Pipeline, summary: ReplaySummary, rej):
        self.path, self.pipe, self.summary, self.rej = path, pipe, summary, rej
        self._lines = (
            (n, ln) for first, chunk in read_chunks(path, BATCH) for n, ln in enumerate(chunk, first)
        )
        self._next: tuple[int, bytes, float] | None = None

    def feed_until(self, until: float) -> None:
        batch: list[tuple[int, bytes]] = []
        while True:
            if self._next is None:
                got = next(self._lines, None)
                if got is None:
                    break
                self._next = (*got, _stamp(got[1]))
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
        name = self.path.name
        res = self.pipe.process_feedback(
            [ln for _, ln in batch], [0] * len(batch), lambda i, batch=batch: f"{name}:{batch[i][0]}"
        )
        self.summary.feedback_rejected += len(res.rejected)
        _write_rejected(self.rej, res.rejected)


def _stamp(line: bytes) -> float:
    """A feedback line's timestamp in epoch seconds; -inf when it has none (fed at once, rejected)."""
    try:
        return _STAMP.decode(line).timestamp.timestamp()
    except Exception:  # a bad line: the codec will say why
        return -math.inf


def _write_rejected(rej, rejected: list[Rejected]) -> None:
    """One JSON line per rejection: source, reason, size, sha256, and the bytes (as text when they
    are UTF-8, else as ``raw_base64``), whole."""
    for r in rejected:
        rec = {"source": r.source, "reason": r.reason, "size": len(r.raw)}
        rec["sha256"] = sha256(r.raw).hexdigest()
        try:
            rec["raw"] = r.raw.decode()
        except UnicodeDecodeError:
            rec["raw_base64"] = base64.b64encode(r.raw).decode()
        rej.write(orjson.dumps(rec))
        rej.write(b"\n")


def _replay_config(cfg: Config, out: Path) -> Config:
    """The same settings, with every store placed inside OUT."""
    ch = msgspec.structs.replace(cfg.clickhouse, dsn=f"chdb://{out / 'clickhouse'}")
    return msgspec.structs.replace(
        cfg, data_dir=str(out), clickhouse=ch, incident_db=f"sqlite:///{out / 'incidents.db'}"
    )
