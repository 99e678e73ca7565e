"""From a sorted list of nodes to the task chains the engine runs.

A flow with one producer is one linear chain, as in the original videoflow: each stage receives
from the link before it and sends to the link after it. A message carries every upstream output
that a later stage still reads, keyed by node id; a stage drops the outputs it was the last
reader of, and their slots go back to their pools.

A stage with nb_tasks = K > 1 is fed through one shared queue by a single sender that numbers
the messages (and keeps at most ``window`` of them in flight); the stage after it reads from a
queue that all K workers send to and puts the messages back in sequence order. Two multi-task
stages in a row get a merge stage between them, a task with no node that does just that.

With several producers, the nodes are grouped by *producer set* (the producers whose streams
reach a node): one *segment* per set, each a chain as above. A segment of several producers
starts with a JOIN stage (a task with no node) that has one inbox per segment feeding it and
pairs their messages by the join policy. Producer sets must nest (two sets are disjoint or one
holds the other), so that every segment feeds exactly one later segment, the smallest set that
holds it: the segments form a forest whose roots end in consumers (docs/architecture.md, Joins).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from videoflow.config import DROP_OLDEST, FlowConfig

PRODUCER, PROCESSOR, CONSUMER, MERGE, JOIN = "producer", "processor", "consumer", "merge", "join"
GPU = "gpu"


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One node as the engine sees it: the graph layer builds these, in topological order.

    one_task:   a processor that can only run as one task (a stateful one); the statistics then
                do not suggest more tasks for it. Producers and consumers are one task anyway.
    realtime_drop: what a full queue in front of this node drops in a REALTIME flow, "oldest"
                or "newest" (None: the flow's ``realtime_drop``).
    every, skip_when_busy: a processor that runs on one message in ``every``, and (REALTIME)
                skips the messages that wait while it is busy, passing its last output on for
                the messages it does not run on (engine/skipping.py).
    items:      per read, the item of that parent's output the node takes (``node[i]``), or
                None for the whole output; empty: the whole output of every parent.
    read_names: the parents' names, in ``reads`` order (for errors about items).
    join:       on a node where streams of several producers first meet, the policy that
                pairs them (a ``videoflow.core.Join``; the engine reads only its fields).
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
    items: tuple[int | None, ...] = ()
    read_names: tuple[str, ...] = ()
    join: Any = None

    def select_items(self, inputs: list[Any]) -> list[Any]:
        """``node[i]``: replace each input read as an item of its parent's output by that item
        (None stays None: a JOIN sent the set without that input). No task and no copy: the
        item is the very object the parent's output holds."""
        for k, item in enumerate(self.items):
            value = inputs[k]
            if item is None or value is None:
                continue
            parent = self.read_names[k] if k < len(self.read_names) else f"input {k}"
            if not isinstance(value, (tuple, list)):
                raise TypeError(
                    f"node {self.name!r} reads {parent}[{item}], but {parent!r} returned a "
                    f"{type(value).__name__}, not a tuple or list: node[i] takes item i of a "
                    "node's tuple or list output"
                )
            if item >= len(value):
                raise IndexError(
                    f"node {self.name!r} reads {parent}[{item}], but {parent!r} returned "
                    f"{len(value)} items"
                )
            inputs[k] = value[item]
        return inputs


@dataclasses.dataclass(frozen=True)
class Link:
    """A queue between stages: within a chain, or from a segment's tail to a JOIN's inbox.

    counter:        the control-block counter of the numbered run this link belongs to: the
                    link into K workers (``window`` > 0, its sender waits on the counter) and
                    the link out of them (``senders`` > 1, its receiver, the merge, advances
                    it); -1 elsewhere.
    join:           the index of the JOIN stage this link is an inbox of (its sender rings the
                    JOIN's doorbell after each put); -1 for a link within a chain.
    drop:           in a REALTIME flow, what its single sender drops when it is full:
                    "oldest" (the queued message, then the new one is sent) or "newest".
    realtime_depth: messages the queue holds in a REALTIME flow (``queue_depth`` in BATCH).
    """

    index: int
    senders: int
    receivers: int
    window: int  # max messages between numbering and merge; 0 when receivers == 1
    counter: int
    join: int = -1
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
class JoinInput:
    """One stream a JOIN pairs: the segment that feeds its inbox.

    name:    the stream in words, its producers' names joined by "+" ("cam1", "cam1+cam2").
    sources: those producers' names.
    carries: the node ids its messages bring into the JOIN: a set sent without this input
             gives a reader of one of them None.
    stages:  the indices of the stages of its segment (where its drops are counted); the first
             one makes its messages (a producer, or the JOIN of an inner join).
    """

    name: str
    sources: tuple[str, ...]
    carries: tuple[int, ...]
    stages: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Stage:
    index: int
    spec: StageSpec
    inbox: Link | None
    outbox: Link | None
    drop_after: tuple[int, ...]  # node ids whose last reader is this stage
    keep_output: bool  # a later stage reads this stage's output
    nslots: int  # slots per pool of each task of this stage
    segment: int = 0  # the segment (index in Plan.segments) this stage belongs to
    inboxes: tuple[Link, ...] = ()  # a JOIN's inboxes, one per input (``inbox`` is None)
    join_inputs: tuple[JoinInput, ...] = ()  # a JOIN's inputs, in inbox order
    max_pending: int = 0  # a JOIN: messages it may buffer per input


@dataclasses.dataclass(frozen=True)
class Segment:
    """The chain of one producer set: its stages in order and the segment it feeds (-1: none,
    it ends in consumers)."""

    index: int
    sources: tuple[str, ...]  # the names of its producers
    stages: tuple[int, ...]
    parent: int


@dataclasses.dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]
    links: tuple[Link, ...]
    segments: tuple[Segment, ...] = ()

    @property
    def tasks(self) -> list[tuple[Stage, int]]:
        return [(s, w) for s in self.stages for w in range(s.spec.nb_tasks)]

    @property
    def window_counters(self) -> int:
        """Control-block counters the numbered runs need (one per link into K workers)."""
        return sum(1 for link in self.links if link.window)


def producer_sets(specs: Sequence[StageSpec]) -> dict[int, frozenset[int]]:
    """The producers whose streams reach each node, by node id (``specs`` sorted)."""
    sets: dict[int, frozenset[int]] = {}
    for spec in specs:
        if spec.kind == PRODUCER:
            sets[spec.node_id] = frozenset((spec.node_id,))
        else:
            sets[spec.node_id] = frozenset().union(*(sets[r] for r in spec.reads))
    return sets


def _segment_specs(
    specs: Sequence[StageSpec],
) -> tuple[list[frozenset[int]], dict[frozenset[int], list[StageSpec]], dict[frozenset[int], int]]:
    """Group ``specs`` by producer set: the sets in the order their first node comes, the
    nodes of each, and the set each feeds (its index, -1 for a root). Refuses sets that
    overlap without one holding the other."""
    sets = producer_sets(specs)
    groups: dict[frozenset[int], list[StageSpec]] = {}
    for spec in specs:
        groups.setdefault(sets[spec.node_id], []).append(spec)
    order = list(groups)
    names = {s.node_id: s.name for s in specs if s.kind == PRODUCER}

    def words(group: frozenset[int]) -> str:
        return ", ".join(repr(names[p]) for p in sorted(group, key=list(names).index))

    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            if a & b and not (a <= b or b <= a):
                raise ValueError(
                    f"the streams of {words(a)} meet at node {groups[a][0].name!r} and those "
                    f"of {words(b)} at node {groups[b][0].name!r}: they share "
                    f"{words(a & b)} without one set holding the other, and a stream can feed "
                    "only one join for now; join all of them at one node instead"
                )
    parent: dict[frozenset[int], int] = {}
    for group in order:
        holders = [g for g in order if group < g]
        parent[group] = order.index(min(holders, key=len)) if holders else -1
    return order, groups, parent


def _join_policy(group: list[StageSpec]) -> Any:
    policy = next((s.join for s in group if s.join is not None), None)
    if policy is None:
        raise ValueError(
            f"node {group[0].name!r} joins the streams of several producers but its StageSpec "
            "has no join policy (the graph layer resolves one for every join point)"
        )
    return policy


def build_plan(specs: Sequence[StageSpec], config: FlowConfig) -> Plan:
    """Cut the graph into segments, put a JOIN in front of every segment of several
    producers, insert merges, wire links, compute last readers and pool sizes."""
    order, groups, parent_of = _segment_specs(specs)
    names = {s.node_id: s.name for s in specs if s.kind == PRODUCER}
    pending = config.join_pending or config.queue_depth + 2

    # The stages, segment by segment; every chain as the single-producer chain always was.
    chain: list[StageSpec] = []
    seg_stages: list[list[int]] = []
    for group in order:
        members = groups[group]
        mine: list[int] = []
        if len(group) > 1:
            first = members[0]
            chain.append(
                StageSpec(None, f"{first.name}.join", JOIN, -first.node_id, (),
                          join=_join_policy(members))
            )
            mine.append(len(chain) - 1)
        for spec in members:
            prev = chain[mine[-1]] if mine else None
            if prev is not None and prev.nb_tasks > 1 and spec.nb_tasks > 1:
                chain.append(StageSpec(None, f"{prev.name}.merge", MERGE, -prev.node_id, ()))
                mine.append(len(chain) - 1)
            chain.append(spec)
            mine.append(len(chain) - 1)
        tail = chain[mine[-1]]
        if tail.nb_tasks > 1:
            if parent_of[group] < 0:
                raise ValueError("the first and the last node of a flow run as a single task")
            chain.append(StageSpec(None, f"{tail.name}.merge", MERGE, -tail.node_id, ()))
            mine.append(len(chain) - 1)
        if chain[mine[0]].nb_tasks != 1:
            raise ValueError("the first and the last node of a flow run as a single task")
        seg_stages.append(mine)
    segment_of = {i: k for k, mine in enumerate(seg_stages) for i in mine}
    parents = [parent_of[g] for g in order]
    # A JOIN's inputs come in the order of its first join point's parents: det(cam1, cam2)
    # has cam1's stream first. Each parent's producer set lies within exactly one input.
    sets = producer_sets(specs)

    def rank(k: int) -> int:
        point = groups[order[parents[k]]][0]
        return min(j for j, r in enumerate(point.reads) if sets[r] <= order[k])

    feeders = sorted((k for k in range(len(order)) if parents[k] >= 0), key=rank)

    # The path of a message from each stage to the end of its root segment.
    def path(i: int) -> list[int]:
        k = segment_of[i]
        mine = seg_stages[k]
        out = mine[mine.index(i) :]
        while parents[k] >= 0:
            k = parents[k]
            out += seg_stages[k]
        return out

    stage_of = {spec.node_id: i for i, spec in enumerate(chain) if spec.kind not in (MERGE, JOIN)}
    last_reader: dict[int, int] = {}
    for nid, at in stage_of.items():
        readers = [i for i in path(at) if nid in chain[i].reads]
        if readers:
            last_reader[nid] = readers[-1]  # the path is in order: the last one reads last
    for i, spec in enumerate(chain):
        for nid in spec.reads:
            if nid not in last_reader or i not in path(stage_of[nid]):
                raise ValueError(f"node {spec.name!r} reads node {nid} that no path brings")

    # Links: along each chain, then from each non-root tail into its parent's JOIN.
    depth = max(config.queue_depth, config.realtime_depth)  # the deepest a queue may be
    links: list[Link] = []
    inbox: dict[int, Link] = {}
    outbox: dict[int, Link] = {}
    inboxes: dict[int, list[Link]] = {}
    counters = 0
    for mine in seg_stages:
        for a, b in itertools.pairwise(mine):
            receivers = chain[b].nb_tasks
            if receivers > 1:
                window = 2 * receivers + depth + config.reorder_window
                counter, counters = counters, counters + 1
            else:
                window = 0
                counter = inbox[a].counter if chain[a].nb_tasks > 1 else -1
            drop, realtime_depth = link_policy(chain[b], chain[a].nb_tasks, config)
            link = Link(len(links), chain[a].nb_tasks, receivers, window, counter,
                        drop=drop, realtime_depth=realtime_depth)
            links.append(link)
            outbox[a] = inbox[b] = link
    for k in feeders:
        join = seg_stages[parents[k]][0]
        drop, realtime_depth = link_policy(chain[join], 1, config)
        link = Link(len(links), 1, 1, 0, -1, join=join, drop=drop,
                    realtime_depth=realtime_depth)
        links.append(link)
        outbox[seg_stages[k][-1]] = link
        inboxes.setdefault(join, []).append(link)

    # The inputs of every JOIN, in inbox order (children segments in flow order).
    def subtree(k: int) -> list[int]:
        out = list(seg_stages[k])
        for c, p in enumerate(parents):
            if p == k:
                out += subtree(c)
        return out

    join_inputs: dict[int, list[JoinInput]] = {}
    for k in feeders:
        group = order[k]
        inside = set(subtree(k))
        carries = tuple(
            nid for nid, last in last_reader.items()
            if stage_of[nid] in inside and last not in inside
        )
        sources = tuple(names[p] for p in sorted(group, key=list(names).index))
        join_inputs.setdefault(seg_stages[parents[k]][0], []).append(
            JoinInput("+".join(sources), sources, carries, tuple(seg_stages[k]))
        )

    stages = []
    for i, spec in enumerate(chain):
        after = path(i)[1:]
        route = [outbox[j] for j in path(i)[:-1]]  # the links a message of this stage crosses
        nslots = (
            2
            + sum(chain[j].nb_tasks for j in after)
            + depth * len(after)
            + sum(link.window for link in route)
            + pending * sum(1 for j in after if chain[j].kind == JOIN)
        )
        stages.append(
            Stage(
                index=i,
                spec=spec,
                inbox=inbox.get(i),
                outbox=outbox.get(i),
                drop_after=tuple(n for n, last in last_reader.items() if last == i),
                keep_output=spec.node_id in last_reader,
                nslots=nslots,
                segment=segment_of[i],
                inboxes=tuple(inboxes.get(i, ())),
                join_inputs=tuple(join_inputs.get(i, ())),
                max_pending=pending if spec.kind == JOIN else 0,
            )
        )
    segments = tuple(
        Segment(k, tuple(names[p] for p in sorted(g, key=list(names).index)),
                tuple(seg_stages[k]), parents[k])
        for k, g in enumerate(order)
    )
    return Plan(tuple(stages), tuple(links), segments)


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
