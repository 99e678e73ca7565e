"""Counters of a running flow and the snapshot ``Flow.stats()`` returns.

Every task owns one row of int64 counters in the flow's control block, a shared array created
by the flow's owner: the task is the only writer of its row, the owner reads it at any time, so
counting costs a few memory stores per message and needs no message of its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Flags at the start of the control block.
STOP, ABORT, GO = 0, 1, 2
FLAGS = 3

# Per-task counter row.
FIELDS = ("messages_in", "messages_out", "dropped", "busy_ns", "wait_ns", "blocked_ns")
IN, OUT, DROPPED, BUSY_NS, WAIT_NS, BLOCKED_NS = range(len(FIELDS))
ROW = len(FIELDS)


@dataclasses.dataclass(frozen=True)
class TaskStats:
    """Counters of one task (one worker of a node)."""

    node: str
    task: int
    messages_in: int
    messages_out: int
    dropped: int
    busy_s: float
    wait_s: float
    blocked_s: float


@dataclasses.dataclass(frozen=True)
class NodeStats:
    """Counters of a node, summed over its tasks.

    messages_in:  messages the node received (for a producer: values it produced).
    messages_out: messages it passed downstream (a consumer passes none).
    dropped:      messages it dropped because the next queue was full (realtime only).
    busy_s:       seconds spent in the node's own code, summed over tasks.
    wait_s:       seconds spent waiting for input; blocked_s: waiting for room downstream.
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FlowStats:
    """A snapshot of a flow's counters; valid while it runs and after ``join()``.

    produced:  values the producer made; delivered: messages the last consumer received;
    dropped:   messages dropped anywhere. In every flow: produced == delivered + dropped
    once the flow has ended (for flows with one consumer at the end of the chain).
    pool_slots_in_use: slots still taken at the end of the run (0 after a normal end).
    """

    nodes: tuple[NodeStats, ...]
    produced: int
    delivered: int
    dropped: int
    running: bool
    pool_slots_in_use: int | None = None

    def node(self, name: str) -> NodeStats:
        for stats in self.nodes:
            if stats.name == name:
                return stats
        raise KeyError(f"no node named {name!r} in this flow")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def task_stats(node: str, task: int, row: list[int]) -> TaskStats:
    return TaskStats(
        node, task, row[IN], row[OUT], row[DROPPED],
        row[BUSY_NS] / 1e9, row[WAIT_NS] / 1e9, row[BLOCKED_NS] / 1e9,
    )


def node_stats(name: str, kind: str, tasks: list[TaskStats]) -> NodeStats:
    return NodeStats(
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
    )
