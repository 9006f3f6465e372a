"""A data folder's writer and maker: the lock one process holds on it, and a replay's mark.

One process writes a data folder at a time (a worker, a replay, ``db migrate``, a command that
opens its embedded ClickHouse store): it holds an ``flock`` on ``DIR/.raiwatch.lock``, which the
kernel releases when the process ends however it ends, so a lock never outlives its holder. The
file's text names the holder (``pid 1234 (raiwatch replay)``) for the message a second process
gets; it is read only while the lock is held, so a dead holder's text is never reported.

``raiwatch replay`` marks its ``--out`` folder with ``DIR/.raiwatch-replay``: that a replay made
it, and how far the replay got. A folder without the mark was not made by a replay.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from raiwatch.core.config import Config
from raiwatch.core.errors import RaiwatchError

LOCK_FILE = ".raiwatch.lock"
REPLAY_MARK = ".raiwatch-replay"
WORKER = "raiwatch run"  # how a worker names itself as a holder


class DataDirBusy(RaiwatchError):
    """Another process holds the data folder."""

    def __init__(self, path: Path, holder: str):
        self.path, self.holder = path, holder
        super().__init__(
            f"{path} is in use by {holder}: one process writes a data folder at a time; "
            "wait until it ends, or choose another folder"
        )

    @property
    def by_worker(self) -> bool:
        return self.holder.endswith(f"({WORKER})")


@dataclass
class _Held:
    fd: int
    count: int


_held: dict[Path, _Held] = {}
_mutex = threading.Lock()


def _acquire(path: Path, what: str) -> Path:
    path = path.resolve()
    with _mutex:
        held = _held.get(path)
        if held is not None:  # this process holds it already (a lock is per process, not per caller)
            held.count += 1
            return path
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RaiwatchError(f"cannot hold the data folder {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip()
            os.close(fd)
            raise DataDirBusy(path, holder or "another process") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({what})\n".encode(), 0)
        _held[path] = _Held(fd, 1)
        return path


def _release(path: Path) -> None:
    with _mutex:
        held = _held[path]
        held.count -= 1
        if held.count == 0:
            os.ftruncate(held.fd, 0)
            os.close(held.fd)  # closing the last descriptor releases the flock
            del _held[path]


@contextlib.contextmanager
def lock(path: Path, what: str) -> Iterator[Path]:
    """Hold the folder ``path`` (created if missing) while the block runs; ``DataDirBusy``
    naming the holder when another process has it. ``what`` names this process for its messages."""
    held = _acquire(path, what)
    try:
        yield held
    finally:
        _release(held)


def hold(path: Path, what: str) -> None:
    """Hold the folder ``path`` until this process ends (``DataDirBusy`` if another holds it)."""
    _acquire(path, what)


def holds_embedded(cfg: Config) -> bool:
    """Whether these settings keep ClickHouse embedded (chdb), whose data folder one process owns."""
    return cfg.clickhouse_dsn.startswith("chdb:")


def hold_for(cfg: Config, what: str) -> None:
    """Hold the settings' data folder for this process's life when they keep ClickHouse embedded
    (a worker, ``db migrate``); with a ClickHouse server, workers share it and nothing is held."""
    if holds_embedded(cfg):
        hold(cfg.data_path, what)


class ReplayMark(msgspec.Struct, kw_only=True):
    """What ``DIR/.raiwatch-replay`` says: a replay made DIR, and how far it got."""

    made_by: str = "raiwatch replay"
    state: Literal["running", "interrupted", "complete"] = "complete"
    events: str = ""  # the events file
    lines: int = 0  # lines replayed so far
    share: float = 0.0  # of the events file's bytes read

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    def describe(self) -> str:
        done = f"{self.lines:,} lines ({self.share:.0%} of {Path(self.events).name or 'its events'})"
        if self.state == "interrupted":
            return f"a replay interrupted after {done}"
        return f"a replay that did not finish (stopped or failed after {done})"


def replay_mark(path: Path) -> ReplayMark | None:
    """The mark of the replay that made ``path``; None when no replay made it. A mark written
    before marks carried their state reads as complete."""
    try:
        data = (path / REPLAY_MARK).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(data, type=ReplayMark)
    except msgspec.DecodeError:
        return ReplayMark()


def write_replay_mark(path: Path, mark: ReplayMark) -> None:
    """Replace the mark whole (a reader never sees half of one, even if this process dies)."""
    tmp = path / f"{REPLAY_MARK}.tmp"
    tmp.write_bytes(msgspec.json.encode(mark) + b"\n")
    os.replace(tmp, path / REPLAY_MARK)
