"""From a sorted list of nodes to the task chain the engine runs.

The chain is linear, as in the original videoflow: stage i receives from link i-1 and sends to
link i. A message carries every upstream output that a later stage still reads, keyed by node
id; a stage drops the outputs it was the last reader of, and their slots go back to their pools.

A stage with nb_tasks = K > 1 is fed through one shared queue by a single sender that numbers
the messages (and keeps at most ``window`` of them in flight); the stage after it reads from a
queue that all K workers send to and puts the messages back in sequence order. Two multi-task
stages in a row get a merge stage between them, a task with no node that does just that.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from videoflow.config import DROP_OLDEST, FlowConfig

PRODUCER, PROCESSOR, CONSUMER, MERGE = "producer", "processor", "consumer", "merge"
GPU = "gpu"


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One node as the engine sees it: the graph layer builds these, in topological order.

    one_task: a processor that can only run as one task (a stateful one); the statistics then
              do not suggest more tasks for it. Producers and consumers are one task anyway.
    realtime_drop: what a full queue in front of this node drops in a REALTIME flow, "oldest"
              or "newest" (None: the flow's ``realtime_drop``).
    every, skip_when_busy: a processor that runs on one message in ``every``, and (REALTIME)
              skips the messages that wait while it is busy, passing its last output on for
              the messages it does not run on (engine/skipping.py).
    """

    node: Any
    name: str
    kind: str
    node_id: int
    reads: tuple[int, ...]
    nb_tasks: int = 1
    device_type: str = "cpu"
    one_task: bool = False
    realtime_drop: str | None = None
    every: int = 1
    skip_when_busy: bool = False


@dataclasses.dataclass(frozen=True)
class Link:
    """The queue between stage ``index`` and stage ``index + 1``.

    drop:           in a REALTIME flow, what its single sender drops when it is full:
                    "oldest" (the queued message, then the new one is sent) or "newest".
    realtime_depth: messages the queue holds in a REALTIME flow (``queue_depth`` in BATCH).
    """

    index: int
    senders: int
    receivers: int
    window: int  # max messages between numbering and merge; 0 when receivers == 1
    counter: int  # index of the merge's progress counter in the control block (-1: none)
    drop: str = DROP_OLDEST
    realtime_depth: int = 4

    def depth(self, realtime: bool, config: FlowConfig) -> int:
        """Messages this link's queue holds in a flow of that type."""
        return self.realtime_depth if realtime else config.queue_depth


def link_policy(receiver: StageSpec, senders: int, config: FlowConfig) -> tuple[str, int]:
    """(drop, realtime_depth) of the link into ``receiver``: its node's ``realtime_drop`` or
    the flow's. A queue that drops the oldest holds ``realtime_depth`` messages, so that a
    node becoming free takes a fresh frame, except in front of a node that skips when busy
    (it must see the messages that wait, to pass them on) and where several senders feed
    it (they never drop: the merge after them would wait for a gap)."""
    drop = receiver.realtime_drop or config.realtime_drop
    fresh = drop == DROP_OLDEST and senders == 1 and not receiver.skip_when_busy
    return drop, config.realtime_depth if fresh else config.queue_depth


@dataclasses.dataclass(frozen=True)
class Stage:
    index: int
    spec: StageSpec
    inbox: Link | None
    outbox: Link | None
    drop_after: tuple[int, ...]  # node ids whose last reader is this stage
    keep_output: bool  # a later stage reads this stage's output
    nslots: int  # slots per pool of each task of this stage


@dataclasses.dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]
    links: tuple[Link, ...]

    @property
    def tasks(self) -> list[tuple[Stage, int]]:
        return [(s, w) for s in self.stages for w in range(s.spec.nb_tasks)]


def build_plan(specs: Sequence[StageSpec], config: FlowConfig) -> Plan:
    """Insert merges, wire links, compute last readers and pool sizes."""
    chain: list[StageSpec] = []
    for spec in specs:
        if chain and chain[-1].nb_tasks > 1 and spec.nb_tasks > 1:
            prev = chain[-1]
            chain.append(StageSpec(None, f"{prev.name}.merge", MERGE, -prev.node_id, ()))
        chain.append(spec)
    if chain[0].nb_tasks != 1 or chain[-1].nb_tasks != 1:
        raise ValueError("the first and the last node of a flow run as a single task")

    last_reader: dict[int, int] = {}
    for i, spec in enumerate(chain):
        for nid in spec.reads:
            last_reader[nid] = i

    depth = max(config.queue_depth, config.realtime_depth)  # the deepest a queue may be
    links = []
    counters = 0
    for i in range(len(chain) - 1):
        receivers = chain[i + 1].nb_tasks
        window = 2 * receivers + depth + config.reorder_window if receivers > 1 else 0
        drop, realtime_depth = link_policy(chain[i + 1], chain[i].nb_tasks, config)
        counter = counters if window else -1
        links.append(Link(i, chain[i].nb_tasks, receivers, window, counter, drop, realtime_depth))
        counters += 1 if window else 0

    stages = []
    for i, spec in enumerate(chain):
        downstream = chain[i + 1 :]
        nslots = (
            2
            + sum(s.nb_tasks for s in downstream)
            + depth * len(downstream)
            + sum(link.window for link in links[i:])
        )
        stages.append(
            Stage(
                index=i,
                spec=spec,
                inbox=links[i - 1] if i > 0 else None,
                outbox=links[i] if i < len(links) else None,
                drop_after=tuple(n for n, last in last_reader.items() if last == i),
                keep_output=spec.node_id in last_reader,
                nslots=nslots,
            )
        )
    return Plan(tuple(stages), tuple(links))


def visible_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists."""
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def assign_gpus(plan: Plan, gpus: list[str]) -> dict[tuple[int, int], str | None]:
    """Give each task of a GPU node its own GPU while they last; None means fall back to CPU."""
    free = list(gpus)
    assignment: dict[tuple[int, int], str | None] = {}
    for stage, worker in plan.tasks:
        if stage.spec.device_type == GPU:
            assignment[(stage.index, worker)] = free.pop(0) if free else None
    return assignment
