"""``raiwatch replay``: the pipeline over a JSON-lines file, in event time, with no Kafka.

Writes into OUT: ``incidents.jsonl`` (incident.v1, final state of each incident),
``rejected.jsonl`` (each bad line with its line number and reason), the ClickHouse data
(``OUT/clickhouse``: raw events, signals, incidents) and the incident store
(``OUT/incidents.db``). It is the backtest engine: point ``--rules`` at a draft rule folder.

OUT is held (``raiwatch.datadir``) while the replay runs, and marked as a replay's: a folder no
replay made is refused, and an earlier replay's output is replaced only with ``force``.
"""

from __future__ import annotations

import base64
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
from sqlalchemy import delete, func, select
from sqlalchemy.exc import DBAPIError

from raiwatch import datadir
from raiwatch.core.batch import BatchResult
from raiwatch.core.codec import Rejected
from raiwatch.core.config import Config
from raiwatch.core.errors import RaiwatchError
from raiwatch.core.records import Incident
from raiwatch.otelreplay import BATCH as OTLP_BATCH
from raiwatch.otelreplay import OtlpReplay
from raiwatch.pipeline import Pipeline
from raiwatch.timedfeed import TimedFeed
from raiwatch.wiring import build_pipeline, settle_collector
from storage.incidents import IncidentEventRow, IncidentRow, make_engine
from storage.incidents import migrate as migrate_incidents
from storage.incidents.db import WRITE
from storage.incidents.models import SilenceRow
from storage.incidents.store import ENGINE_ACTOR

BATCH = 20_000
OUTPUTS = ("clickhouse", "incidents.jsonl", "rejected.jsonl")  # what --force replaces (and incidents.db's
# incidents that only the rule engine touched)


class ReplayInterrupted(RaiwatchError):
    """Ctrl-C stopped a replay; the message says how far it got and that its output is incomplete."""


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
    kept: str = ""  # what --force kept of an earlier replay in OUT

    @property
    def events_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


def check_inputs(
    events_path: str | Path, feedback_path: str | Path | None = None, otlp_logs: str | Path | None = None
) -> None:
    """A one-line error unless each given input is a file."""
    for path, what in ((events_path, "telemetry events"), (feedback_path, "feedback events"),
                       (otlp_logs, "OTLP/JSON log messages")):  # fmt: skip
        if path is None:
            continue
        if Path(path).is_dir():
            raise RaiwatchError(f"{path} is a folder; give a JSON-lines file of {what}")
        if not Path(path).is_file():
            raise RaiwatchError(f"{path}: no such file")


def _foreign(out: Path) -> bool:
    """Whether ``out`` holds anything (beside a lock) that no replay made."""
    if datadir.replay_mark(out) is not None:
        return False
    return out.is_dir() and any(p.name != datadir.LOCK_FILE for p in out.iterdir())


def _refuse_foreign(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RaiwatchError(f"--out {out} is a file; give a folder (it is created if missing)")
    if _foreign(out):
        raise RaiwatchError(
            f"--out {out} is not empty and was not made by raiwatch replay: choose a new or empty folder "
            "(nothing in it was touched)"
        )


def prepare_out(out: Path, force: bool = False) -> str:
    """Make ``out`` ready for a new run, under its lock; return what was kept of an earlier replay.

    A folder an earlier replay made is replaced only with ``force``, and then only what a replay
    makes (``OUTPUTS``, and the incidents only the rule engine touched): on-call's work in the
    incident store and anything else in the folder stay. A replay that stopped before its first
    batch (bad rules or settings) replayed nothing: its folder is replaced as if given ``force``.
    """
    _refuse_foreign(out)
    kept = ""
    mark = datadir.replay_mark(out)
    if mark is not None:
        if not force and (mark.complete or mark.lines):  # one that stopped at its start made nothing
            raise RaiwatchError(
                f"--out {out} holds an earlier replay's output: add --force to replace it (on-call's "
                "acknowledgements, feedback and silences there are kept, and any file of yours), "
                "or choose another --out"
            )
        for name in OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        kept = _keep_on_calls_work(out / "incidents.db")
    return kept


def _keep_on_calls_work(db: Path) -> str:
    """In an earlier replay's incident store, delete the incidents only the rule engine touched
    (this replay opens them again, with the same ids); keep those on-call acknowledged, resolved
    or judged, with their history, and every silence. Says what it kept."""
    if not db.is_file():
        return ""
    url = f"sqlite:///{db}"
    migrate_incidents(url)
    engine = make_engine(url)
    try:
        with engine.execution_options(**{WRITE: True}).begin() as conn:
            on_call = select(IncidentEventRow.incident_id).where(IncidentEventRow.actor != ENGINE_ACTOR)
            conn.execute(delete(IncidentRow).where(IncidentRow.incident_id.not_in(on_call)))
            incidents = conn.scalar(select(func.count()).select_from(IncidentRow)) or 0
            silences = conn.scalar(select(func.count()).select_from(SilenceRow)) or 0
    except DBAPIError as e:
        raise RaiwatchError(f"{db}: cannot read the earlier replay's incident store ({e.orig})") from None
    finally:
        engine.dispose()
    if not incidents and not silences:
        return ""
    return (
        f"kept from the earlier replay: {incidents} incident(s) on-call acknowledged, resolved or "
        f"judged, {silences} silence(s)"
    )


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
    force: bool = False,
    otlp: bool = False,
    otlp_logs: str | Path | None = None,
) -> ReplaySummary:
    """Run the pipeline over ``events_path`` into ``out``, holding ``out`` meanwhile; ``progress``
    is called with bytes read so far. ``force``: replace an earlier replay's output (``prepare_out``).
    ``otlp``: the file holds OTLP/JSON span messages, ``otlp_logs`` their evaluations
    (``raiwatch.otelreplay``).

    ``out``'s mark says ``running`` until the replay is complete: a replay stopped early (Ctrl-C:
    ``ReplayInterrupted``, an error, a kill) leaves a store marked incomplete."""
    events_path, out = Path(events_path), Path(out).resolve()
    check_inputs(events_path, feedback_path, otlp_logs)
    _refuse_foreign(out)  # before the lock: its file is not left in someone else's folder
    with datadir.lock(out, "raiwatch replay"):
        kept = prepare_out(out, force)
        mark = datadir.ReplayMark(state="running", events=str(events_path.resolve()))
        datadir.write_replay_mark(out, mark)
        try:
            summary = _run(
                events_path, cfg, out, rules_dir, feedback_path, progress, mark, kept, otlp, otlp_logs
            )
        except KeyboardInterrupt:
            mark.state = "interrupted"
            datadir.write_replay_mark(out, mark)
            raise ReplayInterrupted(
                f"replay interrupted after {mark.lines:,} lines ({mark.share:.0%} of {events_path.name}): "
                f"the store in {out} is incomplete and marked so (rules backtest, rules suggest and "
                "report refuse it without --partial); replay again with --force for a whole one"
            ) from None
        mark.state = "complete"
        datadir.write_replay_mark(out, mark)
    return summary


def _run(
    events_path: Path,
    cfg: Config,
    out: Path,
    rules_dir: str | Path | None,
    feedback_path: str | Path | None,
    progress: Callable[[int], None] | None,
    mark: datadir.ReplayMark,
    kept: str,
    otlp: bool = False,
    otlp_logs: str | Path | None = None,
) -> ReplaySummary:
    cfg = _replay_config(cfg, out)
    pipe = build_pipeline(cfg, rules_dir)
    settle_collector()
    summary = ReplaySummary(out=out, kept=kept)
    incidents: dict[str, Incident] = {}
    size, read = max(events_path.stat().st_size, 1), 0
    t0 = time.perf_counter()
    with (out / "rejected.jsonl").open("wb") as rej:
        labels = _Labels(Path(feedback_path), pipe, summary, rej) if feedback_path else None
        spans = None
        if otlp:
            spans = OtlpReplay(cfg, pipe, Path(otlp_logs) if otlp_logs else None, _numbered,
                               lambda r: _collect_evaluations(r, summary, incidents, rej))  # fmt: skip
        for first, lines in read_chunks(events_path, OTLP_BATCH if otlp else BATCH):
            numbers = range(first, first + len(lines))
            n_bytes = sum(map(len, lines)) + len(lines)
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
            read += n_bytes
            mark.lines, mark.share = summary.lines, min(read / size, 1.0)
            datadir.write_replay_mark(out, mark)  # how far it got, should it stop here
            if progress:
                progress(n_bytes)
        if labels:
            labels.feed_until(math.inf)
        if spans is not None:
            spans.feed(math.inf)
        _collect(pipe.close_all(), summary, incidents, rej)
        if kept:  # the incidents on-call worked on, as the store has them, reach the ClickHouse copy
            pipe.mirror_now()
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
        self.feed_until = TimedFeed(_numbered(path), _stamp, self._send, BATCH).feed_until

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
