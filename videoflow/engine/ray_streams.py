"""What the Ray engine's driver tracks, and its streams: each actor (``Task``), each stream of
messages (``Segment``), each JOIN (``Join``), each message in flight (``Message``); and how the
driver builds the streams from the plan, submits the chain of calls of a message, takes in the
messages that come back and pairs them at every JOIN (``Streams``).

The driver loop that waits for the messages and the endings are in engine/ray_engine.py, the
watchdog in engine/ray_watch.py; engine/ray_engine.py's docstring tells the whole design. Ray
is not imported here: the driver passes in the ``ray`` module it imported.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from videoflow.engine.align import Aligner, set_meta
from videoflow.engine.control import DROPPED, IN, OUT, P_CLOSE, P_READY, ROW
from videoflow.engine.plan import (
    CONSUMER,
    JOIN,
    MERGE,
    PRODUCER,
    JoinInput,
    Plan,
    StageSpec,
)
from videoflow.engine.stats import JoinInputStats, JoinStats
from videoflow.errors import FlowError

if TYPE_CHECKING:
    from videoflow.engine.plan import Stage
    from videoflow.engine.ray_actor import ActorInfo, Failure


def default_window(stages: Sequence[StageSpec], realtime: bool, queue_depth: int) -> int:
    """Messages in flight at most in a stream of ``stages`` when RayEngine(window=None).
    BATCH: two per actor plus ``queue_depth``, so that every actor has its next call queued
    behind the one it runs, whatever Ray's latency per call. REALTIME: one per actor plus
    one, so that the slowest actor always has work while a message waits in front of it as
    little as possible (every message in flight is one more frame of latency; the producer
    drops the rest)."""
    actors = sum(s.nb_tasks for s in stages)
    return actors + 1 if realtime else 2 * actors + queue_depth


@dataclasses.dataclass
class Task:
    """One actor: a task of a stage, as the driver tracks it."""

    stage: int
    spec: StageSpec
    worker: int
    handle: Any
    actor_id: str
    info: ActorInfo | None = None
    row: list[int] = dataclasses.field(default_factory=lambda: [0] * ROW)
    submitted: int = 0  # data messages submitted to this actor
    failed: bool = False  # its node raised, or its actor died
    dead: bool = False  # its actor died: nothing more can be asked of it
    control: bool = False  # it has a control thread (a producer, a node that skips when busy)
    ahead: Any = None  # skip_when_busy: its ``ahead`` method, in its control thread
    # What it is doing, as the driver sees it from the calls in flight (ray_watch.Watchdog
    # .observe): a phase of stats.PHASES and the driver's number of the message it holds (-1:
    # none), since when; whether its process is stopped (actors on this machine only), since
    # when.
    phase: int = P_READY
    seq: int = -1
    since: float = 0.0
    stopped: bool = False
    stopped_since: float = 0.0
    source: Task | None = None  # the producer whose take made the message it holds
    close_ref: Any = None  # its close() call, once asked
    closed: bool = False  # ... which returned
    returned: int = 0  # its calls for data messages the driver saw return
    # A producer says what it does itself (NodeActor.look): its row (STATE), for how long,
    # when it said so; and which message each of its latest takes got.
    look: tuple[list[int], float, float] | None = None
    taken: tuple[int, list[int]] = (0, [])

    def counters(self) -> list[int]:
        """Its counter row: as the actor last said, but never below the calls the driver saw
        return (an actor whose close() never returned never sent its final row)."""
        row = list(self.row)
        if not self.closed:
            row[IN] = max(row[IN], self.returned)
            if self.spec.kind != CONSUMER:
                row[OUT] = max(row[OUT], self.returned)
        return row

    @property
    def pending(self) -> bool:
        """It has a call in flight that has not returned (a node call, or its close)."""
        return self.seq >= 0 or self.phase == P_CLOSE

    def looked(self, answer: tuple[list[int], float, int, list[int]]) -> None:
        """Keep what this producer answered to ``look``."""
        row, seconds, first, indices = answer
        self.row, self.taken = row, (first, indices)
        self.look = (row, seconds, time.monotonic())


def control(task: Task, method: str) -> Any:
    """``task``'s actor method ``method`` for a control call: in its control thread (a
    producer's, a skipping node's), in the order of node calls on any other actor."""
    from videoflow.engine.ray_actor import CONTROL

    remote_method = getattr(task.handle, method)
    if task.control:
        return remote_method.options(concurrency_group=CONTROL)
    return remote_method


def fetched(ray: Any, refs: list[Any], timeout: float) -> list[Any]:
    """Fetch and drop the results among ``refs`` ready within ``timeout`` (errors included);
    returns the refs still pending."""
    if not refs:
        return []
    try:
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    except Exception:
        return refs
    for ref in done:
        with contextlib.suppress(Exception):
            ray.get(ref, timeout=0)
    return list(pending)


def failure_error(failure: Failure) -> FlowError:
    """The FlowError for a node that raised in its actor (``failure``: the marker it returned
    in place of a message's metadata, or of its node's opening or closing)."""
    where = " at load" if failure.phase == "load" else f" in {failure.phase}()"
    return FlowError(
        f"node {failure.node!r} (task {failure.task}) raised {failure.type_name}{where}: "
        f"{failure.message}",
        node=failure.node, task=failure.task, remote_traceback=failure.traceback,
    )


@dataclasses.dataclass
class Message:
    """One message in flight: its number in its stream, and every call made for it: (actor,
    result ref, argument refs)."""

    seq: int
    calls: list[tuple[Task, Any, tuple[Any, ...]]]


END: Any = None  # in a stream's queue of messages: the stream has ended
_NONE_PAIR = (None, None)  # the pair of a node whose input is missing from a set


@dataclasses.dataclass
class Join:
    """A JOIN stage, run by the driver: the streams it pairs and its Aligner."""

    name: str
    policy: Any  # the node's Join
    inputs: tuple[JoinInput, ...]
    aligner: Aligner
    sets: int = 0  # sets sent on: the next set's index
    ready: collections.deque[tuple[Any, ...]] = dataclasses.field(
        default_factory=collections.deque)  # sets made, waiting for room after the JOIN
    cpu_ns: int = 0  # the driver's CPU time spent pairing for this JOIN
    feeders: list[Segment] = dataclasses.field(default_factory=list)  # its inputs' streams


@dataclasses.dataclass
class Segment:
    """One producer set's chain (engine/plan.py): the stream of one producer, or of the sets a
    JOIN makes, through the stages of its nodes, submitted by the driver message by message.

    inflight: per message in flight, oldest first, the ref to wait for and what the JOIN after
              it needs: the ref of its last stage's metadata and the refs of the outputs it
              carries (``END`` once the stream has ended, for a JOIN's own stream).
    arrived:  messages of a stream that feeds a JOIN whose metadata came back, not yet offered
              to that JOIN (its buffer for this input is full); ``END`` ends the input.
    """

    index: int
    chain: list[tuple[StageSpec, list[Task]]]  # its nodes' stages and their actors
    parent: int  # the segment whose JOIN it feeds; -1: none, it ends the flow
    input: int  # its input number in that JOIN
    carries: tuple[int, ...]  # node ids that JOIN needs of its messages
    window: int
    join: Join | None = None  # the JOIN at its head (None: it starts with a producer)
    inflight: collections.deque[tuple[Any, Any]] = dataclasses.field(
        default_factory=collections.deque)
    arrived: collections.deque[Any] = dataclasses.field(default_factory=collections.deque)
    seq: int = 0  # messages submitted
    ending: bool = False  # no more messages will be submitted
    ended: bool = False  # its end came back: what is in flight after it is not a message


class Streams:
    """The driver's streams and JOINs: built from the plan, submitted message by message,
    paired at every JOIN. The driver loop (RayEngine._pump) decides when; this says how.

    fail:  records a FlowError and aborts the flow (RayEngine._fail).
    loose: the driver's list of refs whose results nobody fetched yet (RayEngine._settle);
           the ``ahead`` calls to a node that skips when busy go there.
    """

    def __init__(self, fail: Callable[[FlowError], None], loose: list[Any]) -> None:
        self.fail = fail
        self.loose = loose
        self.segments: list[Segment] = []
        self.joins: list[Join] = []
        self.realtime = False
        self.object_ref: Any = object  # ray.ObjectRef, once Ray is imported
        # The messages in flight of every stream, by the ref the driver waits for, in the
        # order they were submitted (ray_watch.Watchdog.observe, RayEngine._settle).
        self.flight: dict[Any, Message] = {}
        self.delivered = 0  # messages that came back to the driver

    def build(self, plan: Plan, tasks: Sequence[Task], realtime: bool, window: int | None,
              queue_depth: int) -> None:
        """The plan's segments as the driver runs them: the nodes of each and their actors (no
        MERGE: an actor runs its calls in submission order), the JOIN at its head, run here
        with the plan's Aligner, and its window (``window``, else ``default_window``)."""
        self.realtime = realtime
        actors: dict[int, list[Task]] = collections.defaultdict(list)
        for task in tasks:
            actors[task.spec.node_id].append(task)
        feeds: dict[int, tuple[int, JoinInput | None]] = {}  # segment -> its input, its JOIN's
        for stage in plan.stages:
            for k, fed in enumerate(stage.join_inputs):
                feeds[plan.stages[fed.stages[0]].segment] = (k, fed)
        for segment in plan.segments:
            head = plan.stages[segment.stages[0]]
            chain = [(plan.stages[i].spec, actors[plan.stages[i].spec.node_id])
                     for i in segment.stages if plan.stages[i].spec.kind not in (MERGE, JOIN)]
            join = None
            if head.spec.kind == JOIN:
                join = Join(head.spec.name, head.spec.join, head.join_inputs, Aligner(
                    head.spec.join, len(head.join_inputs), head.max_pending,
                    names=[inp.name for inp in head.join_inputs],
                ))
                self.joins.append(join)
            k, inp = feeds.get(segment.index, (-1, None))
            size = window or default_window([spec for spec, _ in chain], realtime, queue_depth)
            self.segments.append(Segment(segment.index, chain, segment.parent, k,
                                         inp.carries if inp else (), size, join))
        for seg in sorted(self.segments, key=lambda seg: seg.input):  # in input order
            if seg.parent >= 0:
                parent = self.segments[seg.parent].join
                assert parent is not None
                parent.feeders.append(seg)

    def submit(self, seg: Segment, meta: dict[str, Any] | None = None,
               inputs: Mapping[int, Any] | None = None) -> None:
        """Submit every call of the next message of ``seg``: a take from its producer, or (the
        stream of a JOIN) a set, whose metadata is ``meta`` and whose inputs' outputs are
        ``inputs`` (node id -> the ref of that node's pair).

        Every call returns one (metadata, output) pair. A stage that reads only the previous
        stage gets that pair (``call``); any other gets the previous stage's pair first (the
        metadata it carries on; after a JOIN, the set's metadata itself), then those of its
        other parents, each once, and ``where`` says which pair holds each of its inputs
        (``call_with``). The last stage of a stream that feeds a JOIN also returns its
        metadata as an object of its own (``take_split``, ``call_split``): the driver pairs
        messages by it without fetching their outputs. Every call is noted in the message
        (``flight``), so that the watchdog can tell what each actor is doing."""
        object_ref = self.object_ref
        results: dict[int, Any] = dict(inputs) if inputs else {}
        last: Any = None if meta is None else (meta, None)
        previous: int | None = None
        tail = len(seg.chain) - 1 if seg.parent >= 0 else -1
        meta_ref: Any = None
        calls: list[tuple[Task, Any, tuple[Any, ...]]] = []
        for pos, (spec, actors) in enumerate(seg.chain):
            task = actors[seg.seq % len(actors)]
            number = task.submitted
            task.submitted += 1
            split = pos == tail
            args: list[Any] = [last]
            if spec.kind == PRODUCER:
                args = []
                last = (task.handle.take_split if split else task.handle.take).remote()
            elif spec.reads == (previous,) and not split and task.ahead is None:
                last = task.handle.call.remote(last)
            else:
                for node_id in spec.reads:
                    if not any(a is results[node_id] for a in args):
                        args.append(results[node_id])
                where = tuple(next(j for j, a in enumerate(args) if a is results[node_id])
                              for node_id in spec.reads)
                method = task.handle.call_split if split else task.handle.call_with
                if task.ahead is None:
                    last = method.remote(where, *args)
                else:  # skip_when_busy: the call says its number (ray_actor.NodeActor.ahead)
                    last = method.remote(where, *args, number=number)
            if split:
                meta_ref, last = last
            refs = tuple(a for a in args if isinstance(a, object_ref))
            calls.append((task, last, refs))
            if task.ahead is not None:  # skip_when_busy: what this call waits for
                self.loose.append(task.ahead.remote(number, list(refs)))
            results[spec.node_id] = last
            previous = spec.node_id
        self.flight[meta_ref if tail >= 0 else last] = Message(seg.seq, calls)
        seg.seq += 1
        if tail >= 0:
            seg.inflight.append((meta_ref, {n: results[n] for n in seg.carries}))
        else:
            seg.inflight.append((last, None))

    def came_back(self, seg: Segment, meta: Any) -> bool:
        """The oldest message in flight of ``seg`` came back with ``meta``: its metadata, None
        at the end of the stream, or a Failure (False: the flow has failed)."""
        ref, carried = seg.inflight.popleft()
        message = self.flight.pop(ref, None)  # every call of it has returned (chained)
        if seg.ended:  # taken after the end: not a message
            return True
        self.delivered += 1
        if isinstance(meta, dict) and message is not None:
            for task, _, _ in message.calls:
                task.returned += 1
        if meta is None:
            seg.ended = seg.ending = True
            if seg.parent >= 0:
                seg.arrived.append(END)
            return True
        if not isinstance(meta, dict):
            self.fail(failure_error(meta))
            return False
        if seg.parent >= 0:
            seg.arrived.append((meta, carried))
        return True

    def pair(self, poll: float) -> float | None:
        """Let every JOIN take the messages that came back from its inputs, and send on the
        sets it makes while there is room after it. Returns how long the driver may wait for
        messages before a JOIN's deadline (``poll`` at most); None when pairing failed.

        BATCH offers a JOIN nothing while the stream after it is full: its inputs' messages
        wait here, their streams' windows fill up and their producers wait, so nothing is
        lost. REALTIME offers every message at once: ``Join.latest`` keeps the newest of each
        input and counts the one it replaces as stale."""
        timeout = poll
        for seg in self.segments:
            join = seg.join
            if join is None:
                continue
            t0 = time.thread_time_ns()
            aligner = join.aligner
            room = len(seg.inflight) < seg.window and not join.ready
            if room or self.realtime:
                for k, feeder in enumerate(join.feeders):
                    arrived = feeder.arrived
                    while arrived:
                        item = arrived[0]
                        if item is END:
                            arrived.popleft()
                            aligner.end(k)
                        elif not aligner.wants(k):
                            break
                        else:
                            arrived.popleft()
                            try:
                                aligner.offer(k, item, item[0].get("timestamp_ms"))
                            except Exception as exc:
                                self.fail(FlowError(
                                    f"node {join.name!r} (task 0) raised {type(exc).__name__} "
                                    f"while pairing its inputs: {exc}",
                                    node=join.name, task=0,
                                    remote_traceback=traceback.format_exc(),
                                ))
                                return None
            if room:
                join.ready.extend(aligner.poll())
            join.cpu_ns += time.thread_time_ns() - t0
            while join.ready and len(seg.inflight) < seg.window:
                self._send(seg, join, join.ready.popleft())
            if aligner.done and not join.ready and not seg.ending:
                seg.ending = True
                seg.inflight.append((END, None))
            deadline = aligner.deadline()
            # While the stream after it is full, no set can go: nothing is due before room.
            if deadline is not None and len(seg.inflight) < seg.window:
                timeout = min(timeout, max(0.0, deadline - aligner.clock()))
        return timeout

    def _send(self, seg: Segment, join: Join, group: tuple[Any, ...]) -> None:
        """Send a set on through the JOIN's stream: the metadata of its messages merged as the
        process engine's JOIN merges them, the outputs each input carries (None for an input
        missing from the set)."""
        metas = [None if item is None else item[0] for item in group]
        meta = set_meta([inp.sources for inp in join.inputs], metas, join.sets)
        join.sets += 1
        inputs: dict[int, Any] = {}
        for inp, item in zip(join.inputs, group, strict=True):
            if item is None:
                for node_id in inp.carries:
                    inputs[node_id] = _NONE_PAIR
            else:
                inputs.update(item[1])
        self.submit(seg, meta, inputs)

    def join_stats(self, stages: Sequence[Stage], tasks: Sequence[Task]
                   ) -> tuple[JoinStats, ...]:
        """The JoinStats of every JOIN, as the process engine counts them: from its Aligner,
        and from the counters of the actors of each input's stream (``tasks``; ``stages``: the
        plan's). A JOIN run by the driver never drops a set (it sends sets on only when there
        is room after it)."""

        def total(index: int, field: int) -> int:
            node_id = stages[index].spec.node_id
            return sum(t.row[field] for t in tasks if t.spec.node_id == node_id)

        out = []
        for join in self.joins:
            inputs = []
            for inp, feeder, counts in zip(join.inputs, join.feeders, join.aligner.counts(),
                                           strict=True):
                head = feeder.join  # an inner JOIN: the sets it made
                inputs.append(JoinInputStats(
                    name=inp.name,
                    produced=head.sets if head is not None else total(inp.stages[0], IN),
                    dropped=sum(total(i, DROPPED) for i in inp.stages
                                if stages[i].spec.kind not in (MERGE, JOIN)),
                    received=counts.received, used=counts.used, stale=counts.stale,
                    unmatched=counts.unmatched, buffered=counts.buffered,
                    waited_s=counts.waited_s,
                ))
            out.append(JoinStats(
                name=join.name, policy=repr(join.policy), sets=join.sets,
                partial=join.aligner.partial, dropped=0, inputs=tuple(inputs),
                cpu_s=join.cpu_ns / 1e9,
            ))
        return tuple(out)
