"""The delayed-label join: inferences wait for their ground truth, labels for their inference.

An inference that may get a label (it has a prediction or a favourable/unfavourable outcome) is
kept, per model and per window, as one row of a column *chunk*: the 64-bit BLAKE2b of its
event_id, its group combination, its predicted outcome and label, its score and whether a label
has joined it: 20 bytes of arrays per event, and 16 more in the per-model lookup index (see
``Pending``). A label is looked up by the hash of its event_id. What can happen to a label is
counted, never an error:

- ``joined``: its inference was waiting; the inference now counts as labelled.
- ``duplicate``: its inference was already labelled (the first label counts), or the same early
  label came twice.
- ``early``: no inference yet; the label waits up to ``early_s`` for it (at most ``max_early``).
- ``unmatched``: it waited ``early_s`` and no inference came (unknown, or expired before it).
An inference that waited ``retention_s`` without a label is counted ``expired``; when more than
``max_pending`` inferences wait, the oldest windows are dropped first and counted ``evicted``.

Durable without rewriting the state: a chunk is written once, when its window closes, to a ring
slot of its model (``model\\x1fe<slot>``); the labels a close joined are written as that close's
join log (``model\\x1fj<slot>``). A restore loads the chunks and replays the logs. The early
labels are one small record (``\\x1fearly``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np
from numpy.typing import NDArray

from monitors.base import STATE_SEP as SEP

EARLY_KEY = f"{SEP}early"
RESULTS = ("joined", "duplicate", "early", "unmatched", "expired", "evicted")
NO = -1  # unknown predicted outcome / label / group combination


def id_hash(event_id: str) -> int:
    """The 64-bit BLAKE2b of an event id, as the join knows it (stable across processes)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


def id_hashes(event_ids: Sequence[str]) -> list[int]:
    """``id_hash`` of each id, converted in one step.

    >>> id_hashes(["e1", "e2"]) == [id_hash("e1"), id_hash("e2")]
    True
    """
    blake2b = hashlib.blake2b
    digests = b"".join([blake2b(i.encode(), digest_size=8).digest() for i in event_ids])
    return np.frombuffer(digests, dtype="<u8").tolist()


@dataclass(slots=True)
class Chunk:
    """The inferences of one model and window waiting for labels, sorted by id hash."""

    window: int
    h: NDArray[np.uint64]
    gid: NDArray[np.int32]
    fav: NDArray[np.int8]  # predicted favourable: 1, 0, or NO
    lab: NDArray[np.int16]  # predicted label (index into the model's labels) or NO
    score: NDArray[np.float32]  # NaN when absent
    joined: NDArray[np.bool_] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.joined is None:
            self.joined = np.zeros(len(self.h), dtype=np.bool_)

    @classmethod
    def build(cls, window: int, rows: list[tuple[int, int, int, int, float]]) -> Chunk:
        h = np.fromiter((r[0] for r in rows), dtype=np.uint64, count=len(rows))
        order = np.argsort(h, kind="stable")
        cols = [
            np.array([r[i] for r in rows], dtype=t)[order]
            for i, t in ((1, np.int32), (2, np.int8), (3, np.int16), (4, np.float32))
        ]
        return cls(window, h[order], *cols)

    def find(self, hashes: NDArray[np.uint64]) -> NDArray[np.int64]:
        """Index of each hash in this chunk, or -1."""
        i = np.searchsorted(self.h, hashes)
        i[i >= len(self.h)] = 0
        return np.where(self.h[i] == hashes, i, -1) if len(self.h) else np.full(len(hashes), -1)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.h, self.gid, self.fav, self.lab, self.score, self.joined))


class _ChunkState(msgspec.Struct, array_like=True):
    window: int
    h: bytes
    gid: bytes
    fav: bytes
    lab: bytes
    score: bytes


def encode_chunk(c: Chunk) -> bytes:
    """A chunk as written when its window closes (labels joined later are in the join logs)."""
    return msgspec.msgpack.encode(
        _ChunkState(
            c.window, c.h.tobytes(), c.gid.tobytes(), c.fav.tobytes(), c.lab.tobytes(), c.score.tobytes()
        )
    )


def decode_chunk(b: bytes) -> Chunk:
    s = msgspec.msgpack.decode(b, type=_ChunkState)
    return Chunk(
        s.window,
        np.frombuffer(s.h, np.uint64).copy(),
        np.frombuffer(s.gid, np.int32).copy(),
        np.frombuffer(s.fav, np.int8).copy(),
        np.frombuffer(s.lab, np.int16).copy(),
        np.frombuffer(s.score, np.float32).copy(),
    )


class Label(msgspec.Struct, array_like=True):
    """A label waiting for its inference: hash, the window it arrived in, label, favourable."""

    h: int
    window: int
    label: str | None
    favorable: bool | None


class JoinLog(msgspec.Struct, array_like=True):
    """The labels one close joined: ``(event window, hash)`` each."""

    window: int
    joined: list[tuple[int, int]]


class Pending:
    """Every model's chunks, oldest first, with the count of inferences they hold.

    Lookups go through a per-model index (every chunk's hashes merged and sorted, with each row's
    window and position), rebuilt once ``seal_every`` chunks were added since the last build, so
    a lookup is one binary search per model plus one per chunk newer than its index: a day of
    windows costs a few dozen searches, not 1,440 per model. The index costs 16 bytes a row.
    """

    def __init__(self, seal_every: int = 60) -> None:
        self.by_model: dict[str, dict[int, Chunk]] = {}
        self.size = 0  # inferences held
        self.waiting: dict[str, int] = {}  # per model, of them not labelled yet
        self.seal_every = seal_every
        # model -> (hashes sorted, window - base, row, base): 16 bytes a row
        self._index: dict[str, tuple[NDArray[np.uint64], NDArray[np.int32], NDArray[np.int32], int]] = {}
        self._indexed_upto: dict[str, int] = {}  # newest window in the model's index
        self._fresh: dict[str, int] = {}  # chunks added since the model's index was built

    def add(self, model: str, c: Chunk) -> None:
        chunks = self.by_model.setdefault(model, {})
        old = chunks.pop(c.window, None)
        self.size += len(c.h) - (len(old.h) if old else 0)
        unjoined = int((~c.joined).sum()) - (int((~old.joined).sum()) if old else 0)
        self.waiting[model] = self.waiting.get(model, 0) + unjoined
        chunks[c.window] = c
        if old is not None or (len(chunks) > 1 and next(reversed(chunks)) != c.window):
            self.by_model[model] = dict(sorted(chunks.items()))
            self._index.pop(model, None)  # out of order (a restore): rebuild from scratch
            self._indexed_upto.pop(model, None)
        self._fresh[model] = self._fresh.get(model, 0) + 1
        if self._fresh[model] >= self.seal_every:
            self._build(model)

    def _build(self, model: str) -> None:
        chunks = self.by_model.get(model) or {}
        self._fresh[model] = 0
        if not chunks:
            self._index.pop(model, None)
            self._indexed_upto.pop(model, None)
            return
        base = next(iter(chunks))
        h = np.concatenate([c.h for c in chunks.values()])
        win = np.concatenate([np.full(len(c.h), c.window - base, dtype=np.int32) for c in chunks.values()])
        row = np.concatenate([np.arange(len(c.h), dtype=np.int32) for c in chunks.values()])
        order = np.argsort(h, kind="stable")
        self._index[model] = (h[order], win[order], row[order], base)
        self._indexed_upto[model] = next(reversed(chunks))

    def lookup(self, hashes: NDArray[np.uint64]) -> list[tuple[int, str, Chunk, int]]:
        """``(j, model, chunk, row)`` for each of ``hashes`` held (the first place found)."""
        out: list[tuple[int, str, Chunk, int]] = []
        found = np.zeros(len(hashes), dtype=np.bool_)
        for model, chunks in self.by_model.items():
            idx = self._index.get(model)
            upto = self._indexed_upto.get(model, -1)
            if idx is not None:
                h, win, row, base = idx
                i = np.searchsorted(h, hashes)
                i[i >= len(h)] = 0
                for j in np.flatnonzero((h[i] == hashes) & ~found):
                    c = chunks.get(base + int(win[i[j]]))
                    if c is not None:  # None: the window expired since the index was built
                        found[j] = True
                        out.append((int(j), model, c, int(row[i[j]])))
            for w in reversed(chunks):
                if w <= upto:
                    break
                c = chunks[w]
                ix = c.find(hashes)
                for j in np.flatnonzero((ix >= 0) & ~found):
                    found[j] = True
                    out.append((int(j), model, c, int(ix[j])))
        return out

    def drop(self, model: str, window: int) -> Chunk:
        c = self.by_model[model].pop(window)
        self.size -= len(c.h)
        self.waiting[model] -= int((~c.joined).sum())
        return c

    def mark(self, model: str, c: Chunk, i: int) -> None:
        """The inference at row ``i`` of ``c`` got its label."""
        c.joined[i] = True
        self.waiting[model] -= 1

    def forget(self, model: str) -> None:
        for w in list(self.by_model.get(model, {})):
            self.drop(model, w)
        for d in (self.by_model, self.waiting, self._index, self._indexed_upto, self._fresh):
            d.pop(model, None)

    def chunks(self) -> Iterator[tuple[str, Chunk]]:
        for model, chunks in self.by_model.items():
            for c in chunks.values():
                yield model, c

    def oldest(self) -> tuple[str, int] | None:
        best = None
        for model, chunks in self.by_model.items():
            if chunks:
                w = next(iter(chunks))
                if best is None or w < best[1]:
                    best = (model, w)
        return best

    def nbytes(self) -> int:
        """Bytes of the chunks' arrays and of the lookup indexes."""
        index = sum(a.nbytes for h, win, row, _ in self._index.values() for a in (h, win, row))
        return sum(c.nbytes for _, c in self.chunks()) + index
