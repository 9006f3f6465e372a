"""The streaming worker's loop: Kafka batches into a batch handler, bad input to the dead-letter topic.

aiokafka directly (``getmany``), with offsets committed by hand: an offset moves only past
messages that are durable and whose windows have closed (``streams.offsets``). The handler (the
pipeline) runs on one worker thread, so the event loop keeps the group membership alive while it
works. What can stop monitoring is handled here, each in one place:

- **A slow or failing ClickHouse**: at most one batch waits behind the one being written; while
  it waits every partition is paused and the loop keeps polling (no records, membership kept),
  so memory stays bounded; ``raiwatch_input_paused`` says so, and it resumes by itself.
- **A broker outage**: aiokafka reconnects; nothing closes windows meanwhile, because a
  partition counts as idle only when a *fresh* fetch shows it caught up. Kafka counts as away
  (``/readyz`` 503) once neither a fetch answer nor a record came for ``DOWN_S`` past the fetch's
  own wait, not counting time it was not asking for data (paused, or busy on the pipeline).
- **Idle traffic**: a partition caught up (by fresh fetch answers) and without records for
  ``idle_close_s`` in a row stops holding the watermark; with all idle, event time follows the
  wall clock. An outage restarts that count: silence nobody could see is not idleness. The idle
  set is checked again before each batch: a partition whose records already wait in the client
  is not idle, so a backlog landing on idle partitions is not late for the first of them read.
- **Rebalances**: a revoked partition's released offsets are committed and its partial windows
  dropped (the next owner re-reads them); an assigned one continues from its checkpoint.
- **Crashes**: an unexpected error ends ``run`` with it, so the process exits non-zero and a
  supervisor sees it; SIGTERM ends it within seconds, committing what is done. Done means written:
  a window whose close raised stays open in the handler, and a failed write of a window's results
  (even one a tick closed, which no batch waits for) stops the worker before the next commit, so
  no offset of its events is committed, whatever raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from raiwatch.core import metrics
from raiwatch.core.batch import BatchHandler, BatchResult
from raiwatch.core.codec import Rejected
from raiwatch.core.config import Config
from raiwatch.core.otelmap import load_mapping
from raiwatch.core.otlp import OtlpLogs, OtlpSpans
from streams.dlq import DeadLetters, Stopping
from streams.offsets import OffsetTracker

log = logging.getLogger("raiwatch.worker")

DOWN_S = 1.0  # no fetch answer nor record for this long (past the fetch's own wait): say Kafka is away
TICK_S = 0.5  # how often idle partitions are looked for
# how long the worker waits on a Kafka call a broker gone would hold without end: an offset commit,
# a client's start being cancelled, the dead-letter producer's stop
KAFKA_WAIT_S = 5.0


class _Listener(ConsumerRebalanceListener):
    def __init__(self, worker: StreamWorker):
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker._assigned(assigned)


class StreamWorker:
    """Consumes ``kafka.telemetry_topic`` into ``handler`` until ``stop()``; ``run`` raises what killed it.

    ``on_result`` sees the result of every batch and of every tick (idle partitions looked for)."""

    def __init__(
        self,
        cfg: Config,
        handler: BatchHandler,
        on_result: Callable[[BatchResult], None] | None = None,
        stop_event: threading.Event | None = None,
        writable: Callable[[], bool] = lambda: True,
    ):
        self.cfg = cfg
        self.writable = writable
        self.handler = handler
        self.on_result = on_result
        self.stop_event = stop_event or threading.Event()  # also stops the writer's retries
        self.tracker = OffsetTracker()
        self.paused = False
        self.broker_down = False
        self._heard_at = time.monotonic()  # the last sign of Kafka, or the last time none was due
        self._busy_since: float | None = None  # when the call on the pipeline thread began
        self._down_s = DOWN_S + cfg.kafka.fetch_max_wait_ms / 1000
        self._told_idle: set[int] = set()  # the idle partitions the handler was last given
        self._all_idle = False
        self.assigned: set[TopicPartition] = set()
        self.last_poll = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raiwatch-pipeline")
        self._lock = asyncio.Lock()
        self._fatal: BaseException | None = None
        self._stop = asyncio.Event()
        self._quiet_since: dict[int, float] = {}  # partition -> since when caught up without a record
        # an older fetch answer says nothing of whether a partition is caught up
        self._fresh_ms = 1000 * min(1.0, cfg.windows.idle_close_s / 4)
        self._last_commit = 0.0
        self._committed: dict[TopicPartition, int] = {}
        self._stash: dict[TopicPartition, list[Any]] = {}
        self._closing: dict[int, asyncio.Future] = {}  # window -> the write of its results
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: DeadLetters | None = None
        self.inputs = inputs(cfg, handler)
        # topics whose partitions are event-time sources (partition k of each is source k)
        self.event_topics = {t for t, _ in self.inputs if t != cfg.kafka.feedback_topic}

    def stop(self) -> None:
        """Ask the loop to finish: stop taking input, commit what is done, leave the group."""
        self.stop_event.set()
        self._stop.set()

    async def run(self) -> None:
        k = self.cfg.kafka
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=k.bootstrap_servers,
            group_id=k.group_id,
            client_id=f"raiwatch-{k.group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # partition k of the telemetry and the feedback topics (created with as many partitions)
            # goes to one worker: labels keyed like their inferences reach the worker holding them
            partition_assignment_strategy=(RangePartitionAssignor,),
            fetch_max_wait_ms=k.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=int(k.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, k.session_timeout_s / 3) * 1000),
            max_poll_interval_ms=300_000,
            request_timeout_ms=max(40_000, int(k.session_timeout_s * 1000) + 5000),
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=k.bootstrap_servers,
            client_id=f"raiwatch-dlq-{k.group_id}",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=k.dlq_max_bytes + 256 * 1024,
        )
        self._dlq = DeadLetters(producer, k.dlq_topic, k.dlq_max_bytes, self.stop_event.is_set)
        watch = None
        try:
            # a stop while the clients start (a broker that went away meanwhile) must not wait on them
            started = await self._until_stopped(producer.start())
            if started:
                consumer.subscribe([t for t, _ in self.inputs], listener=_Listener(self))
                started = await self._until_stopped(consumer.start())
            if started:
                watch = asyncio.ensure_future(self._watch())
                await self._loop(consumer)
        finally:
            if watch is not None:
                watch.cancel()
            try:
                await self._shutdown(consumer)
            finally:
                await _quietly(producer.stop(), KAFKA_WAIT_S)
                self._pool.shutdown(wait=False, cancel_futures=True)
        if self._fatal is not None:
            raise self._fatal

    async def _until_stopped(self, aw: Awaitable[object]) -> bool:
        """Await ``aw`` unless ``stop()`` comes first (it is then cancelled); whether it finished.
        aiokafka's ``start()`` waits for a broker that answered once without end."""
        task = asyncio.ensure_future(aw)
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if task.done():
            task.result()  # raises what it raised
            return True
        task.cancel()
        await asyncio.wait({task}, timeout=KAFKA_WAIT_S)
        return False

    # -- the loop -----------------------------------------------------------------------------

    async def _loop(self, consumer: AIOKafkaConsumer) -> None:
        k = self.cfg.kafka
        next_tick = 0.0
        while not self._stop.is_set() and self._fatal is None:
            if self._stash:
                records, self._stash = self._stash, {}
            else:
                records = await consumer.getmany(
                    timeout_ms=int(k.batch_within_s * 1000), max_records=k.batch_size
                )
            self.last_poll = time.monotonic()
            for tp, batch in records.items():
                high = consumer.highwater(tp)
                if high is not None and batch:
                    metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(high - batch[-1].offset - 1)
            if records:
                self._heard_at = self.last_poll
                async with self._lock:
                    try:
                        await self._untell_idle(consumer, records)
                        await self._process(records)
                    except Stopping:
                        break
                    except Exception as e:
                        if not self.stop_event.is_set():
                            raise
                        log.warning("stopped during a batch (%s); it will be read again", e)
                        break
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + TICK_S
                async with self._lock:
                    idle = await self._idle_partitions(consumer)
                    if idle is not None:
                        await self._tick(idle)
            await self._commit(consumer, force=False)
            self._set_ready()

    async def _tick(self, idle: set[int]) -> None:
        """Tell the handler which partitions are idle now and let it close what that allows."""
        topic = self.cfg.kafka.telemetry_topic
        all_idle = bool(idle) and idle >= {tp.partition for tp in self.assigned if tp.topic == topic}
        if all_idle and not self._all_idle:
            log.info(
                "all partitions idle (caught up, no record for %g s): windows close by the wall clock, "
                "up to the newest event's window",
                self.cfg.windows.idle_close_s,
            )
        self._all_idle = all_idle
        self._told_idle = set(idle)
        result = await self._blocking(self.handler.tick, idle, time.time())
        self._track(result, [])
        self._report(result)

    async def _untell_idle(
        self, consumer: AIOKafkaConsumer, records: dict[TopicPartition, list[Any]]
    ) -> None:
        """Before a batch: a partition the handler takes as idle that has records now (in this batch
        or waiting in the client) holds the watermark again before any of them is processed."""
        topic = self.cfg.kafka.telemetry_topic
        for tp in records:
            if tp.topic == topic:
                self._quiet_since.pop(tp.partition, None)
        if not self._told_idle:
            return
        idle = await self._idle_partitions(consumer)
        if idle is not None and self._told_idle - idle:
            await self._tick(idle)

    async def _process(self, records: dict[TopicPartition, list[Any]]) -> None:
        """Each topic's records to its handler method (``inputs``; sources: partitions)."""
        for topic, handle in self.inputs:
            part = {tp: batch for tp, batch in records.items() if tp.topic == topic}
            if part:
                await self._handle(part, handle)

    async def _handle(
        self, records: dict[TopicPartition, list[Any]], handle: Callable[..., BatchResult]
    ) -> None:
        msgs = [m for batch in records.values() for m in batch]
        for tp in records:
            self._quiet_since.pop(tp.partition, None)

        def origin(i: int, msgs: list = msgs) -> str:
            m = msgs[i]
            return f"{m.topic}/{m.partition}@{m.offset}"

        result: BatchResult = await self._blocking(
            handle, [m.value or b"" for m in msgs], [m.partition for m in msgs], origin
        )
        if result.rejected:
            await self._dlq.send(result.rejected, [msgs[r.index].key for r in result.rejected])
        settled = self._track(result, msgs)
        start = 0
        for tp, batch in records.items():
            end = start + len(batch)
            self.tracker.hold(tp, [m.offset for m in batch], result.windows[start:end], settled)
            start = end
        self._report(result)

    def _track(self, result: BatchResult, msgs: list) -> asyncio.Future | None:
        """What a result's input waits for: its writes, and refused rows in the dead-letter topic.
        The windows it closed count as open until then."""
        if result.durable is None:
            return None
        settled = asyncio.ensure_future(self._settle(result.durable, msgs))
        for w in result.closed:
            self._closing[w] = settled
        return settled

    def _not_done(self) -> set[int]:
        """Windows whose events may not be committed yet: open, or closed with results not yet written.
        Raises when a window's writes failed (its offsets then stay uncommitted: the worker stops)."""
        for w in [w for w, fut in self._closing.items() if fut.done()]:
            fut = self._closing[w]
            if not fut.cancelled() and isinstance(fut.exception(), Stopping):
                continue  # stopping with its dead letters unsent: it stays uncommitted
            fut.result()
            del self._closing[w]
        return self.handler.open_windows() | self._closing.keys()

    async def _settle(self, durable: Future, msgs: list) -> None:
        """Wait for a batch's writes; send any row ClickHouse refused to the dead-letter topic."""
        refused: list[Rejected] = await asyncio.wrap_future(durable)
        if refused:
            await self._dlq.send(refused, [msgs[r.index].key if r.index >= 0 else None for r in refused])

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the pipeline thread; while it works, keep polling with every partition paused."""
        fut = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        consumer = self._consumer
        started = self._busy_since = time.monotonic()
        while True:
            done, _ = await asyncio.wait({fut}, timeout=1.0)
            if done:
                # time the loop spent on the pipeline is not Kafka's silence: with every partition's
                # records waiting in the client, no fetch was due meanwhile
                now = time.monotonic()
                self._heard_at = min(now, self._heard_at + (now - started))
                self._busy_since = None
                if self.paused:
                    self._pause(False)
                return fut.result()
            self._pause(True)  # every time: a partition assigned meanwhile is paused too
            try:
                got = await consumer.getmany(timeout_ms=200)  # paused: nothing comes, the member stays alive
            except KafkaError:
                got = {}
            for tp, batch in got.items():  # should not happen; never drop what was read
                self._stash.setdefault(tp, []).extend(batch)
            self.last_poll = time.monotonic()

    def _pause(self, on: bool) -> None:
        consumer = self._consumer
        with contextlib.suppress(KafkaError):  # the assignment may be changing under a rebalance
            parts = consumer.assignment()
            if on:
                consumer.pause(*parts)
            else:
                consumer.resume(*parts)
        if on and not self.paused:
            log.info("input paused: the pipeline is waiting for its writes")
        self.paused = on
        metrics.PAUSED.set(1 if on else 0)
        self._set_ready()

    async def _idle_partitions(self, consumer: AIOKafkaConsumer) -> set[int] | None:
        """Assigned partitions that have been caught up, by fresh fetch answers and with no new
        record, for ``idle_close_s`` without a break; None if none are assigned.

        Any break restarts a partition's quiet time: a record, a stale fetch answer (the broker is
        away: silence then says nothing about the producers), or a fetch showing it behind.
        """
        parts = {tp for tp in consumer.assignment() if tp.topic in self.event_topics}
        if not parts:
            return None
        now, now_ms = time.monotonic(), time.time() * 1000
        busy = set()  # a source is idle only when its partition of every event topic is
        quiet = self.cfg.windows.idle_close_s
        idle = set()
        for tp in parts:
            p = tp.partition
            last_fetch = consumer.last_poll_timestamp(tp)
            high = consumer.highwater(tp)
            caught_up = False
            if last_fetch is not None and high is not None and now_ms - last_fetch <= self._fresh_ms:
                with contextlib.suppress(KafkaError, TimeoutError):  # position may wait on the broker
                    caught_up = await asyncio.wait_for(consumer.position(tp), 0.2) >= high
            if not caught_up:
                self._quiet_since.pop(p, None)
                busy.add(p)
                continue
            since = self._quiet_since.setdefault(p, now)
            if now - since >= quiet:
                idle.add(p)
        return idle - busy

    async def _watch(self) -> None:
        """Beside the loop (which an outage can hold inside a fetch): is Kafka answering, is the
        worker ready. Updates the log, the metrics and readiness every ``TICK_S``."""
        while not self._stop.is_set():
            await asyncio.sleep(TICK_S)
            consumer = self._consumer
            parts = (
                {tp for tp in consumer.assignment() if tp.topic in self.event_topics}
                if consumer is not None
                else set()
            )
            now = time.monotonic()
            if not parts or self.paused:  # no answer is due: nothing was asked for
                self._heard_at = now
            else:
                now_ms = time.time() * 1000
                stamps = {tp.partition: consumer.last_poll_timestamp(tp) for tp in parts}
                for p, t in stamps.items():
                    if t is None or now_ms - t > self._fresh_ms:  # silence nobody could see
                        self._quiet_since.pop(p, None)
                answered = max((t for t in stamps.values() if t is not None), default=None)
                if answered is not None:
                    self._heard_at = max(self._heard_at, now - max(0.0, now_ms - answered) / 1000)
            if self._busy_since is None:  # judged once the call on the pipeline thread is over
                self._broker_status(now - self._heard_at)
            self._set_ready()

    def _broker_status(self, silent_s: float) -> None:
        """Say once when fetches stop coming back (and once when they resume)."""
        if silent_s <= self._down_s:
            if self.broker_down:
                log.warning("Kafka answers again; windows close as its partitions catch up")
                self.broker_down = False
        elif not self.broker_down:
            log.warning(
                "no fetch answer from Kafka at %s for %.1f s: waiting (no window closes meanwhile)",
                self.cfg.kafka.bootstrap_servers, silent_s,
            )  # fmt: skip
            self.broker_down = True
        metrics.KAFKA_UP.set(0 if self.broker_down else 1)

    async def _commit(
        self, consumer: AIOKafkaConsumer, force: bool, only: set[TopicPartition] | None = None
    ) -> bool:
        """Commit what is done, if due (or ``force``); False when Kafka did not take offsets that
        moved. aiokafka waits for a group coordinator without end, so a commit waits at most
        ``KAFKA_WAIT_S``: with the broker gone, the loop still ticks and a stop still stops."""
        now = time.monotonic()
        if not force and now - self._last_commit < self.cfg.kafka.commit_interval_s:
            return True
        self._last_commit = now
        positions = self.tracker.committable(self._not_done())
        moved = {
            p: off
            for p, off in positions.items()
            if self._committed.get(p) != off and (only is None or p in only)
        }
        if not moved:
            return True
        try:
            await asyncio.wait_for(consumer.commit(moved), timeout=KAFKA_WAIT_S)
        except (KafkaError, TimeoutError) as e:  # the next commit carries it
            why = str(e) or f"no answer within {KAFKA_WAIT_S:g} s"
            log.warning("offset commit failed (%s); will retry", why)
            return False
        self._committed.update(moved)
        return True

    def _report(self, result: BatchResult) -> None:
        """Every batch's and tick's result to ``on_result`` (which decides what is worth a line)."""
        if self.on_result:
            self.on_result(result)

    @property
    def ready(self) -> bool:
        """Consuming and writing: partitions assigned, Kafka answering, input not paused, ClickHouse
        taking writes, the loop alive, not stopping."""
        return (
            bool(self.assigned)
            and not self.paused
            and not self.broker_down
            and self.writable()
            and not self.stop_event.is_set()
            and time.monotonic() - self.last_poll < 30
        )

    def _set_ready(self) -> None:
        metrics.READY.set(1 if self.ready else 0)

    # -- rebalances and shutdown ----------------------------------------------------------------

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        parts = {tp.partition for tp in revoked if tp.topic in self.event_topics}
        try:
            async with self._lock:
                await self._blocking(self.handler.flush)
                await self._await_settled()
                await self._commit(self._consumer, force=True, only=set(revoked))
                self.tracker.forget(revoked)
                for tp in revoked:
                    self._committed.pop(tp, None)
                await self._blocking(self.handler.revoke_sources, parts)
        except Exception as e:  # aiokafka would only log it: make the worker stop instead
            self._fail(e)
        for p in parts:
            self._quiet_since.pop(p, None)
        for tp in revoked:  # another worker reports it now
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
        self.assigned -= set(revoked)
        log.info("partitions revoked: %s", _names(revoked))

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        parts = {tp.partition for tp in assigned if tp.topic in self.event_topics}
        self.assigned |= set(assigned)
        self._heard_at = time.monotonic()  # the first fetch of a new assignment is not due yet
        try:
            async with self._lock:
                await self._blocking(self.handler.assign_sources, parts)
        except Exception as e:
            self._fail(e)
        log.info("partitions assigned: %s", _names(assigned))

    def _fail(self, e: BaseException) -> None:
        """Stop the worker on ``e``, unless it is only the echo of a stop already asked for."""
        if not self.stop_event.is_set():
            self._fatal = e
        self._stop.set()

    async def _await_settled(self) -> None:
        """Wait until every held batch's writes (and refused rows' dead letters) are done."""
        for fut in [*self.tracker.pending(), *self._closing.values()]:
            if isinstance(fut, asyncio.Future):
                await fut

    async def _shutdown(self, consumer: AIOKafkaConsumer) -> None:
        metrics.READY.set(0)
        if self._fatal is None:
            try:
                async with self._lock:
                    await self._blocking(self.handler.flush)
                    await self._await_settled()
                    if not await self._commit(consumer, force=True):
                        log.warning(
                            "stopped without committing offsets: Kafka did not take them; what was "
                            "read since the last commit will be read again and counted once"
                        )
            except Exception as e:  # stopping while ClickHouse is down: the rest is read again next time
                log.warning("stopped with writes not done (%s); their input will be read again", e)
        await _quietly(consumer.stop(), 10)


async def _quietly(aw: Awaitable[object], timeout: float) -> None:
    """Await a Kafka client's ``stop()`` for at most ``timeout`` s, dropping what a broker gone makes
    it raise (what it did not send or commit is read again). aiokafka's consumer then raises a
    ``CancelledError`` of its own; one aimed at this task still propagates."""
    try:
        await asyncio.wait_for(aw, timeout)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Exception:  # nothing left to do with a client that is going away
        pass


def inputs(cfg: Config, handler: BatchHandler) -> list[tuple[str, Callable[..., BatchResult]]]:
    """The topics a worker reads, each with the handler method for its messages, in the order a
    fetch is handled: OTLP evaluations first (they join the spans of the same fetch), telemetry
    (telemetry-event.v1 and/or OTLP spans, as ``otel`` says), labels last."""
    k, o = cfg.kafka, cfg.otel
    out: list[tuple[str, Callable[..., BatchResult]]] = []
    if o.logs_topic:
        out.append((o.logs_topic, functools.partial(handler.process_evaluations, codec=OtlpLogs(o.encoding))))
    if o.telemetry_topic or not o.spans_topic:
        out.append((k.telemetry_topic, handler.process))
    if o.spans_topic:
        spans = OtlpSpans(load_mapping(o.mapping), o.encoding)
        if o.encoding == "otlp_proto":
            how = "libotlpmap" if spans.native else "Python (libotlpmap is not built: `make install` with Go)"
            log.info("OTLP spans from %s are mapped by %s", o.spans_topic, how)
        out.append((o.spans_topic, functools.partial(handler.process, codec=spans)))
    out.append((k.feedback_topic, handler.process_feedback))
    return out


def _names(tps: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(tps))
