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

This module imports ray: only the Ray engine imports it, and only once Ray is wanted.
"""

from __future__ import annotations

import collections
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
    PRODUCED_NS,
    ROW,
    SKIPPED,
    WAIT_NS,
    record_age,
)
from videoflow.engine.ray_engine import process_started
from videoflow.engine.skipping import make_skipper
from videoflow.engine.task import limit_opencv_threads

if TYPE_CHECKING:
    from videoflow.engine.plan import StageSpec

CONTROL = "control"  # the producer's concurrency group for calls that must not wait for takes
_now = time.perf_counter_ns


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
        # producer side
        self.cond = threading.Condition()
        self.buffer: collections.deque[tuple[dict[str, Any], Any]] = collections.deque()
        self.stopping = False
        self.ended = False
        self.thread: threading.Thread | None = None
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
        if self.kind == "producer" and self.realtime and self.failure is None and not self.thread:
            self.thread = threading.Thread(target=self._produce, name="videoflow-producer",
                                           daemon=True)
            self.thread.start()

    def stop(self) -> None:
        """Producer: call ``next()`` no more; what it already produced is still taken."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def abort(self) -> None:
        """The flow is torn down: calls still queued return at once."""
        with self.cond:
            self.aborted = self.stopping = True
            self.cond.notify_all()

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

    # -- the producer ----------------------------------------------------------------------
    def _next(self) -> tuple[dict[str, Any], Any] | None:
        """Call ``next()`` once: (metadata, value), or None once the producer has ended
        (StopIteration, or a failure kept in ``self.failure``)."""
        meta: dict[str, Any] = {"index": self.row[IN]}
        self._set_meta(meta)
        t0 = _now()
        try:
            value = self.node.next()
        except StopIteration:
            self.ended = True
            return None
        except BaseException as exc:
            self.failure = self._failure("next", exc)
            self.ended = True
            return None
        t1 = _now()
        self.row[BUSY_NS] += t1 - t0
        self.row[IN] += 1
        if PRODUCED_NS not in meta:  # the age of the frame counts from here (control.py)
            meta[PRODUCED_NS] = t1
        return meta, value

    def _produce(self) -> None:
        """REALTIME: call ``next()`` as fast as the source gives values, keeping only the
        newest one not yet taken: a flow that cannot keep up gets fresh frames and counts the
        ones it skipped as dropped."""
        cond, buffer, row = self.cond, self.buffer, self.row
        try:
            while not self.stopping:
                got = self._next()
                if got is None:
                    break
                with cond:
                    if self.stopping:  # made while the flow was asked to stop: not taken
                        row[DROPPED] += 1
                        break
                    if buffer:  # the flow is behind: drop the oldest value, or this one
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
        None) when it failed. BATCH calls ``next()`` here: the driver keeps up to a window of
        takes queued, so the producer runs that far ahead of the flow and no further."""
        if not self.realtime:
            if self.idle_since:  # waiting for the driver: room downstream
                self.row[BLOCKED_NS] += _now() - self.idle_since
            got = None if self.stopping or self.ended else self._next()
            self.idle_since = _now()
            if got is None:
                return self.failure, None
            self.row[OUT] += 1
            return got
        cond, buffer = self.cond, self.buffer
        with cond:  # after a stop, what is buffered still goes; a next() in progress does not
            while not buffer and not self.ended and not self.stopping:
                cond.wait(0.1)
            if buffer and not self.aborted:
                self.row[OUT] += 1
                return buffer.popleft()
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
        """Queued after every call of this actor: stop the producer loop (waiting ``wait_s``
        at most for a ``next()`` in progress), close the node; returns the final counters and
        the failure this task had, if any."""
        if self.thread is not None:
            self.stop()
            self.thread.join(wait_s)
        failure = self.failure
        if self.opened:
            self.opened = False
            try:
                self.node.close()
            except BaseException as exc:
                failure = failure or self._failure("close", exc)
        return self.stats(), failure
