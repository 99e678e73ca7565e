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
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from videoflow.config import FlowConfig
from videoflow.engine.bootstrap import copy_mismatch, set_process_title
from videoflow.engine.logs import EventSender, forward_to_owner
from videoflow.engine.plan import CONSUMER, MERGE, PRODUCER, Link, Stage
from videoflow.engine.stats import (
    ABORT,
    BLOCKED_NS,
    BUSY_NS,
    CPU_NS,
    DROPPED,
    GO,
    IN,
    OFFLINE_NS,
    OUT,
    RECONNECTS,
    STOP,
    WAIT_NS,
)
from videoflow.errors import StaleSlotError
from videoflow.transport import message
from videoflow.transport.codec import Codec, value_refs
from videoflow.transport.names import sweep_prefix
from videoflow.transport.queue import ControlQueue
from videoflow.transport.shm import PoolRegistry, SlotAllocator, SlotRef

DATA, STOP_FLOW, BLOB = 0, 1, 2
_now = time.perf_counter_ns
CPU_EVERY_NS = 50_000_000  # how often a task publishes its CPU time (a syscall, ~0.6 us)


class Aborted(Exception):
    """The flow is being torn down: leave the loop without forwarding anything."""


def _heap_array(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.empty(shape, dtype=dtype)


class TaskContext:
    """What a node sees of its task (``Node.bind``): ``allocate`` takes a slot of the task's
    pool (a task that sends nothing on allocates on the heap); ``meta`` is the metadata of the
    message in hand, which the task sets before each call (one attribute store per message).

    Beyond the NodeContext protocol, for live sources (the stream and camera readers, which
    use them when their context has them): ``stopping()`` says whether the flow is ending, so
    that a wait for a lost source gives way to a stop; ``reconnected(offline_s)`` counts a
    reconnect in the task's counter row. Called from the task's main thread only (the row has
    a single writer)."""

    __slots__ = ("allocate", "control", "meta", "row")

    def __init__(self, allocator: SlotAllocator | None, control: Any = None, row: int = 0) -> None:
        self.allocate = allocator.array if allocator is not None else _heap_array
        self.meta: dict[str, Any] = {}
        self.control, self.row = control, row

    def stopping(self) -> bool:
        return self.control is not None and bool(self.control[STOP] or self.control[ABORT])

    def reconnected(self, offline_s: float) -> None:
        if self.control is not None:
            self.control[self.row + RECONNECTS] += 1
            self.control[self.row + OFFLINE_NS] += int(offline_s * 1e9)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything a task process needs, sent to it at start."""

    stage: Stage
    worker: int
    node_bytes: bytes | None
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


def message_refs(values: dict[int, Any]) -> set[SlotRef]:
    refs: set[SlotRef] = set()
    for enc in values.values():
        refs.update(value_refs(enc))
    return refs


def read_message(raw: bytes, registry: PoolRegistry) -> tuple[Any, ...]:
    """Decode a control message; one that outgrew its queue comes out of its blob slot,
    which is then given back."""
    msg = message.loads(raw)
    if msg[0] == BLOB:
        ref, nbytes = msg[1], msg[2]
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
        msg = read_message(raw, registry)
        if msg[0] == DATA:
            for ref in message_refs(msg[3]):
                registry.release(ref)
        count += 1
    return count


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
        self.pending: dict[int, tuple[Any, ...]] = {}
        self.next_seq = 0
        self.stops = 0

    def _receive(self) -> tuple[Any, ...]:
        while True:
            raw = self.queue.get(self.poll)
            if raw is not None:
                return read_message(raw, self.registry)
            self.life.check()

    def get(self) -> tuple[Any, ...]:
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
                return (STOP_FLOW, 0, None, None)
            msg = self._receive()
            if msg[0] == STOP_FLOW:
                self.stops += 1
            else:
                self.pending[msg[1]] = msg


class Outbox:
    """Sends messages on. Batch mode waits for room; realtime mode drops when there is none.

    Into a multi-task node, messages are numbered here and at most ``window`` of them may be
    between this sender and the merge that restores their order.
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
        self.poll = spec.config.poll_interval
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

    def _pack(self, msg: tuple[Any, ...]) -> tuple[bytes, SlotRef | None]:
        data = message.dumps(msg)
        if len(data) <= self.max_size:
            return data, None
        if self.allocator is None:
            raise RuntimeError("a message outgrew the control queue and this task has no pool")
        ref, nbytes = self.allocator.write(data)
        self.allocator.fresh.clear()
        return message.dumps((BLOB, ref, nbytes)), ref

    def _unsent(self, blob: SlotRef | None) -> None:
        """Give back the blob slot of a message that did not leave this task."""
        if blob is not None and self.allocator is not None:
            self.allocator.registry.release(blob)

    def send(self, seq: int, meta: dict[str, Any], values: dict[int, Any]) -> bool:
        """Send a data message; False when realtime mode dropped it (the caller frees it)."""
        if self.numbered:
            if not self._wait_window():
                return False
            seq = self.next_seq
        elif not self.keep_seq:
            seq = 0
        data, blob = self._pack((DATA, seq, meta, values))
        if self.realtime:
            if not self.queue.put(data, 0):
                self._unsent(blob)
                return False
        else:
            try:
                self._put_blocking(data)
            except BaseException:  # aborted while waiting
                self._unsent(blob)
                raise
        if self.numbered:
            self.next_seq += 1
        return True

    def send_stop(self) -> None:
        data = message.dumps((STOP_FLOW, 0, None, None))
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
        self.registry = PoolRegistry(debug=spec.config.debug)
        self.allocator: SlotAllocator | None = None
        if self.stage.keep_output or self.stage.outbox is not None:
            self.allocator = SlotAllocator(
                self.registry,
                f"{spec.pool_prefix}.{self.stage.index}-{spec.worker}",
                self.stage.nslots,
                on_wait=self.life.check,
            )
        self.codec = Codec(
            self.registry, self.allocator, spec.config.inline_max, spec.config.oob_min
        )
        self.node: Any = None
        self.context = TaskContext(self.allocator, control, spec.row)
        self.inbox: Inbox | None = None
        self.outbox: Outbox | None = None
        self.phase = "start"
        self.holding: dict[int, Any] | None = None  # values of the message in hand
        self.cpu0: int | None = None  # process CPU ns at GO
        self.cpu_due = 0  # perf_counter ns of the next CPU publication

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> None:
        opened = False
        try:
            self._open_queues()
            self.conn.send(("attached",))
            self._load_node()
            if self.node is not None:
                self.phase = "open"
                self.node.open()
            opened = True
            self.conn.send(("ready",))
            self._wait_go()
            self.cpu0 = time.process_time_ns()
            if self.stage.spec.kind == PRODUCER:
                self.phase = "next"
                self._produce()
            else:
                self._loop()
            if self.outbox is not None:
                self.outbox.send_stop()
            self.phase = "close"
            opened = False
            if self.node is not None:
                self.node.close()
            self._count_cpu()
            self.conn.send(("done",))
        except Aborted:
            pass
        except BaseException as exc:
            self._report(exc)
        finally:
            if opened and self.node is not None:
                with contextlib.suppress(Exception):
                    self.node.close()
            self._count_cpu()
            self._let_go()
            if self.life.orphaned:
                for pool in self.allocator.owned() if self.allocator is not None else ():
                    pool.unlink()
                for name in (self.spec.inbox_queue, self.spec.outbox_queue):
                    if name is not None:  # the owner died before it could unlink them
                        with contextlib.suppress(Exception):
                            ControlQueue(name).unlink()
                sweep_prefix(self.spec.pool_prefix)  # the rest, once the owner's lock is free

    def _let_go(self) -> None:
        """After an error or an abort, give back the slots this task still holds: the message
        in hand, those a merge holds back for ordering, those taken by the failed call.
        (Messages left in queues are given back by the owner once every task has ended.)"""
        refs: set[SlotRef] = set()
        if self.holding is not None:
            refs |= message_refs(self.holding)
            self.holding = None
        if self.inbox is not None:
            for msg in self.inbox.pending.values():
                refs |= message_refs(msg[3])
            self.inbox.pending.clear()
        if self.allocator is not None:
            refs.update(self.allocator.fresh)
            self.allocator.fresh.clear()
        for ref in refs:
            with contextlib.suppress(Exception):
                self.registry.release(ref)

    def _report(self, exc: BaseException) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(
                ("error", self.phase, type(exc).__name__, str(exc), traceback.format_exc())
            )

    def _open_queues(self) -> None:
        spec = self.spec
        if spec.inbox_queue is not None and self.stage.inbox is not None:
            self.inbox = Inbox(
                ControlQueue(spec.inbox_queue), self.stage.inbox, spec, self.control, self.life,
                self.registry,
            )
        if spec.outbox_queue is not None and self.stage.outbox is not None:
            self.outbox = Outbox(
                ControlQueue(spec.outbox_queue), self.stage.outbox, spec, self.control,
                self.life, self.allocator, self.row,
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
        if self.spec.node_bytes is None:
            return
        self.phase = "load"
        self.node = pickle.loads(self.spec.node_bytes)
        if self.spec.cpu_fallback:
            self.node.change_device("cpu")
        self.node.bind(self.context)

    def _wait_go(self) -> None:
        while not self.control[GO]:
            self.life.check()
            time.sleep(0.002)

    # -- per message -----------------------------------------------------------------------
    def _release(self, refs: set[SlotRef] | list[SlotRef]) -> None:
        for ref in refs:
            self.registry.release(ref)

    def _count_cpu(self) -> None:
        """Publish the CPU time this process (every thread of it) has used since GO."""
        if self.cpu0 is not None:
            self.control[self.row + CPU_NS] = time.process_time_ns() - self.cpu0

    def _forward(self, seq: int, meta: dict[str, Any], values: dict[int, Any]) -> None:
        control, row = self.control, self.row
        now = _now()
        if now >= self.cpu_due:
            self.cpu_due = now + CPU_EVERY_NS
            self._count_cpu()
        if self.outbox is None:
            self._release(message_refs(values))
        elif self.outbox.send(seq, meta, values):
            control[row + OUT] += 1
        else:
            control[row + DROPPED] += 1
            self._release(message_refs(values))

    def _check_views(self, values: dict[int, Any]) -> None:
        """Debug mode, after a call: the message's slots are still the ones it was sent with,
        and the node kept no view of its inputs (it would read them after their release)."""
        for ref in message_refs(values):
            self.registry.get(ref.pool).check(ref.slot, ref.gen)
        kept = self.codec.still_referenced()
        if kept:
            raise StaleSlotError(
                f"node {self.stage.spec.name!r} kept a view of its input after "
                f"{self.phase}() returned (slot {kept[0].slot} of pool {kept[0].pool!r}); "
                "inputs are valid only during the call and their slots are then reused: "
                "keep a copy (frame.copy()) instead"
            )

    def _produce(self) -> None:
        node, control, row, life = self.node, self.control, self.row, self.life
        allocator, context = self.allocator, self.context
        assert allocator is not None
        node_id = self.stage.spec.node_id
        index = 0
        while True:
            life.check()
            if control[STOP]:
                break
            context.meta = meta = {"index": index}
            t0 = _now()
            try:
                value = node.next()
            except StopIteration:
                allocator.end_call(set())
                break
            control[row + BUSY_NS] += _now() - t0
            enc = self.codec.encode(value, set(allocator.fresh))
            allocator.end_call(set(value_refs(enc)))
            control[row + IN] += 1
            self.holding = values = {node_id: enc}
            self._forward(0, meta, values)
            self.holding = None
            index += 1

    def _loop(self) -> None:
        assert self.inbox is not None
        inbox, control, row = self.inbox, self.control, self.row
        stage = self.stage
        spec = stage.spec
        node, codec, allocator, context = self.node, self.codec, self.allocator, self.context
        is_consumer = spec.kind == CONSUMER
        is_merge = spec.kind == MERGE
        reads, drop_after, node_id = spec.reads, stage.drop_after, spec.node_id
        debug = self.spec.config.debug
        self.phase = "consume" if is_consumer else "process"
        while True:
            t0 = _now()
            msg = inbox.get()
            control[row + WAIT_NS] += _now() - t0
            if msg[0] == STOP_FLOW:
                return
            control[row + IN] += 1
            _, seq, meta, values = msg
            self.holding = values
            if not is_merge:
                inputs = [codec.decode(values[nid]) for nid in reads]
                context.meta = meta
                t0 = _now()
                if is_consumer:
                    node.consume(*inputs)
                    output = None
                else:
                    output = node.process(*inputs)
                control[row + BUSY_NS] += _now() - t0
                del inputs
                refs = {nid: value_refs(enc) for nid, enc in values.items()}
                if allocator is not None:
                    if stage.keep_output:
                        held = set(allocator.fresh)
                        for some in refs.values():
                            held.update(some)
                        enc = codec.encode(output, held)
                        values[node_id] = enc
                        refs[node_id] = value_refs(enc)
                        allocator.end_call(set(refs[node_id]))
                    else:
                        allocator.end_call(set())
                del output
                if debug:
                    self._check_views(values)
                if drop_after:
                    freed: set[SlotRef] = set()
                    for nid in drop_after:
                        if nid in values:
                            del values[nid]
                            freed.update(refs.pop(nid))
                    if freed:
                        for kept in refs.values():
                            freed.difference_update(kept)
                        self._release(freed)
            self._forward(seq, meta, values)
            self.holding = None


def task_main(spec: TaskSpec, conn: Connection, control: Any) -> None:
    """Entry point of a task process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_process_title(f"videoflow: {spec.stage.spec.name}[{spec.worker}]")
    sender = EventSender(conn)
    mismatch = copy_mismatch(spec.owner_copy)
    if mismatch is not None:  # before any queue: another copy could not open the owner's
        sender.send(("refused", mismatch))
        return
    forward_to_owner(sender, spec.stage.spec.name, spec.worker, spec.log_levels)
    Task(spec, sender, control).run()
