"""What runs inside each task process: open the node, loop over messages, close, exit.

A task receives a message from its inbox, calls its node, adds the output to the message,
drops the outputs it was the last reader of (freeing their slots) and sends the message on.
STOP travels the chain like data; the abort flag, or the loss of the flow's owner process,
ends the loop at the next check, which every wait reaches within ``poll_interval``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from videoflow.config import DROP_OLDEST, FlowConfig
from videoflow.engine.bootstrap import copy_mismatch, set_process_title
from videoflow.engine.control import (
    ABORT,
    BLOCKED_NS,
    BUSY_NS,
    CPU_NS,
    DROPPED,
    GO,
    IN,
    OFFLINE_NS,
    OUT,
    P_BETWEEN,
    P_CLOSE,
    P_CONSUME,
    P_ENDED,
    P_FINISH,
    P_LOAD,
    P_NEXT,
    P_OPEN,
    P_PROCESS,
    P_READY,
    PHASE_SPAN,
    PRODUCED_NS,
    RECONNECTS,
    SKIPPED,
    STATE,
    STOP,
    WAIT_NS,
    JoinBlock,
    record_age,
    state_phase,
)
from videoflow.engine.logs import EventSender, forward_to_owner
from videoflow.engine.plan import CONSUMER, MERGE, PRODUCER, Link, Stage
from videoflow.engine.profiling import run_profiled
from videoflow.engine.skipping import make_skipper
from videoflow.engine.slots import MessageSlots
from videoflow.transport import message
from videoflow.transport.codec import Codec
from videoflow.transport.doorbell import DoorbellSpec
from videoflow.transport.message import DATA, STOP_FLOW, Message, message_refs
from videoflow.transport.names import pool_family, sweep_prefix
from videoflow.transport.queue import ControlQueue
from videoflow.transport.shm import PoolRegistry, SlotAllocator, SlotRef

_now = time.perf_counter_ns
_ENDED = object()  # what _produce makes of a producer's StopIteration
CPU_EVERY_NS = 50_000_000  # how often a task publishes its CPU time (a syscall, ~0.6 us)


class Aborted(Exception):
    """The flow is being torn down: leave the loop without forwarding anything."""


class StopRequested(BaseException):
    """Raised inside a producer's ``next()`` when the flow is asked to stop while it waits
    there (``flow.stop()``, Ctrl-C): the value it was making is dropped and the flow ends as if
    the producer had raised StopIteration. A BaseException, like KeyboardInterrupt, so that a
    node's ``except Exception`` does not swallow it."""


STOP_SIGNAL = signal.SIGUSR1  # what the owner sends a producer blocked in next() on stop()
ORPHAN_POLL = 0.25  # seconds between two looks of a task's owner watch (Task.watch_owner)
MAX_INDEX = 1 << 58  # message indexes published in a STATE counter (int64) stay below this


def _heap_array(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


class TaskContext:
    """What a node sees of its task (``Node.bind``): ``allocate`` takes a slot of the task's
    pool, owned by the task's MessageSlots (a task that sends nothing on allocates on the
    heap); ``meta`` is the metadata of the message in hand, which the task sets before each
    call (one attribute store per message).

    Beyond the NodeContext protocol, for live sources (the stream and camera readers, which
    use them when their context has them): ``stopping()`` says whether the flow is ending, so
    that a wait for a lost source gives way to a stop; ``reconnected(offline_s)`` counts a
    reconnect in the task's counter row. Called from the task's main thread only (the row has
    a single writer)."""

    __slots__ = ("allocate", "control", "meta", "row")

    def __init__(self, slots: MessageSlots, control: Any = None, row: int = 0) -> None:
        self.allocate = slots.allocate if slots.allocator is not None else _heap_array
        self.meta: dict[str, Any] = {}
        self.control, self.row = control, row

    def stopping(self) -> bool:
        return self.control is not None and bool(self.control[STOP] or self.control[ABORT])

    def reconnected(self, offline_s: float) -> None:
        if self.control is not None:
            self.control[self.row + RECONNECTS] += 1
            self.control[self.row + OFFLINE_NS] += int(offline_s * 1e9)


class NodeParcel:
    """A node pickled once by the owner and unpickled once by its task.

    The bytes travel inside the task's start arguments (the stage in them carries no node),
    and ``take()`` lets go of them, so that once the node is loaded a task holds one copy of
    its state, not three (the argument's node, the bytes, the node made from the bytes)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | None) -> None:
        self.data = data

    def take(self) -> bytes | None:
        data, self.data = self.data, None
        return data


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything a task process needs, sent to it at start."""

    stage: Stage
    worker: int
    node: NodeParcel
    realtime: bool
    config: FlowConfig
    pool_prefix: str
    inbox_queue: str | None
    outbox_queue: str | None
    row: int  # start of this task's counter row in the control block
    inbox_window_counter: int  # control index the merge advances (-1: not a merge)
    outbox_window_counter: int  # control index the numbering sender waits on (-1: none)
    gpu: str | None = None
    cpu_fallback: bool = False
    owner_pid: int = 0  # the process that runs the flow (0: watch the parent only)
    log_levels: tuple[tuple[str, int], ...] = ()  # the owner's logger levels (logs.level_snapshot)
    environ: dict[str, str] = dataclasses.field(default_factory=dict)
    opencv_threads: int | None = None  # cv2.setNumThreads for this task (None: leave it)
    # Joins (engine/join_task.py): a JOIN's inboxes and block in the control block; the
    # doorbell a JOIN sleeps on, or that the tail of a segment feeding one rings.
    inbox_queues: tuple[str, ...] = ()
    doorbell: DoorbellSpec | None = None
    join_block: JoinBlock | None = None  # a JOIN's block of the control block
    owner_copy: tuple[str, str] = ("", "")  # owner's bootstrap.package_copy(); "": no check


def limit_opencv_threads(threads: int) -> None:
    """Give OpenCV ``threads`` threads in this process: now if cv2 is loaded (the forkserver
    preloads it), and through OPENCV_FOR_THREADS_NUM if a node imports it later."""
    os.environ["OPENCV_FOR_THREADS_NUM"] = str(threads)
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(threads)


class Lifeline:
    """Raises Aborted once the flow is aborted or its owner process is gone.

    The owner is watched through a pidfd (readable once it has exited, even before it is
    reaped), not through the parent pid alone: a forkserver task's parent is the forkserver,
    which outlives the owner as long as any task holds its "alive" pipe, so a task waiting
    for its parent to change would wait forever.
    """

    def __init__(self, control: Any, owner_pid: int = 0) -> None:
        self.control = control
        self.ppid = os.getppid()
        self.owner = owner_pid
        self.pidfd = -1
        self.next_look = 0.0
        if owner_pid:
            # Without pidfd (old kernel) or with the owner already gone, os.kill decides.
            with contextlib.suppress(AttributeError, OSError):
                self.pidfd = os.pidfd_open(owner_pid)

    def check(self) -> None:
        if self.control[ABORT]:
            raise Aborted
        now = time.monotonic()
        if now >= self.next_look:  # a few system calls: not on every message
            self.next_look = now + 0.02
            if self.orphaned:
                raise Aborted

    @property
    def orphaned(self) -> bool:
        if os.getppid() != self.ppid:
            return True
        if self.pidfd >= 0:
            return bool(select.select([self.pidfd], [], [], 0)[0])
        if self.owner:
            try:
                os.kill(self.owner, 0)
            except ProcessLookupError:
                return True
            except OSError:
                pass
        return False


def read_message(raw: bytes, registry: PoolRegistry) -> Message:
    """Decode a control message; one that outgrew its queue comes out of its blob slot,
    which is then given back."""
    msg = message.loads(raw)
    if message.kind(msg) == message.BLOB:
        ref, nbytes = message.blob_fields(msg)
        msg = message.loads(registry.view(ref, 0, nbytes))
        registry.release(ref)
    return msg


def release_queued(queue: ControlQueue, registry: PoolRegistry) -> int:
    """Take every message left in ``queue`` and give back its slots; returns how many.

    The owner calls it once every task has ended (an abort leaves messages in the queues):
    with nobody left to receive them, this is the one place that can free their slots.
    """
    count = 0
    while (raw := queue.get(0)) is not None:
        release_message(read_message(raw, registry), registry)
        count += 1
    return count


def release_message(msg: Message, registry: PoolRegistry) -> None:
    """Give back the slots of a message taken out of a queue that will never be delivered."""
    if message.kind(msg) == DATA:
        for ref in message_refs(message.data_fields(msg)[2]):
            registry.release(ref)


class Inbox:
    """Receives messages; with several senders, hands them out in sequence order."""

    def __init__(
        self, queue: ControlQueue, link: Link, spec: TaskSpec, control: Any, life: Lifeline,
        registry: PoolRegistry,
    ) -> None:
        self.queue = queue
        self.senders = link.senders
        self.control = control
        self.counter = spec.inbox_window_counter
        self.life = life
        self.registry = registry
        self.poll = spec.config.poll_interval
        self.pending: dict[int, Message] = {}
        self.next_seq = 0
        self.stops = 0

    def _receive(self) -> Message:
        while True:
            raw = self.queue.get(self.poll)
            if raw is not None:
                return read_message(raw, self.registry)
            self.life.check()

    def backlog(self) -> int:
        """Messages waiting for this task: in its queue, and held back for ordering."""
        return len(self.queue) + len(self.pending)

    def get(self) -> Message:
        if self.senders == 1:
            return self._receive()
        while True:
            msg = self.pending.pop(self.next_seq, None)
            if msg is not None:
                self.next_seq += 1
                self.control[self.counter] = self.next_seq
                return msg
            if self.stops == self.senders:
                if self.pending:
                    raise RuntimeError(f"merge ended with sequence gaps before {min(self.pending)}")
                return message.STOP
            msg = self._receive()
            if message.kind(msg) == STOP_FLOW:
                self.stops += 1
            else:
                self.pending[message.seq(msg)] = msg


class Outbox:
    """Sends messages on. Batch mode waits for room; realtime mode drops when there is none:
    the oldest message still in the queue (the link's ``drop`` is "oldest": the receiver
    takes the freshest frame when it is free) or the new one ("newest").

    Into a multi-task node, messages are numbered here and at most ``window`` of them may be
    between this sender and the merge that restores their order. Only a single sender drops
    (several senders feed a merge, which must get every number), and the numbers stay gapless
    when it drops the oldest: see ``_replace_oldest``.
    """

    def __init__(
        self, queue: ControlQueue, link: Link, spec: TaskSpec, control: Any, life: Lifeline,
        allocator: SlotAllocator | None, row: int,
    ) -> None:
        self.queue = queue
        self.link = link
        self.numbered = link.receivers > 1
        self.keep_seq = link.senders > 1
        self.window = link.window
        self.counter = spec.outbox_window_counter
        self.control = control
        self.life = life
        self.allocator = allocator
        self.max_size = queue.max_message_size
        self.realtime = spec.realtime and not self.keep_seq
        self.drop_oldest = self.realtime and link.drop == DROP_OLDEST
        self.poll = spec.config.poll_interval
        self.row = row
        self.blocked_at = row + BLOCKED_NS
        self.next_seq = 0

    def _put_blocking(self, data: bytes) -> None:
        if self.queue.put(data, 0):
            return
        t0 = _now()
        while not self.queue.put(data, self.poll):
            self.life.check()
        self.control[self.blocked_at] += _now() - t0

    def _wait_window(self) -> bool:
        if self.next_seq - self.control[self.counter] < self.window:
            return True
        if self.realtime:
            return False
        t0 = _now()
        delay = 20e-6
        while self.next_seq - self.control[self.counter] >= self.window:
            self.life.check()
            time.sleep(delay)
            delay = min(delay * 2, 2e-3)
        self.control[self.blocked_at] += _now() - t0
        return True

    def _pack(self, msg: Message) -> tuple[bytes, SlotRef | None]:
        data = message.dumps(msg)
        if len(data) <= self.max_size:
            return data, None
        if self.allocator is None:
            raise RuntimeError("a message outgrew the control queue and this task has no pool")
        ref, nbytes = self.allocator.write(data)  # the message's; the receiver frees it
        return message.dumps(message.blob(ref, nbytes)), ref

    def _unsent(self, blob: SlotRef | None) -> None:
        """Give back the blob slot of a message that did not leave this task."""
        if blob is not None and self.allocator is not None:
            self.allocator.registry.release(blob)

    def send(self, seq: int, meta: dict[str, Any], values: dict[int, Any]) -> bool:
        """Send a data message; False when realtime mode dropped it (the caller frees it)."""
        if self.numbered:
            if not self._wait_window():
                return self.drop_oldest and self._replace_oldest(meta, values)
            seq = self.next_seq
        elif not self.keep_seq:
            seq = 0
        data, blob = self._pack(message.data(seq, meta, values))
        if self.realtime:
            if not self.queue.put(data, 0):
                if not self.drop_oldest or self.numbered:
                    self._unsent(blob)
                    return self.drop_oldest and self._replace_oldest(meta, values)
                self._push_out_oldest(data, blob)
        else:
            try:
                self._put_blocking(data)
            except BaseException:  # aborted while waiting
                self._unsent(blob)
                raise
        if self.numbered:
            self.next_seq += 1
        return True

    def _evicted(self, msg: Message) -> None:
        """A message this task sent, taken back out of the queue: give back its slots, and
        count it as dropped instead of sent (the task's row has this task as its only writer)."""
        assert self.allocator is not None  # a task that sends on has a pool
        release_message(msg, self.allocator.registry)
        self.control[self.row + OUT] -= 1
        self.control[self.row + DROPPED] += 1

    def _push_out_oldest(self, data: bytes, blob: SlotRef | None) -> None:
        """Put ``data`` into the full queue of a single receiver: take the oldest message out
        first. This task is the queue's only sender, so once one is out there is room as
        soon as the receiver has finished copying out a message it took meanwhile."""
        assert self.allocator is not None
        registry = self.allocator.registry
        try:
            raw = self.queue.get(0)
            if raw is not None:
                self._evicted(read_message(raw, registry))
            while not self.queue.put(data, self.poll):
                self.life.check()
        except BaseException:
            self._unsent(blob)
            raise

    def _replace_oldest(self, meta: dict[str, Any], values: dict[int, Any]) -> bool:
        """Send a message into K workers, dropping the oldest one still queued for them.

        Every message still queued is taken back. When they hold every number from the
        oldest's to the last one given out (no worker took one meanwhile), the oldest is
        dropped and the others and the new one go back in with the numbers from the oldest's
        on: the merge after the workers sees gapless numbers in frame order, and so never
        waits for a number nobody will send. Otherwise (a worker took one of them while they
        were taken back: renumbering could put a frame before an older one) they go back as
        they were and the new message is dropped, as it is when nothing was queued and the
        window is full. Returns False when the new message is dropped (the caller frees it).
        """
        assert self.allocator is not None
        registry = self.allocator.registry
        queued: list[Message] = []
        while (raw := self.queue.get(0)) is not None:
            queued.append(read_message(raw, registry))
        new = message.data(0, meta, values)
        if queued:
            first = message.seq(queued[0])
            ours = [message.seq(m) for m in queued] == list(range(first, self.next_seq))
            if ours:
                self._evicted(queued.pop(0))
                queued.append(new)
        elif self.next_seq - self.control[self.counter] < self.window:
            first, ours = self.next_seq, True  # the workers took them all: there is room
            queued.append(new)
        else:
            return False
        sent = 0
        try:
            for msg in queued:
                seq, m, v = message.data_fields(msg)
                data, blob = self._pack(message.data(first + sent if ours else seq, m, v))
                try:  # there is room once the workers finish copying out what they took
                    self._put_blocking(data)
                except BaseException:
                    self._unsent(blob)
                    raise
                sent += 1
        except BaseException:
            for msg in queued[sent:]:  # taken back and not sent again (the new one is the
                if msg is not new:  # caller's to give back)
                    release_message(msg, registry)
            raise
        if ours:
            self.next_seq = first + sent
        return ours

    def send_stop(self) -> None:
        data = message.dumps(message.STOP)
        for _ in range(self.link.receivers):
            self._put_blocking(data)


class Task:
    """One task: a node (or a merge) between an inbox and an outbox."""

    def __init__(self, spec: TaskSpec, conn: EventSender, control: Any) -> None:
        self.spec = spec
        self.stage = spec.stage
        self.conn = conn
        self.control = control
        self.life = Lifeline(control, spec.owner_pid)
        self.row = spec.row
        self.state_at = spec.row + STATE  # what this task is doing (control.describe_state)
        self.registry = PoolRegistry(debug=spec.config.debug)
        self.allocator: SlotAllocator | None = None
        if self.stage.keep_output or self.stage.outbox is not None:
            self.allocator = SlotAllocator(
                self.registry,
                pool_family(spec.pool_prefix, self.stage.index, spec.worker),
                self.stage.nslots,
                on_wait=self.life.check,
            )
        codec = Codec(self.registry, self.allocator, spec.config.inline_max, spec.config.oob_min)
        self.slots = MessageSlots(
            self.stage, self.registry, self.allocator, codec, debug=spec.config.debug
        )
        self.node: Any = None
        self.context = TaskContext(self.slots, control, spec.row)
        self.inbox: Inbox | None = None
        self.outbox: Outbox | None = None
        self.phase = "start"
        self.cpu0: int | None = None  # process CPU ns at GO
        self.cpu_due = 0  # perf_counter ns of the next CPU publication

    # -- lifecycle -------------------------------------------------------------------------
    def _publish(self, phase: int) -> None:
        """Tell the owner what this task is doing now (control.PHASES), holding no message."""
        self.control[self.state_at] = -PHASE_SPAN + phase

    def _stop_in_next(self, signum: int, frame: Any) -> None:
        """STOP_SIGNAL handler of a producer: the owner asks a producer that waits in next()
        to stop. Raises only while next() runs (its phase is published around the call);
        anywhere else the stop flag, checked before every next(), does it."""
        if state_phase(self.control[self.state_at])[0] == P_NEXT:
            signal.signal(STOP_SIGNAL, signal.SIG_IGN)  # once is enough
            raise StopRequested

    def run(self) -> None:
        opened = False
        try:
            if self.stage.spec.kind == PRODUCER:
                signal.signal(STOP_SIGNAL, self._stop_in_next)
            self._open_queues()
            self.conn.send(message.event(message.ATTACHED))
            self._load_node()
            if self.node is not None:
                self.phase = "open"
                self._publish(P_OPEN)
                self.node.open()
            opened = True
            self._publish(P_READY)
            self.conn.send(message.event(message.READY))
            self._wait_go()
            self.cpu0 = time.process_time_ns()
            self._publish(P_BETWEEN)
            if self.stage.spec.kind == PRODUCER:
                self.phase = "next"
                with contextlib.suppress(StopRequested):  # came just as next() ended anyway
                    self._produce()
            else:
                self._loop()
            self._publish(P_FINISH)
            if self.outbox is not None:
                self.outbox.send_stop()
            self.phase = "close"
            self._publish(P_CLOSE)
            opened = False
            if self.node is not None:
                self.node.close()
            self._count_cpu()
            self.conn.send(message.event(message.DONE))
        except Aborted:
            pass
        except BaseException as exc:
            self._report(exc)
        finally:
            if opened and self.node is not None:
                self._publish(P_CLOSE)
                with contextlib.suppress(Exception):
                    self.node.close()
            self._count_cpu()
            self._let_go()
            # Last: the owner reads it as "gave back every slot it held" (a task that dies
            # before this point has its slots reclaimed by the owner once every task ended).
            self._publish(P_ENDED)
            if self.life.orphaned:
                self.remove_orphaned_entries()

    def remove_orphaned_entries(self) -> None:
        """The owner died before it could unlink this task's pools and queues: unlink them,
        and whatever else of the flow is left once the owner's lock is free."""
        for pool in self.allocator.owned() if self.allocator is not None else ():
            with contextlib.suppress(OSError):
                pool.unlink()
        for name in (self.spec.inbox_queue, self.spec.outbox_queue):
            if name is not None:
                with contextlib.suppress(Exception):
                    ControlQueue(name).unlink()
        sweep_prefix(self.spec.pool_prefix)

    def watch_owner(self) -> None:
        """End this process once its owner is gone, even while the node is stuck where the
        lifeline is never checked (a next() that waits for a camera for ever, a process() on
        a dead lock, a close() that never returns, a non-daemon thread). A task between
        messages notices within milliseconds by itself; a daemon thread gives it
        ``stop_timeout`` seconds to, then interrupts a producer blocked in next(), then
        removes the task's entries and exits the process."""
        grace = self.spec.config.stop_timeout

        def watch() -> None:
            while not self.life.orphaned:
                time.sleep(ORPHAN_POLL)
            time.sleep(grace)
            if state_phase(self.control[self.state_at])[0] == P_NEXT:
                os.kill(os.getpid(), STOP_SIGNAL)
                time.sleep(grace)
            with contextlib.suppress(Exception):
                self.remove_orphaned_entries()
            os._exit(1)

        threading.Thread(target=watch, name="videoflow-owner-watch", daemon=True).start()

    def _let_go(self) -> None:
        """When the task ends: give back the slots it still holds. After an error or an abort
        that is the message in hand, those a merge holds back for ordering and those taken by
        the failed call; always, once the node is closed, the frames it kept. (Messages left
        in queues are given back by the owner once every task has ended.)"""
        pending = []
        if self.inbox is not None:
            pending = [message.data_fields(msg)[2] for msg in self.inbox.pending.values()]
            self.inbox.pending.clear()
        self.slots.abandon(pending)
        self.slots.release_kept()

    def _report(self, exc: BaseException) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(
                message.error_event(
                    self.phase, type(exc).__name__, describe_exception(exc),
                    traceback.format_exc(),
                )
            )

    def _open_queues(self) -> None:
        spec = self.spec
        if spec.inbox_queue is not None and self.stage.inbox is not None:
            self.inbox = Inbox(
                ControlQueue(spec.inbox_queue), self.stage.inbox, spec, self.control, self.life,
                self.registry,
            )
        if spec.outbox_queue is not None and self.stage.outbox is not None:
            queue = ControlQueue(spec.outbox_queue)
            if self.stage.outbox.join >= 0 and spec.doorbell is not None:
                queue.set_doorbell(spec.doorbell.open(self.control))  # an inbox of a JOIN
            self.outbox = Outbox(
                queue, self.stage.outbox, spec, self.control, self.life, self.allocator, self.row
            )

    def _load_node(self) -> None:
        # A forkserver child inherits the server's environment, not the flow owner's.
        os.environ.clear()
        os.environ.update(self.spec.environ)
        if self.spec.opencv_threads is not None:
            limit_opencv_threads(self.spec.opencv_threads)
        if self.spec.gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.spec.gpu
        elif self.spec.cpu_fallback:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        data = self.spec.node.take()
        if data is None:
            return
        self.phase = "load"
        self._publish(P_LOAD)
        self.node = pickle.loads(data)
        del data
        if self.spec.cpu_fallback:
            self.node.change_device("cpu")
        self.node.bind(self.context)

    def _wait_go(self) -> None:
        while not self.control[GO]:
            self.life.check()
            time.sleep(0.002)

    # -- per message -----------------------------------------------------------------------
    def _count_cpu(self) -> None:
        """Publish the CPU time this process (every thread of it) has used since GO."""
        if self.cpu0 is not None:
            self.control[self.row + CPU_NS] = time.process_time_ns() - self.cpu0

    def _forward(self, seq: int, meta: dict[str, Any]) -> None:
        control, row, slots = self.control, self.row, self.slots
        now = _now()
        if now >= self.cpu_due:
            self.cpu_due = now + CPU_EVERY_NS
            self._count_cpu()
        if self.outbox is None:
            return  # settle gave everything back: this task was the last reader
        if self.outbox.send(seq, meta, slots.values):
            control[row + OUT] += 1
            slots.sent()
        else:
            control[row + DROPPED] += 1
            slots.drop()

    def _produce(self) -> None:
        node, control, row, life = self.node, self.control, self.row, self.life
        slots, context, state_at = self.slots, self.context, self.state_at
        index = 0
        while True:
            life.check()
            if control[STOP]:
                break
            context.meta = meta = {"index": index}
            slots.hold({})
            t0 = _now()
            try:
                control[state_at] = index * PHASE_SPAN + P_NEXT
                value = node.next()
                control[state_at] = index * PHASE_SPAN + P_BETWEEN
            except (StopIteration, StopRequested):
                value = _ENDED  # settled below, once the exception (and its frames) is gone
            if value is _ENDED:
                slots.settle()
                break
            t1 = _now()
            control[row + BUSY_NS] += t1 - t0
            if PRODUCED_NS not in meta:  # the age of the frame counts from here (control.py)
                meta[PRODUCED_NS] = t1
            slots.output(value)
            del value
            slots.settle()
            control[row + IN] += 1
            self._forward(0, meta)
            index += 1

    def _loop(self) -> None:
        """receive -> decode -> call -> encode -> drop -> forward, until STOP."""
        assert self.inbox is not None
        inbox, control, row, slots = self.inbox, self.control, self.row, self.slots
        spec = self.stage.spec
        node, context = self.node, self.context
        is_consumer = spec.kind == CONSUMER
        is_merge = spec.kind == MERGE
        items = spec.items if any(i is not None for i in spec.items) else None
        self.phase = "consume" if is_consumer else "process"
        state_at, calling = self.state_at, P_CONSUME if is_consumer else P_PROCESS
        skipper = None if is_consumer or is_merge else make_skipper(
            spec.name, spec.every, spec.skip_when_busy and self.spec.realtime, inbox.backlog
        )
        while True:
            t0 = _now()
            msg = inbox.get()
            control[row + WAIT_NS] += _now() - t0
            if message.kind(msg) == STOP_FLOW:
                return
            control[row + IN] += 1
            seq, meta, values = message.data_fields(msg)
            slots.hold(values)
            if not is_merge:
                context.meta = meta
                index = meta.get("index")  # a node may have set anything there
                if type(index) is not int or not 0 <= index < MAX_INDEX:
                    index = -1
                index *= PHASE_SPAN
                if skipper is not None and skipper.skip(meta):
                    control[row + SKIPPED] += 1
                    output = skipper.last  # each message gets its own copy (slots.output)
                else:
                    inputs = slots.inputs()
                    if items is not None:
                        inputs = spec.select_items(inputs)  # node[i]
                    control[state_at] = index + calling
                    t0 = _now()
                    if is_consumer:
                        produced = meta.get(PRODUCED_NS)
                        if produced is not None:
                            record_age(control, row, t0 - produced)
                        node.consume(*inputs)
                        output = None
                    else:
                        output = node.process(*inputs)
                        if skipper is not None:
                            skipper.ran_on(output, meta)
                    control[row + BUSY_NS] += _now() - t0
                    control[state_at] = index + P_BETWEEN
                    del inputs
                slots.output(output)
                del output
                slots.settle()
            self._forward(seq, meta)


def describe_exception(exc: BaseException) -> str:
    """``str(exc)``, or what can be said of an exception whose ``__str__`` itself raises."""
    try:
        return str(exc)
    except BaseException as broken:  # any error of a user's __str__
        return f"<{type(exc).__name__}.__str__ raised {type(broken).__name__}>"


def lingering_threads() -> tuple[str, ...]:
    """Names of this process's threads that will keep it from exiting (non-daemon threads
    other than the main one), each with its class when it is not a plain Thread."""
    main = threading.main_thread()
    return tuple(
        t.name if type(t) is threading.Thread else f"{t.name} ({type(t).__name__})"
        for t in threading.enumerate()
        if t is not main and not t.daemon and t.is_alive()
    )


def task_main(
    spec: TaskSpec, conn: Connection, control: Any, cls: type[Task] | None = None
) -> None:
    """Entry point of a task process; ``cls``: a Task subclass (a JOIN stage's JoinTask)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_process_title(f"videoflow: {spec.stage.spec.name}[{spec.worker}]")
    sender = EventSender(conn)
    mismatch = copy_mismatch(spec.owner_copy)
    if mismatch is not None:  # before any queue: another copy could not open the owner's
        sender.send(message.event(message.REFUSED, mismatch))
        return
    forward_to_owner(sender, spec.stage.spec.name, spec.worker, spec.log_levels)
    task = (cls or Task)(spec, sender, control)
    task.watch_owner()
    if spec.config.profile:  # the ``profile`` flow option
        run_profiled(spec.config.profile, spec.stage.spec.name, spec.worker, task.run)
    else:
        task.run()
    threads = lingering_threads()
    if threads:  # the process will wait for them: the owner names them if it has to kill it
        with contextlib.suppress(OSError, ValueError):
            sender.send(message.event(message.THREADS, threads))
