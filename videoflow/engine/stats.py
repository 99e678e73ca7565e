"""The snapshot ``Flow.stats()`` returns, and how it is made from a flow's control block.

Every task counts what it does in its row of the flow's control block (engine/control.py says
where each row is and who writes what); the owner reads the block at any time, so counting
costs a task a few memory stores per message and needs no message of its own. Everything else
in a snapshot (elapsed time, errors, queue and slot-pool occupancy, what a task is doing in
words) is read by the owner when the snapshot is taken and handed to ``FlowStats.from_block``,
and costs the tasks nothing. This module knows the control block's layout, not the report:
engine/report.py imports the snapshot, never the other way round.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from videoflow.engine.control import (
    AGE_AT,
    AGE_BUCKETS,
    AGE_FRAMES,
    AGE_MAX_NS,
    AGE_SUM_NS,
    BLOCKED_NS,
    BUSY_NS,
    CPU_NS,
    DROPPED,
    IN,
    J_BUFFERED,
    J_RECEIVED,
    J_STALE,
    J_UNMATCHED,
    J_USED,
    J_WAITED_NS,
    OFFLINE_NS,
    OUT,
    RECONNECTS,
    ROW,
    SKIPPED,
    WAIT_NS,
    ControlLayout,
    JoinBlock,
    StageRows,
    age_bucket_bounds,
)
from videoflow.engine.plan import JOIN, MERGE, PROCESSOR, PRODUCER

# What the owner knows of a task beyond its row, for TaskStats: (doing, doing_s, stalled),
# from the task's stage, its worker number and its row.
TaskDoing = Callable[[StageRows, int, Sequence[int]], tuple[str, float, bool]]


@dataclasses.dataclass(frozen=True)
class FrameAge:
    """How old the frames a consumer received were, from the moment their producer made them
    (``meta["produced_ns"]``) to the call of the consumer on them: the latency a viewer sees.

    frames:  frames counted; mean_s, max_s: their mean and largest age in seconds.
    p50_s, p99_s: the median and 99th percentile, from the histogram (within a few percent).
    buckets: frames per histogram bucket (``engine.control.age_bucket_bounds(i)`` gives
             bucket i's range), for exporters; trailing empty buckets are left out.
    """

    frames: int
    mean_s: float
    p50_s: float
    p99_s: float
    max_s: float
    buckets: tuple[int, ...]

    @classmethod
    def from_counts(cls, frames: int, sum_ns: int, max_ns: int, buckets: list[int]) -> FrameAge:
        while buckets and not buckets[-1]:
            buckets = buckets[:-1]
        return cls(
            frames=frames,
            mean_s=sum_ns / frames / 1e9 if frames else 0.0,
            p50_s=_quantile(buckets, 0.5, max_ns / 1e9),
            p99_s=_quantile(buckets, 0.99, max_ns / 1e9),
            max_s=max_ns / 1e9,
            buckets=tuple(buckets),
        )

    @classmethod
    def merge(cls, ages: list[FrameAge]) -> FrameAge | None:
        """The ages of several tasks as one (None when there are none)."""
        if not ages:
            return None
        width = max(len(a.buckets) for a in ages)
        buckets = [sum(a.buckets[i] for a in ages if i < len(a.buckets)) for i in range(width)]
        frames = sum(a.frames for a in ages)
        total_ns = round(sum(a.mean_s * a.frames for a in ages) * 1e9)
        return cls.from_counts(frames, total_ns, round(max(a.max_s for a in ages) * 1e9), buckets)


def _quantile(buckets: list[int], q: float, max_s: float) -> float:
    """The ``q`` quantile of a histogram, interpolated within its bucket (capped at the
    largest value seen)."""
    total = sum(buckets)
    if not total:
        return 0.0
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            low, high = age_bucket_bounds(i)
            return min(low + (high - low) * (rank - seen) / count, max_s)
        seen += count
    return max_s

def _share(seconds: float, tasks: int, elapsed_s: float) -> float:
    """``seconds`` as a fraction of ``tasks`` x ``elapsed_s`` (0.0 when nothing has elapsed)."""
    capacity = tasks * elapsed_s
    return seconds / capacity if capacity > 0 else 0.0


class _Rates:
    """Rates derived from the counters of a task or of a node (``workers`` tasks)."""

    messages_in: int
    busy_s: float
    wait_s: float
    blocked_s: float
    cpu_s: float
    elapsed_s: float

    @property
    def workers(self) -> int:
        return 1

    @property
    def fps(self) -> float:
        """Messages received per second of the run."""
        return self.messages_in / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def busy(self) -> float:
        """Fraction of the run spent in the node's code, per task (0..1)."""
        return _share(self.busy_s, self.workers, self.elapsed_s)

    @property
    def wait(self) -> float:
        """Fraction of the run spent waiting for input, per task (0..1)."""
        return _share(self.wait_s, self.workers, self.elapsed_s)

    @property
    def blocked(self) -> float:
        """Fraction of the run spent waiting for room downstream, per task (0..1)."""
        return _share(self.blocked_s, self.workers, self.elapsed_s)

    @property
    def cpu(self) -> float:
        """CPU time used per task, as a fraction of the run: below ``busy`` when the node's tasks
        wait for a CPU (more runnable threads than cores); above 1 when a task computes on
        several threads (OpenCV's pool, a decoder's threads)."""
        return _share(self.cpu_s, self.workers, self.elapsed_s)

    def _rates(self) -> dict[str, float]:
        return {
            "fps": self.fps, "busy": self.busy, "wait": self.wait, "blocked": self.blocked,
            "cpu": self.cpu,
        }


@dataclasses.dataclass(frozen=True)
class TaskStats(_Rates):
    """Counters of one task (one worker of a node).

    messages_in/out, dropped, busy_s, wait_s, blocked_s, cpu_s: as in :class:`NodeStats`, for
                   this task.
    errors:        1 when this task failed (its node raised, or its process died), else 0.
    reconnects, offline_s, skipped, frame_age: as in :class:`NodeStats`, for this task.
    slots_in_use:  slots of this task's shared-memory pools taken now (None: no pool, or the
                   flow has ended and its pools are gone: see ``FlowStats.pool_slots_in_use``).
    elapsed_s:     seconds the flow has run (the same for every task of a snapshot).
    doing:         what the task is doing, in words ("in process() holding message 34",
                   "waiting for input", "ended"); doing_s: for how long, as far as the owner saw.
    stalled:       the task holds the flow up: its process is stopped (SIGSTOP, a debugger),
                   or it has been in its node's code far longer than its calls usually take
                   (at least ``stall_timeout``, or 2 s when that is off).
    """

    node: str
    task: int
    messages_in: int
    messages_out: int
    dropped: int
    busy_s: float
    wait_s: float
    blocked_s: float
    errors: int = 0
    slots_in_use: int | None = None
    cpu_s: float = 0.0
    elapsed_s: float = 0.0
    reconnects: int = 0
    offline_s: float = 0.0
    doing: str = ""
    doing_s: float = 0.0
    stalled: bool = False
    skipped: int = 0
    frame_age: FrameAge | None = None

    def to_dict(self) -> dict[str, Any]:
        """Fields and derived rates, JSON-ready."""
        return {**dataclasses.asdict(self), **self._rates()}

    @classmethod
    def from_row(
        cls, node: str, task: int, row: Sequence[int], *, errors: int = 0,
        slots_in_use: int | None = None, elapsed_s: float = 0.0, doing: str = "",
        doing_s: float = 0.0, stalled: bool = False,
    ) -> TaskStats:
        """The counters of task ``task`` of ``node`` from its row of the control block
        (engine/control.py FIELDS), with what the owner knows of it besides."""
        return cls(
            node, task, row[IN], row[OUT], row[DROPPED],
            row[BUSY_NS] / 1e9, row[WAIT_NS] / 1e9, row[BLOCKED_NS] / 1e9,
            errors=errors, slots_in_use=slots_in_use, cpu_s=row[CPU_NS] / 1e9,
            elapsed_s=elapsed_s, reconnects=row[RECONNECTS], offline_s=row[OFFLINE_NS] / 1e9,
            doing=doing, doing_s=doing_s, stalled=stalled, skipped=row[SKIPPED],
            frame_age=FrameAge.from_counts(
                row[AGE_FRAMES], row[AGE_SUM_NS], row[AGE_MAX_NS],
                list(row[AGE_AT : AGE_AT + AGE_BUCKETS]),
            ) if row[AGE_FRAMES] else None,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class NodeStats(_Rates):
    """Counters of a node, summed over its tasks.

    messages_in:  messages the node received (for a producer: values it produced).
    messages_out: messages it passed downstream (a consumer passes none).
    dropped:      messages it dropped because the next queue was full (realtime only): the
                  new one, or one it had sent that still waited in that queue.
    errors:       tasks of this node that failed.
    busy_s:       seconds spent in the node's own code, summed over tasks.
    wait_s:       seconds spent waiting for input; blocked_s: waiting for room downstream.
    cpu_s:        CPU seconds its task processes used since the flow started (all their
                  threads, user and system), summed over tasks; updated every 50 ms or so.
    inbox_queued: messages waiting in the node's input queue now (None: a producer, or the
                  flow has ended).
    slots_in_use: slots of the node's shared-memory pools taken now, summed over its tasks.
    reconnects:   times a live source (a stream or camera reader) was lost and opened again.
    offline_s:    seconds such a source was away, summed over its reconnects.
    skipped:      messages a processor passed its last output on for instead of running on
                  them (``every=``, ``skip_when_busy=``); they are in messages_in and out too.
    frame_age:    of a consumer, how old the frames it received were (:class:`FrameAge`);
                  None for other nodes, and before a frame arrived.
    one_task:     the node can only run as one task (a producer, a consumer, a stateful
                  ``OneTaskProcessorNode``): raising nb_tasks is not a remedy for it.
    elapsed_s:    seconds the flow has run.

    The fractions ``busy``, ``wait`` and ``blocked`` divide by ``nb_tasks * elapsed_s``, so they
    stay between 0 and 1 for a node with several workers: ``busy`` near 1 means every worker of
    the node was always busy.
    """

    name: str
    kind: str
    nb_tasks: int
    messages_in: int
    messages_out: int
    dropped: int
    busy_s: float
    wait_s: float
    blocked_s: float
    tasks: tuple[TaskStats, ...]
    errors: int = 0
    inbox_queued: int | None = None
    slots_in_use: int | None = None
    one_task: bool = False
    cpu_s: float = 0.0
    elapsed_s: float = 0.0
    reconnects: int = 0
    offline_s: float = 0.0
    skipped: int = 0
    frame_age: FrameAge | None = None

    @classmethod
    def from_tasks(
        cls, name: str, kind: str, tasks: Sequence[TaskStats], *,
        inbox_queued: int | None = None, one_task: bool = False, elapsed_s: float = 0.0,
    ) -> NodeStats:
        """The counters of a node, summed over its tasks' counters."""
        slots = [t.slots_in_use for t in tasks if t.slots_in_use is not None]
        return cls(
            name=name,
            kind=kind,
            nb_tasks=len(tasks),
            messages_in=sum(t.messages_in for t in tasks),
            messages_out=sum(t.messages_out for t in tasks),
            dropped=sum(t.dropped for t in tasks),
            busy_s=sum(t.busy_s for t in tasks),
            wait_s=sum(t.wait_s for t in tasks),
            blocked_s=sum(t.blocked_s for t in tasks),
            tasks=tuple(tasks),
            errors=sum(t.errors for t in tasks),
            inbox_queued=inbox_queued,
            slots_in_use=sum(slots) if slots else None,
            one_task=one_task,
            cpu_s=sum(t.cpu_s for t in tasks),
            elapsed_s=elapsed_s,
            reconnects=sum(t.reconnects for t in tasks),
            offline_s=sum(t.offline_s for t in tasks),
            skipped=sum(t.skipped for t in tasks),
            frame_age=FrameAge.merge([t.frame_age for t in tasks if t.frame_age is not None]),
        )

    @property
    def workers(self) -> int:
        return self.nb_tasks

    @property
    def capacity(self) -> float | None:
        """Messages per second the node could take with every task always busy, estimated from
        its time per message; None before it has handled any message."""
        if self.messages_in == 0 or self.busy_s <= 0:
            return None
        return self.nb_tasks * self.messages_in / self.busy_s

    def to_dict(self) -> dict[str, Any]:
        """Fields and derived rates, JSON-ready."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["tasks"] = [t.to_dict() for t in self.tasks]
        if self.frame_age is not None:
            fields["frame_age"] = dataclasses.asdict(self.frame_age)
        return {**fields, **self._rates(), "capacity": self.capacity}


@dataclasses.dataclass(frozen=True)
class JoinInputStats:
    """One input of a JOIN stage: the stream that feeds it, and what the JOIN did with it.

    name:      the stream, its producers' names joined by "+".
    produced:  messages the stream's first stage made (its producer's values, or the sets of
               an inner JOIN).
    dropped:   messages of the stream dropped before they reached the JOIN (realtime only:
               a full queue in the stream's own segment).
    received:  messages the JOIN took from the stream's inbox; of those, ``used`` went out in
               a set, ``stale`` were replaced by a newer one or came too late for their set,
               ``unmatched`` found no partner (a stream ended, ``Join.time`` dropped them, or
               the flow was aborted), ``buffered`` wait in the JOIN now.
    waited_s:  seconds sets were held back waiting for this input.

    Once the flow has ended normally, ``produced == received + dropped`` and
    ``received == used + stale + unmatched``.
    """

    name: str
    produced: int
    dropped: int
    received: int
    used: int
    stale: int
    unmatched: int
    buffered: int
    waited_s: float


@dataclasses.dataclass(frozen=True)
class JoinStats:
    """Counters of a JOIN stage (a task with no node in front of the node where streams of
    several producers meet).

    name:     the stage's name, ``<first join point>.join``.
    policy:   the join policy in words, e.g. ``Join.latest(timeout_ms=40, min_inputs=1)``.
    sets:     sets of messages it sent on; ``partial`` of them lacked some input (None).
    dropped:  sets dropped because the queue after it was full (realtime only).
    inputs:   one entry per joined stream, in the order of the join point's parents.
    cpu_s:    CPU seconds the JOIN task used.
    """

    name: str
    policy: str
    sets: int
    partial: int
    dropped: int
    inputs: tuple[JoinInputStats, ...]
    cpu_s: float = 0.0
    wait_s: float = 0.0

    @classmethod
    def from_block(cls, block: Sequence[int], layout: ControlLayout, join: JoinBlock) -> JoinStats:
        """The counters of the JOIN whose block is ``join``, from a copy of the control block:
        its own block, its task's row, and the rows of the stages of each input's stream."""
        stage = layout.stages[join.stage]
        inputs = []
        for i, inp in enumerate(join.inputs):
            head = layout.stages[inp.stages[0]]
            if head.spec.kind == PRODUCER:
                made = layout.total(block, head.index, IN)
            else:  # an inner JOIN: the sets it made
                made = sum(layout.total(block, head.index, f) for f in (OUT, DROPPED))
            at = join.input_at(i)
            inputs.append(
                JoinInputStats(
                    name=inp.name,
                    produced=made,
                    dropped=sum(layout.total(block, s, DROPPED) for s in inp.stages),
                    received=block[at + J_RECEIVED],
                    used=block[at + J_USED],
                    stale=block[at + J_STALE],
                    unmatched=block[at + J_UNMATCHED],
                    buffered=block[at + J_BUFFERED],
                    waited_s=block[at + J_WAITED_NS] / 1e9,
                )
            )
        return cls(
            name=stage.spec.name,
            policy=repr(stage.spec.join),
            sets=layout.total(block, stage.index, OUT),
            partial=block[join.partial],
            dropped=layout.total(block, stage.index, DROPPED),
            inputs=tuple(inputs),
            cpu_s=layout.total(block, stage.index, CPU_NS) / 1e9,
            wait_s=layout.total(block, stage.index, WAIT_NS) / 1e9,
        )

    @property
    def waits_on(self) -> JoinInputStats | None:
        """The input the JOIN waited on most (None while no set has waited)."""
        worst = max(self.inputs, key=lambda i: i.waited_s, default=None)
        return worst if worst is not None and worst.waited_s > 0 else None


@dataclasses.dataclass(frozen=True)
class FlowStats:
    """A snapshot of a flow's counters; valid while it runs and after ``join()``.

    produced:  values the producers made (``produced_by`` has them per producer);
    delivered: messages the last consumer received; dropped: messages dropped anywhere. In a
    flow with one producer: produced == delivered + dropped once the flow has ended (for
    flows with one consumer at the end of the chain). With several producers, ``joins`` has
    the counts of every JOIN stage, per input.
    errors:    tasks that failed.
    elapsed_s: seconds from the moment every task was ready to the end of the last task (or
               to now, while the flow runs); 0.0 before it started.
    pool_slots_in_use: slots still taken at the end of the run, 0 whatever the ending (None
               while it runs); anything else is a leak.
    slots_reclaimed: slots that tasks killed by a signal held when they died, which the owner
               gave back once every task had ended (0 unless a task was killed).
    notes:     per node name, what the node says about how it runs (the line its
               ``report_note()`` returns, such as the encoder a video writer chose), from the
               node objects in the flow's owner; the report prints them under the table.
    """

    nodes: tuple[NodeStats, ...]
    produced: int
    delivered: int
    dropped: int
    running: bool
    pool_slots_in_use: int | None = None
    slots_reclaimed: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    joins: tuple[JoinStats, ...] = ()
    notes: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_block(
        cls, block: Sequence[int], layout: ControlLayout, *, running: bool,
        elapsed_s: float = 0.0, errors: Mapping[tuple[str, int], int] | None = None,
        slots: Mapping[tuple[int, int], int] | None = None, doing: TaskDoing | None = None,
        inbox_queued: Callable[[StageRows], int | None] | None = None,
        pool_slots_in_use: int | None = None, slots_reclaimed: int = 0,
    ) -> FlowStats:
        """The snapshot of a flow from a copy of its control block laid out as ``layout``,
        and what its engine knows besides:

        errors:       failures per (node name, task), from the engine's errors.
        slots:        slots in use now per (stage index, worker) (None: no pools to read).
        doing:        (doing, doing_s, stalled) of a task, from its stage, worker and row
                      (None: nothing is said of what the tasks do).
        inbox_queued: messages waiting in a stage's inbox now (None: not known).
        pool_slots_in_use, slots_reclaimed: as in the fields of the same names.

        MERGE and JOIN stages are no node: their drops count in ``dropped``, and each JOIN's
        counters make a :class:`JoinStats`.
        """
        failed = errors or {}
        nodes: list[NodeStats] = []
        dropped = 0
        for stage in layout.stages:
            spec = stage.spec
            tasks = []
            for worker in range(spec.nb_tasks):
                at = stage.at + ROW * worker
                row = block[at : at + ROW]
                said, said_s, stalled = doing(stage, worker, row) if doing else ("", 0.0, False)
                tasks.append(
                    TaskStats.from_row(
                        spec.name, worker, row,
                        errors=failed.get((spec.name, worker), 0),
                        slots_in_use=slots.get((stage.index, worker)) if slots else None,
                        elapsed_s=elapsed_s, doing=said, doing_s=said_s, stalled=stalled,
                    )
                )
            dropped += sum(t.dropped for t in tasks)
            if spec.kind not in (MERGE, JOIN):
                nodes.append(
                    NodeStats.from_tasks(
                        spec.name, spec.kind, tasks,
                        inbox_queued=inbox_queued(stage) if inbox_queued else None,
                        one_task=spec.kind != PROCESSOR or spec.one_task,
                        elapsed_s=elapsed_s,
                    )
                )
        return cls(
            nodes=tuple(nodes),
            produced=sum(n.messages_in for n in nodes if n.kind == PRODUCER),
            delivered=nodes[-1].messages_in if nodes else 0,
            dropped=dropped,
            running=running,
            pool_slots_in_use=pool_slots_in_use,
            slots_reclaimed=slots_reclaimed,
            errors=sum(failed.values()),
            elapsed_s=elapsed_s,
            joins=tuple(JoinStats.from_block(block, layout, j) for j in layout.joins),
        )

    @property
    def produced_by(self) -> dict[str, int]:
        """Values each producer made, by producer name."""
        return {n.name: n.messages_in for n in self.nodes if n.kind == "producer"}

    def join(self, name: str | None = None) -> JoinStats:
        """The counters of the JOIN stage ``name`` (or of the only one)."""
        if name is None and len(self.joins) == 1:
            return self.joins[0]
        for stats in self.joins:
            if stats.name == name:
                return stats
        known = ", ".join(repr(j.name) for j in self.joins) or "none"
        raise KeyError(f"no JOIN stage named {name!r} in this flow (its JOIN stages: {known})")

    @property
    def fps(self) -> float:
        """Messages delivered to the last node per second of the run."""
        return self.delivered / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_s(self) -> float:
        """CPU seconds used by every task of the flow (nodes and JOIN stages)."""
        return sum(n.cpu_s for n in self.nodes) + sum(j.cpu_s for j in self.joins)

    @property
    def cores_busy(self) -> float:
        """CPUs the flow's tasks kept busy on average: ``cpu_s / elapsed_s``."""
        return self.cpu_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def node(self, name: str) -> NodeStats:
        for stats in self.nodes:
            if stats.name == name:
                return stats
        raise KeyError(f"no node named {name!r} in this flow")

    def to_dict(self) -> dict[str, Any]:
        """Fields and derived rates, JSON-ready (``json.dumps(stats.to_dict())`` works)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["nodes"] = [n.to_dict() for n in self.nodes]
        fields["joins"] = [dataclasses.asdict(j) for j in self.joins]
        return {**fields, "fps": self.fps, "cpu_s": self.cpu_s, "cores_busy": self.cores_busy}


