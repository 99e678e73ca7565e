"""The bottleneck report: a table of what each node did and a one-line verdict on what to change.

The bottleneck is the node with the lowest capacity, the rate at which it could take messages
with every one of its tasks always busy: ``nb_tasks * messages_in / busy_s``. In a steady batch
run that is also the node with the highest busy fraction; in a realtime run that drops, it is the
node that could not keep up, even when the producer's pacing makes the producer look as busy.
Busy fractions divide by ``nb_tasks * elapsed``, so a node with four workers that are always busy
reads 100 %, not 400 %. A stalled task (its process stopped, or stuck in its node's code) comes
before all that: the flow waits for it, and the counters of the others only show them waiting.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from videoflow.config import available_cpus
from videoflow.engine.stats import FlowStats, FrameAge, JoinStats, NodeStats

SATURATED = 0.5  # below this busy fraction, no node is said to hold the flow back
CPUS_SATURATED = 0.9  # from this share of the CPUs kept busy, the machine is the limit


@dataclasses.dataclass(frozen=True)
class ReportRow:
    """One node's line of the table; fractions are 0..1 (the table shows percents).
    max_fps: the node's capacity (``NodeStats.capacity``), None when it did not run.
    skipped, frame_age: as in ``NodeStats`` (shown below the table)."""

    node: str
    kind: str
    tasks: int
    frames: int
    fps: float
    max_fps: float | None
    busy: float
    wait: float
    blocked: float
    drops: int
    errors: int
    cpu: float = 0.0
    stalled: int = 0  # tasks of the node that are stalled (TaskStats.stalled)
    skipped: int = 0
    frame_age: FrameAge | None = None


@dataclasses.dataclass(frozen=True)
class Report:
    """A bottleneck report. ``str(report)`` is the table followed by the verdict.

    The table shows per node: tasks, frames (messages it received), fps (messages per second
    of the run), max fps (what the node could take with all its tasks always busy),
    busy/wait/blocked percent of its tasks' time, cpu percent (CPU time per task: below busy
    when its tasks wait for a core, above 100 when a task computes on several threads), and
    drops. The summary line adds how many CPUs the flow kept busy; lines below the table give
    the age of the frames each consumer received (p50, p99, max: from their producer to the
    consumer's call) and the messages a processor skipped (``every=``, ``skip_when_busy``).

    bottleneck: the name of the node that holds the flow back (None: nothing flowed, no node
                is busy enough to blame, or a task is stalled). advice: what to do about it,
                one sentence.
    stalled:    the stalled tasks, each as "node (task N): what it is doing, for how long".
    joins:      the counters of every JOIN stage (a flow with several producers): the table
                gets a section per JOIN, one line per input, and names the input it waited
                on most (``waits_on``).
    notes:      ``"node: note"`` lines from ``FlowStats.notes`` (a writer's encoder), printed
                between the table and the verdict.
    """

    rows: tuple[ReportRow, ...]
    bottleneck: str | None
    advice: str
    verdict: str
    produced: int
    delivered: int
    dropped: int
    errors: int
    elapsed_s: float
    running: bool
    cores_busy: float = 0.0
    cpus: int = 1
    stalled: tuple[str, ...] = ()
    joins: tuple[JoinStats, ...] = ()
    notes: tuple[str, ...] = ()

    @classmethod
    def from_stats(cls, stats: FlowStats, cpus: int | None = None) -> Report:
        """Build the report of a snapshot. ``cpus``: CPUs to plan nb_tasks for (default: this
        process's)."""
        rows = tuple(
            ReportRow(
                n.name, n.kind, n.nb_tasks, n.messages_in, n.fps, n.capacity,
                n.busy, n.wait, n.blocked, n.dropped, n.errors, n.cpu,
                sum(t.stalled for t in n.tasks), n.skipped, n.frame_age,
            )
            for n in stats.nodes
        )
        cpus = available_cpus() if cpus is None else cpus
        stalled = tuple(
            f"{t.node} (task {t.task}): {t.doing}, for {t.doing_s:.1f} s"
            for n in stats.nodes for t in n.tasks if t.stalled
        )
        bottleneck, advice = _diagnose(stats, cpus, stalled)
        return cls(
            rows=rows,
            bottleneck=bottleneck,
            advice=advice,
            verdict=_verdict(stats, bottleneck, advice, cpus, stalled),
            produced=stats.produced,
            delivered=stats.delivered,
            dropped=stats.dropped,
            errors=stats.errors,
            elapsed_s=stats.elapsed_s,
            running=stats.running,
            cores_busy=stats.cores_busy,
            cpus=cpus,
            stalled=stalled,
            joins=stats.joins,
            notes=tuple(f"{node}: {note}" for node, note in stats.notes.items()),
        )

    def table(self) -> str:
        """The per-node table, with a summary line above it."""
        fps = self.delivered / self.elapsed_s if self.elapsed_s > 0 else 0.0
        state = "running for" if self.running else "in"
        lines = [
            f"{self.produced} produced, {self.delivered} delivered, {self.dropped} dropped "
            f"{state} {self.elapsed_s:.2f} s ({fps:.1f} fps), "
            f"{self.cores_busy:.1f} of {self.cpus} CPUs busy"
        ]
        width = max([4, *(len(r.node) for r in self.rows)])
        lines.append(
            f"{'node':<{width}}  {'kind':<9} {'tasks':>5} {'frames':>8} {'fps':>9} {'max fps':>9} "
            f"{'busy %':>7} {'cpu %':>7} {'wait %':>7} {'blocked %':>9} {'drops':>7}"
        )
        for r in self.rows:
            lines.append(
                f"{r.node:<{width}}  {r.kind:<9} {r.tasks:>5} {r.frames:>8} {r.fps:>9.1f} "
                f"{_rate(r.max_fps):>9} {100 * r.busy:>7.1f} {100 * r.cpu:>7.1f} "
                f"{100 * r.wait:>7.1f} {100 * r.blocked:>9.1f} {r.drops:>7}"
                + (f"  ({r.errors} failed)" if r.errors else "")
                + (f"  ({r.stalled} stalled)" if r.stalled else "")
            )
        for r in self.rows:
            if r.frame_age is not None:
                age = r.frame_age
                lines.append(
                    f"frame age at {r.node}: p50 {1e3 * age.p50_s:.1f} ms, p99 "
                    f"{1e3 * age.p99_s:.1f} ms, max {1e3 * age.max_s:.1f} ms ({age.frames} frames)"
                )
            if r.skipped:
                lines.append(
                    f"{r.node} passed its last output on for {r.skipped} of {r.frames} messages "
                    "instead of running (every=, skip_when_busy)"
                )
        return "\n".join(lines)

    def join_table(self) -> str:
        """A section per JOIN stage: its policy and sets, then per input what it did with the
        stream's messages, and the input it waited on most ("" without joins)."""
        lines: list[str] = []
        for join in self.joins:
            cpu = 100 * join.cpu_s / self.elapsed_s if self.elapsed_s > 0 else 0.0
            lines.append(
                f"{join.name}: {join.policy}, {join.sets} sets ({join.partial} with an input "
                f"missing), {join.dropped} dropped, cpu {cpu:.1f} %"
            )
            width = max([5, *(len(i.name) for i in join.inputs)])
            lines.append(
                f"  {'input':<{width}}  {'produced':>8} {'dropped':>7} {'received':>8} "
                f"{'used':>8} {'stale':>7} {'unmatched':>9} {'waited s':>8}"
            )
            for i in join.inputs:
                lines.append(
                    f"  {i.name:<{width}}  {i.produced:>8} {i.dropped:>7} {i.received:>8} "
                    f"{i.used:>8} {i.stale:>7} {i.unmatched:>9} {i.waited_s:>8.2f}"
                )
            worst = join.waits_on
            if worst is not None:
                share = f", {100 * worst.waited_s / self.elapsed_s:.0f} % of the run" if (
                    self.elapsed_s > 0
                ) else ""
                lines.append(
                    f"  {join.name} waits on {worst.name} most ({worst.waited_s:.2f} s{share}): "
                    "that stream sets the pace of the joined sets"
                )
        return "\n".join(lines)

    def __str__(self) -> str:
        joins = self.join_table()
        return "\n".join((self.table(), *([joins] if joins else []), *self.notes, self.verdict))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)


def _rate(fps: float | None) -> str:
    if fps is None:
        return "-"
    return f"{fps:.1f}" if fps < 1e6 else ">1e6"


def _diagnose(
    stats: FlowStats, cpus: int, stalled: tuple[str, ...] = ()
) -> tuple[str | None, str]:
    """The bottleneck node's name and the advice, from per-message costs; none when a task
    is stalled (the others' counters then only show them waiting for it)."""
    if stalled:
        return None, (
            f"stalled: {'; '.join(stalled)}. The rest of the flow waits for it: no node is a "
            "bottleneck (flow.stop() ends the flow; flow_options={'stall_timeout': s} fails "
            "a flow that stalls)"
        )
    if stats.elapsed_s <= 0 or stats.produced == 0:
        return None, "nothing flowed: no message went through the flow, nothing to measure"
    measured = [(n.capacity, n) for n in stats.nodes if n.capacity is not None]
    if not measured:
        return None, "no node spent measurable time in its own code"
    measured.sort(key=lambda item: item[0])
    capacity, node = measured[0]
    busiest = max(stats.nodes, key=lambda n: n.busy)
    if busiest.busy < SATURATED and stats.dropped == 0:
        return None, (
            f"no node is saturated (the busiest, {busiest.name}, is busy "
            f"{100 * busiest.busy:.0f}% of the time): the time goes to moving messages "
            "between tasks, or to waiting for the source"
        )
    runner_up = measured[1][0] if len(measured) > 1 else None
    return node.name, _advice(node, capacity, runner_up, cpus, _cpus_saturated(stats, cpus))


def _cpus_saturated(stats: FlowStats, cpus: int) -> bool:
    return stats.cores_busy >= CPUS_SATURATED * cpus


def _advice(
    node: NodeStats, capacity: float, next_capacity: float | None, cpus: int, saturated: bool
) -> str:
    if node.kind == "producer":
        return (
            f"the producer {node.name} sets the pace: make its next() faster (read or decode "
            "less, lower the resolution), or accept the rate of the source"
        )
    if node.kind == "consumer":
        return (
            f"make {node.name}.consume() faster, or move its work into a multi-task processor "
            "before it (a consumer runs as one task)"
        )
    if node.one_task:
        return (
            f"{node.name} runs as one task (a stateful OneTaskProcessorNode): make its process() "
            "faster, or move its stateless work into a multi-task processor before it"
        )
    k = node.nb_tasks
    if saturated:
        return (
            f"make {node.name}.process() cheaper: the CPUs are all busy, so more tasks of "
            f"{node.name} would only take CPU time from the other nodes"
        )
    if k >= cpus:
        return (
            f"{node.name} already has {k} tasks on {cpus} CPUs: make its process() cheaper, or "
            f"raise nb_tasks of {node.name} from {k} to {k + 1} only if it waits on I/O or a GPU"
        )
    want = k + 1
    if next_capacity is not None and math.isfinite(next_capacity):
        want = max(want, math.ceil(k * next_capacity / capacity))
    want = min(want, max(k + 1, cpus))
    return f"raise nb_tasks of {node.name} from {k} to {want}"


def _verdict(
    stats: FlowStats, bottleneck: str | None, advice: str, cpus: int, stalled: tuple[str, ...]
) -> str:
    text = advice if bottleneck is None else f"bottleneck: {bottleneck}: {advice}"
    extra = []
    if _cpus_saturated(stats, cpus) and not stalled:
        extra.append(
            f"the flow kept {stats.cores_busy:.1f} of {cpus} CPUs busy: the machine is the "
            "limit, less work per frame or more cores would help, more tasks would not"
        )
    if stats.dropped and stats.produced:
        extra.append(
            f"{stats.dropped} of {stats.produced} messages "
            f"({100 * stats.dropped / stats.produced:.1f}%) were dropped"
        )
    if stats.errors:
        failed = [n.name for n in stats.nodes if n.errors]
        extra.append(f"the run failed in {', '.join(failed) or 'the engine'}")
    return text + "".join(f"; {e}" for e in extra)
