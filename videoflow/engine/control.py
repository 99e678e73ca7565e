"""The flow's control block: its layout, and who writes and who reads each entry.

The owner of a flow (engine/runner.py) creates one shared array of int64, anonymous
(``RawArray("q", layout.size)``), before it starts the tasks; every task process gets it as an
argument and keeps it mapped until it exits. It carries the flow's flags, the counters of its
numbered runs, one counter row per task and one block per JOIN stage. ``ControlLayout.of(plan)``
says where each of them starts; nothing else computes an offset into the block.

Layout, in entries (8 bytes each)::

    0                 flags: STOP, ABORT, GO                                      FLAGS entries
    FLAGS             window counters, one per numbered run (Link.counter)       layout.counters
    layout.rows_at    one row per task, stage after stage, worker after worker   ROW each
                        the named counters FIELDS (IN ... AGE_MAX_NS), then
                        AGE_BUCKETS frame-age histogram counters from AGE_AT
    layout.joins_at   one block per JOIN stage, in stage order:                  JoinBlock.size
                        JOIN_BELL, JOIN_PARTIAL, then one JOIN_ROW per input
                        (J_RECEIVED ... J_WAITED_NS)
    layout.size

Protocol. Every entry has one writer, so no entry needs a lock: a reader sees either the old
or the new value of an aligned 8-byte store, never a mix, and a counter may be one message
behind when the owner reads it.

- STOP: the owner sets it (``stop()``); a producer reads it before each ``next()`` and ends its
  stream, a node may read it (``TaskContext.stopping``). The owner also sends a waiting
  producer a signal, since a flag cannot interrupt ``next()``.
- ABORT: the owner sets it (``abort()``, the first failure, a timeout); every task reads it at
  each check of its lifeline, which every wait reaches within ``poll_interval``, and leaves.
- GO: the owner sets it once every task has reported "ready"; tasks wait for it after opening
  their node, so that no message moves before every node is open.
- Window counter of a numbered run (the K workers of a multi-task node between a numbering
  sender and the merge after them): the merge writes the next sequence number it will hand
  out; the numbering sender reads it and sends message ``n`` only while
  ``n - counter < Link.window``, which bounds the merge's reorder buffer.
- A task's row: written by that task only (plain stores, a few per message), read by the
  owner at any time (``Flow.stats()``, the monitor). ``STATE`` holds what the task is doing,
  ``message * PHASE_SPAN + phase`` (``PHASES``): the task stores it when its phase changes, the
  owner's monitor reads it to tell a task stuck in its node's code from one waiting for its
  neighbours. A consumer counts the age of each frame it gets in its histogram
  (``record_age``).
- A JOIN block: ``JOIN_BELL`` is the doorbell of the native path (transport/doorbell.py): the
  senders into the JOIN's inboxes add to it atomically, the JOIN futex-waits on it (unused on
  the pure-Python path, which rings a pipe). ``JOIN_PARTIAL`` and the per-input rows are written
  by the JOIN task (every 50 ms and at its end) and read by the owner.

The Ray engine has no shared block: each actor keeps a row of its own with the same fields and
the driver asks for it; ``ControlLayout.pack`` lays those rows out as a block, so that one
function (``FlowStats.from_block``) makes the snapshot for both engines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from videoflow.engine.plan import JOIN

if TYPE_CHECKING:
    from videoflow.engine.plan import JoinInput, Plan, StageSpec

# Flags at the start of the control block.
STOP, ABORT, GO = 0, 1, 2
FLAGS = 3

# A task's row: the named counters, then the frame-age histogram (AGE_BUCKETS).
FIELDS = (
    "messages_in", "messages_out", "dropped", "busy_ns", "wait_ns", "blocked_ns", "cpu_ns",
    "reconnects", "offline_ns", "state", "skipped", "age_frames", "age_sum_ns", "age_max_ns",
)  # fmt: skip
(
    IN, OUT, DROPPED, BUSY_NS, WAIT_NS, BLOCKED_NS, CPU_NS, RECONNECTS, OFFLINE_NS, STATE,
    SKIPPED, AGE_FRAMES, AGE_SUM_NS, AGE_MAX_NS,
) = range(len(FIELDS))  # fmt: skip

# Frame age: how old a message's frame is when a consumer is called on it, from the time its
# producer made it: ``meta[PRODUCED_NS]``, time.perf_counter_ns() when next() returned (the
# task stamps it unless the producer set it; CLOCK_MONOTONIC on Linux, so comparable between
# the processes of a machine). Each consumer task counts the ages it sees in a histogram of
# AGE_BUCKETS counters at the end of its row: 4 buckets per octave of microseconds (bucket
# i >= 4 holds [(4 + i % 4) << (i // 4 - 1), (5 + i % 4) << (i // 4 - 1)) us), from 0 to 33 s;
# the last bucket also takes anything older.
PRODUCED_NS = "produced_ns"
AGE_BUCKETS = 96
AGE_AT = len(FIELDS)
ROW = AGE_AT + AGE_BUCKETS

# A JOIN stage's block: its doorbell, the sets it sent with some input missing, then one row
# per input (its own task row has the rest).
JOIN_BELL, JOIN_PARTIAL = 0, 1
JOIN_HEAD = 2
JOIN_FIELDS = ("received", "used", "stale", "unmatched", "buffered", "waited_ns")
J_RECEIVED, J_USED, J_STALE, J_UNMATCHED, J_BUFFERED, J_WAITED_NS = range(len(JOIN_FIELDS))
JOIN_ROW = len(JOIN_FIELDS)


def age_bucket(age_ns: int) -> int:
    """The histogram bucket of an age in nanoseconds."""
    us = age_ns // 1000
    if us < 4:
        return max(us, 0)
    e = us.bit_length() - 1
    return min(4 * (e - 1) + ((us >> (e - 2)) & 3), AGE_BUCKETS - 1)


def age_bucket_bounds(i: int) -> tuple[float, float]:
    """(lowest, highest) age in seconds that bucket ``i`` holds."""
    if i < 4:
        return i * 1e-6, (i + 1) * 1e-6
    shift = i // 4 - 1
    return ((4 + i % 4) << shift) * 1e-6, ((5 + i % 4) << shift) * 1e-6


def record_age(control: Any, row: int, age_ns: int) -> None:
    """Count one frame of age ``age_ns`` in the task row at ``row`` (its only writer)."""
    age_ns = max(age_ns, 0)
    control[row + AGE_FRAMES] += 1
    control[row + AGE_SUM_NS] += age_ns
    if age_ns > control[row + AGE_MAX_NS]:
        control[row + AGE_MAX_NS] = age_ns
    control[row + AGE_AT + age_bucket(age_ns)] += 1


# What a task is doing, in its STATE counter: ``message * PHASE_SPAN + phase``, where message
# is the index of the message in hand (-1: none). A task stores it when its phase changes: twice
# per message (before and after its node's call), so that the owner can tell a task stuck in
# its node's code from one waiting for its neighbours, and name the message it holds.
PHASES = (
    "start", "load", "open", "ready", "next", "process", "consume", "between", "finish",
    "close", "ended",
)
(
    P_START, P_LOAD, P_OPEN, P_READY, P_NEXT, P_PROCESS, P_CONSUME, P_BETWEEN, P_FINISH,
    P_CLOSE, P_ENDED,
) = range(len(PHASES))
PHASE_SPAN = 16
# The phases in which a task runs its node's code and can be stuck there, for the stall
# watchdog, stop deadlines and "for N s" in what it is doing. Not open(): loading a model may
# rightly take minutes, and the flow has not started meanwhile.
IN_NODE_CODE = frozenset({P_NEXT, P_PROCESS, P_CONSUME, P_CLOSE})


def state_phase(state: int) -> tuple[int, int]:
    """(phase, message index or -1) from a STATE counter."""
    message, phase = divmod(state, PHASE_SPAN)
    return phase, message


def describe_state(kind: str, row: Sequence[int]) -> str:
    """What the task whose counter row is ``row`` is doing, in words: "in process() holding
    message 34", "waiting for input", "sending message 12", ..."""
    phase, message = state_phase(row[STATE])
    held = f" message {message}" if message >= 0 else ""
    if phase == P_NEXT:
        return f"in next() (making message {message})"
    if phase in (P_PROCESS, P_CONSUME):
        return f"in {PHASES[phase]}() holding{held}"
    if phase == P_BETWEEN and kind == "join":
        return "pairing its inputs' messages (or waiting for them, or for room downstream)"
    if phase == P_BETWEEN:
        holding = kind != "consumer" and row[IN] > row[OUT] + row[DROPPED]
        if holding:
            return f"sending{held} (the next queue is full)"
        return "between two next() calls" if kind == "producer" else "waiting for input"
    return {
        P_START: "starting (opening its queues)",
        P_LOAD: "unpickling its node",
        P_OPEN: "in open()",
        P_READY: "waiting for the other tasks to open their nodes",
        P_FINISH: "passing the end of the stream on (the next queue is full)",
        P_CLOSE: "in close()",
        P_ENDED: "ended",
    }.get(phase, f"in phase {phase}")


@dataclasses.dataclass(frozen=True)
class StageRows:
    """Where the rows of one stage's tasks are, and which window counters its tasks use.

    index:          the stage's index in the plan (its position in ``ControlLayout.stages``).
    first:          the task number of its worker 0 (tasks are numbered stage after stage).
    at:             the block index of worker 0's row; worker w's starts ``w * ROW`` later.
    inbox_counter:  the window counter its tasks advance as the merge of a numbered run
                    (-1: its inbox has one sender).
    outbox_counter: the window counter its tasks wait on as the numbering sender of a numbered
                    run (-1: its outbox feeds one task).
    """

    index: int
    spec: StageSpec
    first: int
    at: int
    inbox_counter: int = -1
    outbox_counter: int = -1

    def row(self, worker: int) -> int:
        """The block index where the row of task ``worker`` of this stage starts."""
        if not 0 <= worker < self.spec.nb_tasks:
            raise IndexError(f"stage {self.spec.name!r} has no task {worker}")
        return self.at + ROW * worker


@dataclasses.dataclass(frozen=True)
class JoinBlock:
    """The block of one JOIN stage: its doorbell, its partial-set count, a row per input."""

    stage: int  # the JOIN stage's index in the plan
    at: int
    inputs: tuple[JoinInput, ...]

    @property
    def size(self) -> int:
        return JOIN_HEAD + JOIN_ROW * len(self.inputs)

    @property
    def bell(self) -> int:
        return self.at + JOIN_BELL

    @property
    def partial(self) -> int:
        return self.at + JOIN_PARTIAL

    def input_at(self, i: int) -> int:
        """The block index where the row of input ``i`` starts."""
        if not 0 <= i < len(self.inputs):
            raise IndexError(f"this JOIN has {len(self.inputs)} inputs, not {i + 1}")
        return self.at + JOIN_HEAD + JOIN_ROW * i


@dataclasses.dataclass(frozen=True)
class ControlLayout:
    """Where everything sits in a flow's control block (see the module's docstring)."""

    counters: int
    stages: tuple[StageRows, ...]
    joins: tuple[JoinBlock, ...]

    @classmethod
    def of(cls, plan: Plan) -> ControlLayout:
        """The layout of ``plan``'s block: its flags, its window counters (one per numbered
        run), a row per task and a block per JOIN."""
        counters = plan.window_counters
        inbox_counter: dict[int, int] = {}
        outbox_counter: dict[int, int] = {}
        for stage in plan.stages:
            inbox, outbox = stage.inbox, stage.outbox
            if inbox is not None and inbox.senders > 1:
                inbox_counter[stage.index] = _counter_at(inbox.counter, counters)
            if outbox is not None and outbox.window:
                outbox_counter[stage.index] = _counter_at(outbox.counter, counters)
        return cls._build(
            [s.spec for s in plan.stages], counters, inbox_counter, outbox_counter,
            {s.index: s.join_inputs for s in plan.stages if s.spec.kind == JOIN},
        )

    @classmethod
    def of_specs(cls, specs: Sequence[StageSpec]) -> ControlLayout:
        """The layout of a chain of ``specs`` with no numbered run and no JOIN: the rows of an
        engine whose tasks count apart (the Ray engine), for ``pack``."""
        joins = [s.name for s in specs if s.kind == JOIN]
        if joins:
            raise ValueError(f"of_specs() lays out no JOIN stage ({', '.join(joins)}): "
                             "use ControlLayout.of(plan)")
        return cls._build(list(specs), 0, {}, {}, {})

    @classmethod
    def _build(
        cls, specs: Sequence[StageSpec], counters: int, inbox_counter: Mapping[int, int],
        outbox_counter: Mapping[int, int], join_inputs: Mapping[int, tuple[JoinInput, ...]],
    ) -> ControlLayout:
        stages = []
        first = 0
        rows_at = FLAGS + counters
        for index, spec in enumerate(specs):
            stages.append(
                StageRows(
                    index, spec, first, rows_at + ROW * first,
                    inbox_counter.get(index, -1), outbox_counter.get(index, -1),
                )
            )
            first += spec.nb_tasks
        joins = []
        at = rows_at + ROW * first
        for index, inputs in sorted(join_inputs.items()):
            block = JoinBlock(index, at, inputs)
            joins.append(block)
            at += block.size
        return cls(counters, tuple(stages), tuple(joins))

    @property
    def rows_at(self) -> int:
        """Where the first task's row starts (after the flags and the window counters)."""
        return FLAGS + self.counters

    @property
    def tasks(self) -> int:
        """Tasks with a row: every worker of every stage."""
        return sum(s.spec.nb_tasks for s in self.stages)

    @property
    def joins_at(self) -> int:
        """Where the first JOIN block starts (after the last task's row)."""
        return self.rows_at + ROW * self.tasks

    @property
    def size(self) -> int:
        """Entries in the block."""
        return self.joins_at + sum(j.size for j in self.joins)

    def row(self, stage: int, worker: int) -> int:
        """The block index where the row of task ``worker`` of stage ``stage`` starts."""
        return self.stages[stage].row(worker)

    def rows(self) -> Iterator[tuple[StageRows, int, int]]:
        """(stage, worker, row start) of every task, in task order."""
        for stage in self.stages:
            for worker in range(stage.spec.nb_tasks):
                yield stage, worker, stage.at + ROW * worker

    def join(self, stage: int) -> JoinBlock:
        """The block of the JOIN stage ``stage`` (its index in the plan)."""
        for block in self.joins:
            if block.stage == stage:
                return block
        raise KeyError(f"stage {stage} is not a JOIN stage")

    def total(self, block: Sequence[int], stage: int, field: int) -> int:
        """Counter ``field`` summed over the tasks of stage ``stage``, read from ``block``."""
        rows = self.stages[stage]
        return sum(block[rows.at + ROW * w + field] for w in range(rows.spec.nb_tasks))

    def pack(self, rows: Mapping[tuple[int, int], Sequence[int]]) -> list[int]:
        """A block made of rows kept apart, by (stage index, worker); a task without a row
        reads as zeros. For an engine with no shared block (the Ray engine)."""
        block = [0] * self.size
        for stage, worker, at in self.rows():
            row = rows.get((stage.index, worker))
            if row is not None:
                block[at : at + ROW] = row
        return block


def _counter_at(counter: int, counters: int) -> int:
    if not 0 <= counter < counters:
        raise ValueError(f"link counter {counter} is outside the plan's {counters} counters")
    return FLAGS + counter
