"""What runs inside each actor of the Ray engine: one task of one node, its counters, its life.

The driver (engine/ray_engine.py) is the single submitter: for every message it calls
``take`` on the producer actor, then ``call`` (or ``call_with``, for a node that reads more
than the previous stage) on one actor of every later stage, passing object refs from call to
call. Every call returns one (metadata, output) pair: the metadata is threaded from each stage
to the next in chain order, so the chain is ordered exactly as the process engine's, and a
node's output is read by the stages that name it. The last stage of a stream that feeds a JOIN
returns its metadata a second time, as an object of its own (``take_split``, ``call_split``),
for the driver to pair messages by.

A data message's metadata is a dict. Two other values travel in its place and make every later
call return at once without running its node: ``None`` (the producer has ended, or the flow is
being torn down) and a ``Failure`` (a node raised; the driver turns it into a FlowError).

The producer calls ``next()`` in a thread of its own in both modes, so that its control calls
(stop, abort, look) are answered at once and a ``next()`` that blocks can be interrupted
without holding up a take (``_interrupt``).

This module imports ray: only the Ray engine imports it, and only once Ray is wanted.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import os
import pickle
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

import numpy as np
import ray

from videoflow.engine.control import (
    BLOCKED_NS,
    BUSY_NS,
    CPU_NS,
    DROPPED,
    IN,
    OUT,
    P_BETWEEN,
    P_CLOSE,
    P_ENDED,
    P_NEXT,
    PHASE_SPAN,
    PRODUCED_NS,
    ROW,
    SKIPPED,
    STATE,
    WAIT_NS,
    record_age,
)
from videoflow.engine.ray_engine import process_started
from videoflow.engine.skipping import make_skipper
from videoflow.engine.task import StopRequested, limit_opencv_threads

if TYPE_CHECKING:
    from videoflow.engine.plan import StageSpec

CONTROL = "control"  # the producer's concurrency group for calls that must not wait for takes
UNWIND_S = 1.0  # seconds close() waits for an interrupted next() to unwind before closing anyway
TAKEN_KEPT = 4096  # message indices of the latest takes the producer remembers (``taken``)
_now = time.perf_counter_ns


def _raise_in(thread: threading.Thread, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in ``thread`` as soon as it runs Python code again (None: take back
    one not raised yet). A thread blocked in C code (a lock, a device read) raises once that
    call returns."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(exc) if exc else None
        )


@dataclasses.dataclass(frozen=True)
class Failure:
    """A node (or its wrapper) raised: where, what, and the traceback text from the actor."""

    node: str
    task: int
    phase: str  # load, open, next, process, consume, close
    type_name: str
    message: str
    traceback: str


@dataclasses.dataclass(frozen=True)
class ActorInfo:
    """What an actor tells the driver once its node is open."""

    pid: int
    started: int  # when its process started (/proc, clock ticks; 0 when unknown)
    node_id: str  # Ray node id of the machine it runs on
    ip: str  # the address of that machine
    cpus: int  # CPUs this actor's process may run on
    gpus: str  # CUDA_VISIBLE_DEVICES as Ray set it ("" without a GPU)
    failure: Failure | None  # the node failed to load or open


class RayNodeContext:
    """The NodeContext of a node under Ray: the metadata of the message in hand, and plain
    numpy buffers (Ray copies a returned array into its object store once, whatever it is)."""

    def __init__(self) -> None:
        self._meta: dict[str, Any] = {}

    @property
    def meta(self) -> dict[str, Any]:
        return self._meta

    def allocate(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype=dtype)


class NodeActor:
    """One task of one node. Ray runs ``__init__`` again when it restarts a dead actor, so a
    restarted actor opens its node again before it takes the calls Ray retries."""

    def __init__(
        self, node_bytes: bytes, spec: StageSpec, task: int, realtime: bool,
        drop_newest: bool = False, cpu_fallback: bool = False,
    ) -> None:
        self.spec = spec  # without its node: name, kind, items, every, ...
        self.name, self.kind, self.task = spec.name, spec.kind, task
        self.realtime = realtime
        self.drop_newest = drop_newest  # REALTIME producer: a new value finding one untaken
        self.items = any(i is not None for i in spec.items)
        # skip_when_busy (REALTIME): the driver tells this actor, in its control thread, the
        # refs of the inputs of the calls submitted to it (``ahead``); a call whose inputs are
        # all ready waits behind the one running, as a message waits in a task's inbox.
        self.calls = 0  # calls received (the number of the next call the driver submitted)
        self.ahead_refs: dict[int, list[Any]] = {}
        self.skipper = make_skipper(
            spec.name, spec.every, spec.skip_when_busy and realtime, self._backlog
        ) if spec.kind == "processor" else None
        self.ages = False  # a consumer on the producer's machine: frame ages are comparable
        self.row = [0] * ROW
        self.failure: Failure | None = None
        self.aborted = False
        self.opened = False
        self.cpu0: int | None = None
        self.idle_since = 0
        self.context = RayNodeContext()
        self.node: Any = None
        # producer side: next() runs in a thread of its own (``_produce``), in both modes
        self.cond = threading.Condition()
        self.buffer: collections.deque[tuple[dict[str, Any], Any]] = collections.deque()
        self.wanted = 0  # BATCH: takes waiting for a value
        self.stopping = False
        self.ended = False
        self.thread: threading.Thread | None = None
        self.next_lock = threading.Lock()  # a plain lock: see _call_next
        self.in_next = False
        self.interrupted = False  # a next() in progress was interrupted by stop() or abort()
        self.taken: collections.deque[int] = collections.deque(maxlen=TAKEN_KEPT)
        self.takes = 0  # values handed out
        self.state_at = _now()  # when row[STATE] last changed
        phase = "load"
        try:
            if cpu_fallback:  # no GPU left for this task: hide the others from it
                os.environ["CUDA_VISIBLE_DEVICES"] = ""
            self.node = pickle.loads(node_bytes)
            if cpu_fallback:
                self.node.change_device("cpu")
            self.node.bind(self.context)
            phase = "open"
            self.node.open()
            self.opened = True
        except BaseException as exc:
            self.failure = self._failure(phase, exc)

    def __repr__(self) -> str:  # Ray prefixes the actor's log lines with it
        return f"{self.name}[{self.task}]"

    # -- helpers ---------------------------------------------------------------------------
    def _failure(self, phase: str, exc: BaseException) -> Failure:
        return Failure(self.name, self.task, phase, type(exc).__name__, str(exc),
                       traceback.format_exc())

    def _set_meta(self, meta: dict[str, Any]) -> None:
        self.context._meta = meta

    def _begin(self) -> int:
        t0 = _now()
        if self.idle_since:
            self.row[WAIT_NS] += t0 - self.idle_since
        return t0

    def _end(self, t0: int) -> None:
        t1 = _now()
        self.row[BUSY_NS] += t1 - t0
        self.idle_since = t1

    # -- control: on a producer, in a thread of its own (answered while a take waits) --------
    def info(self) -> ActorInfo:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
        return ActorInfo(
            pid=os.getpid(), started=process_started(os.getpid()) or 0,
            node_id=ray.get_runtime_context().get_node_id(),
            ip=ray.util.get_node_ip_address(), cpus=cpus,
            gpus=os.environ.get("CUDA_VISIBLE_DEVICES", ""), failure=self.failure,
        )

    def go(self, opencv_threads: int | None, with_producer: bool) -> None:
        """Every task is open: start the clocks (and the producer's loop). ``with_producer``:
        this actor runs on the producer's machine, where its clock stamps can be compared."""
        self.ages = with_producer and self.kind == "consumer"
        if opencv_threads is not None:
            limit_opencv_threads(opencv_threads)
        self.cpu0 = time.process_time_ns()
        self.idle_since = _now()
        if self.kind == "producer" and self.failure is None and not self.thread:
            self._set_state(P_BETWEEN)
            self.thread = threading.Thread(target=self._produce, name="videoflow-producer",
                                           daemon=True)
            self.thread.start()

    def stop(self) -> None:
        """Producer: call ``next()`` no more, and interrupt the one in progress (it makes no
        message); what it already produced is still taken."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self._interrupt()

    def abort(self) -> None:
        """The flow is torn down: calls still queued return at once."""
        with self.cond:
            self.aborted = self.stopping = True
            self.cond.notify_all()
        self._interrupt()

    def ahead(self, number: int, refs: list[Any]) -> None:
        """skip_when_busy: call ``number`` of this actor was submitted with inputs ``refs``
        (a list, so that Ray passes the refs without waiting for them)."""
        with self.cond:
            if number >= self.calls:
                self.ahead_refs[number] = refs

    def _backlog(self) -> int:
        """Calls queued behind the one in hand whose inputs are all ready: the messages that
        wait for this node, as its inbox would hold them on the process engine."""
        with self.cond:
            current = self.calls - 1
            for number in [n for n in self.ahead_refs if n <= current]:
                del self.ahead_refs[number]
            later = list(self.ahead_refs.values())
        refs = list(dict.fromkeys(ref for call in later for ref in call))  # ray.wait: unique
        if not refs:
            return len(later)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        done = set(ready)
        return sum(1 for call in later if all(ref in done for ref in call))

    def stats(self) -> list[int]:
        """This task's counter row (engine/control.py FIELDS)."""
        if self.cpu0 is not None:
            self.row[CPU_NS] = time.process_time_ns() - self.cpu0
        return list(self.row)

    def look(self) -> tuple[list[int], float, int, list[int]]:
        """Producer: its counter row (STATE says what it is doing), the seconds it has been
        doing it, and the message indices of its latest takes: (row, seconds, first, indices),
        take ``first + i`` of the driver having got message ``indices[i]``."""
        with self.cond:
            first, indices = self.takes - len(self.taken), list(self.taken)
        return self.stats(), (_now() - self.state_at) / 1e9, first, indices

    # -- the producer ----------------------------------------------------------------------
    def _set_state(self, phase: int, message: int = -1) -> None:
        self.row[STATE] = message * PHASE_SPAN + phase
        self.state_at = _now()

    def _interrupt(self) -> None:
        """Raise StopRequested in the producer's thread if it is in ``next()``, as the
        process engine's STOP_SIGNAL does: a ``next()`` running Python code, or waiting in
        short steps, ends at once; one blocked in a single long call (a lock, a device read)
        ends when that call returns, and meanwhile no take waits for it."""
        with self.next_lock:
            if self.in_next and self.thread is not None:
                self.interrupted = True
                _raise_in(self.thread, StopRequested)

    def _call_next(self) -> Any:
        """The producer thread's call of ``next()``. An interrupt is raised only while
        ``in_next`` is set (under ``next_lock``, a plain lock whose ``with`` runs no Python
        code that could be interrupted), and one not raised yet is taken back before it is
        cleared: it can surface anywhere in the inner ``try`` (even after ``next()``
        returned), and nowhere else."""
        try:
            with self.next_lock:
                self.in_next = True
            return self.node.next()
        finally:
            with self.next_lock:
                self.in_next = False
                _raise_in(threading.current_thread(), None)

    def _next(self) -> tuple[dict[str, Any], Any] | None:
        """Call ``next()`` once: (metadata, value), or None once the producer has ended
        (StopIteration, a failure kept in ``self.failure``, or an interrupt)."""
        meta: dict[str, Any] = {"index": self.row[IN]}
        self._set_meta(meta)
        self._set_state(P_NEXT, self.row[IN])
        t0 = _now()
        try:
            value = self._call_next()
        except (StopIteration, StopRequested):
            self.ended = True
            return None
        except BaseException as exc:
            self.failure = self._failure("next", exc)
            self.ended = True
            return None
        finally:
            self._set_state(P_BETWEEN)
        t1 = _now()
        self.row[BUSY_NS] += t1 - t0
        if PRODUCED_NS not in meta:  # the age of the frame counts from here (control.py)
            meta[PRODUCED_NS] = t1
        return meta, value

    def _produce(self) -> None:
        """The producer's thread. BATCH: one ``next()`` per take waiting, so the producer runs
        at most the driver's window ahead and nothing is dropped. REALTIME: ``next()`` as fast
        as the source gives values, keeping only the newest one not yet taken: a flow that
        cannot keep up gets fresh frames and counts the ones it skipped as dropped."""
        cond, buffer, row = self.cond, self.buffer, self.row
        try:
            while True:
                with cond:
                    t0 = _now()
                    while not self.stopping and not (self.realtime or self.wanted):
                        cond.wait()
                    row[BLOCKED_NS] += _now() - t0  # BATCH: waiting for room downstream
                    if self.stopping:
                        break
                    if not self.realtime:
                        self.wanted -= 1
                got = self._next()
                if got is None:
                    break
                with cond:
                    if self.interrupted:  # came back from an interrupted next(): no message
                        break
                    row[IN] += 1
                    if self.stopping:  # made while the flow was asked to stop: not taken
                        row[DROPPED] += 1
                        break
                    if buffer:  # REALTIME, the flow is behind: drop the oldest value, or this
                        row[DROPPED] += 1
                        if self.drop_newest:
                            continue
                        buffer.popleft()
                    buffer.append(got)
                    cond.notify_all()
                del got
        finally:
            with cond:
                self.ended = True
                cond.notify_all()

    def take(self) -> tuple[Any, Any]:
        """The producer's next (metadata, value); (None, None) once it has ended, (failure,
        None) when it failed. BATCH asks the producer's thread for one value per take: the
        driver keeps up to a window of takes queued, so the producer runs that far ahead of the
        flow and no further. After a stop, what is buffered still goes; a ``next()`` in
        progress was interrupted and makes no message."""
        cond, buffer = self.cond, self.buffer
        if self.thread is None:  # its node failed to open: the driver knows
            return self.failure, None
        with cond:
            if not self.realtime and not self.stopping and not self.ended:
                self.wanted += 1
                cond.notify_all()
            while not buffer and not self.ended and not self.stopping:
                cond.wait(0.1)
            if buffer and not self.aborted:
                self.row[OUT] += 1
                meta, value = buffer.popleft()
                self.taken.append(meta["index"])
                self.takes += 1
                return meta, value
        return self.failure, None

    @ray.method(num_returns=2)
    def take_split(self) -> tuple[Any, tuple[Any, Any]]:
        """``take`` for a producer whose stream ends at a join: its metadata as an object of
        its own too, which the driver reads to pair messages without fetching the value."""
        got = self.take()
        return got[0], got

    # -- processors and consumers ----------------------------------------------------------
    def call(self, result: tuple[Any, Any]) -> tuple[Any, Any]:
        """Run the node on one message whose only input is the previous stage's output (the
        common case, one argument per call): ``result`` is that stage's (metadata, output)."""
        return self._run(result[0], (result[1],))

    def call_with(
        self, where: tuple[int, ...], *results: tuple[Any, Any], number: int | None = None
    ) -> tuple[Any, Any]:
        """Run the node on one message. ``results`` are (metadata, output) pairs returned by
        earlier stages: the first is the previous stage's, whose metadata this message carries
        on; the node's input ``i`` is the output of ``results[where[i]]``. ``number``: the
        call's number on this actor, given to a node that skips when busy (see ``ahead``)."""
        return self._run(results[0][0], tuple(results[j][1] for j in where), number)

    @ray.method(num_returns=2)
    def call_split(
        self, where: tuple[int, ...], *results: tuple[Any, Any], number: int | None = None
    ) -> tuple[Any, tuple[Any, Any]]:
        """``call_with`` for the last stage of a stream that ends at a join: its metadata as
        an object of its own too, which the driver reads to pair messages without fetching
        the output."""
        pair = self.call_with(where, *results, number=number)
        return pair[0], pair

    def _run(
        self, meta: Any, inputs: tuple[Any, ...], number: int | None = None
    ) -> tuple[Any, Any]:
        """This stage's (metadata, output) pair (a consumer's output is None), or the marker
        in hand."""
        # A call that says its number keeps the count right on an actor Ray restarted, whose
        # first call is a retried one.
        self.calls = self.calls + 1 if number is None else number + 1
        if not isinstance(meta, dict) or self.aborted:
            return (None if self.aborted else meta), None
        if self.failure is not None:
            return self.failure, None
        consumer = self.kind == "consumer"
        row = self.row
        row[IN] += 1
        self._set_meta(meta)
        skipper = self.skipper
        if skipper is not None and skipper.skip(meta):  # every=N: the last output goes on
            row[SKIPPED] += 1
            row[OUT] += 1
            return meta, skipper.last
        t0 = self._begin()
        try:
            if self.items:
                inputs = tuple(self.spec.select_items(list(inputs)))  # node[i]
            if consumer:
                produced = meta.get(PRODUCED_NS)
                if self.ages and isinstance(produced, int):
                    record_age(self.row, 0, t0 - produced)
                self.node.consume(*inputs)
                output = None
            else:
                output = self.node.process(*inputs)
                if skipper is not None:
                    skipper.ran_on(output, meta)
        except BaseException as exc:
            self.failure = self._failure("consume" if consumer else "process", exc)
            return self.failure, None
        finally:
            self._end(t0)
        if not consumer:
            row[OUT] += 1
        return meta, output

    # -- the end ---------------------------------------------------------------------------
    def close(self, wait_s: float) -> tuple[list[int], Failure | None]:
        """Queued after every call of this actor: stop the producer's thread (waiting
        ``wait_s`` at most, ``UNWIND_S`` at most for an interrupted ``next()`` still blocked in
        C code: the node closes anyway, and the thread ends with the actor's process), close
        the node; returns the final counters and the failure this task had, if any."""
        if self.thread is not None:
            self.stop()
            self.thread.join(min(wait_s, UNWIND_S) if self.interrupted else wait_s)
        failure = self.failure
        if self.opened:
            self.opened = False
            self._set_state(P_CLOSE)
            try:
                self.node.close()
            except BaseException as exc:
                failure = failure or self._failure("close", exc)
        self._set_state(P_ENDED)
        return self.stats(), failure
