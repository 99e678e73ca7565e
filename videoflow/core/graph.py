"""Graph validation and ordering: from the nodes a user wired to a checked, sorted list.

With several producers, every node has a *producer set*: the producers whose streams reach it.
A node whose set no single parent carries is a *join point*: streams of different producers
first meet there, and a JOIN stage pairs their messages by the node's ``join=`` policy (the flow
type's default without one). ``join=`` anywhere else is an error.
"""

from __future__ import annotations

import graphlib
import logging
from collections.abc import Iterable

from videoflow.core.join import Join
from videoflow.core.node import ConsumerNode, Node, ProducerNode

log = logging.getLogger(__name__)

ProducerSet = frozenset[int]  # ids of the producers whose streams reach a node


def _walk(start: Iterable[Node], step: str) -> list[Node]:
    seen: dict[int, Node] = {}
    stack = list(start)
    while stack:
        node = stack.pop()
        if node.id in seen:
            continue
        seen[node.id] = node
        stack.extend(getattr(node, step))
    return list(seen.values())


def _producer_names(producers: Iterable[Node]) -> str:
    names = [repr(p.name) for p in producers]
    return ("producer " if len(names) == 1 else "producers ") + ", ".join(names)


def sorted_nodes(producers: list[Node], consumers: list[Node]) -> list[Node]:
    """Validate the graph between ``producers`` and ``consumers``; return it topologically sorted.

    Raises ValueError for: no producer, a producer or consumer listed twice, a cycle, a consumer
    used as a parent, a node that no listed producer reaches, a producer feeding the flow that is
    not listed, a node that leads to no consumer, duplicate names, and ``join=`` on a node that is
    not a join point (or join points of the same streams with different policies).
    """
    if not isinstance(producers, (list, tuple)) or not isinstance(consumers, (list, tuple)):
        raise TypeError("Flow takes a list of producers and a list of consumers")
    for node in producers:
        if not isinstance(node, ProducerNode):
            raise ValueError(f"{node!r} is given as a producer but is not a ProducerNode")
    for node in consumers:
        if not isinstance(node, ConsumerNode):
            raise ValueError(f"{node!r} is given as a consumer but is not a ConsumerNode")
    if not producers:
        raise ValueError(
            "a flow needs a producer, got none: pass the node that starts the flow first, "
            "as in Flow([producer], [consumer])"
        )
    if not consumers:
        raise ValueError("a flow needs at least one consumer")
    if len({p.id for p in producers}) != len(producers):
        raise ValueError("a producer is listed twice in the flow's producers")
    sources = _producer_names(producers)

    backward = _walk(consumers, "parents")
    forward = _walk(producers, "children")
    backward_ids = {n.id for n in backward}
    forward_ids = {n.id for n in forward}
    consumer_ids = {n.id for n in consumers}

    for node in backward + forward:
        if isinstance(node, ConsumerNode) and node.children:
            raise ValueError(
                f"consumer {node.name!r} is used as a parent of {node.children[0].name!r}: "
                "consumers end a branch"
            )
    for node in backward:
        if node.id not in forward_ids:
            if isinstance(node, ProducerNode):
                raise ValueError(
                    f"producer {node.name!r} feeds the flow but is not in its producers: "
                    "add it to the list given to Flow"
                )
            raise ValueError(f"node {node.name!r} is not reachable from {sources}")
    for node in forward:
        if node.id not in backward_ids:
            if isinstance(node, ConsumerNode):
                raise ValueError(
                    f"consumer {node.name!r} is reachable from {sources} but is not in the "
                    "flow's consumers"
                )
            raise ValueError(f"node {node.name!r} leads to none of the flow's consumers")
    for node in consumers:
        if node.id not in forward_ids:
            raise ValueError(f"consumer {node.name!r} is not reachable from {sources}")

    names: dict[str, Node] = {}
    for node in forward:
        if node.name in names:
            raise ValueError(f"two nodes of the flow are named {node.name!r}: names must be unique")
        names[node.name] = node

    by_id = {n.id: n for n in forward}
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for node in sorted(forward, key=lambda n: n.id):
        sorter.add(node.id, *(p.id for p in node.parents))
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(by_id[i].name for i in exc.args[1])
        raise ValueError(f"the flow has a cycle: {cycle}") from None
    if len(consumer_ids) != len(consumers):
        raise ValueError("a consumer is listed twice in the flow's consumers")
    nodes = [by_id[i] for i in order]
    _check_joins(nodes)
    return nodes


def producer_sets(nodes: list[Node]) -> dict[int, ProducerSet]:
    """The producers that reach each node, by node id (``nodes`` topologically sorted)."""
    sets: dict[int, ProducerSet] = {}
    for node in nodes:
        if isinstance(node, ProducerNode):
            sets[node.id] = frozenset((node.id,))
        else:
            sets[node.id] = frozenset().union(*(sets[p.id] for p in node.parents))
    return sets


def join_points(nodes: list[Node]) -> dict[ProducerSet, list[Node]]:
    """The nodes where streams of different producers first meet, grouped by producer set,
    in topological order: those whose producer set no single parent carries."""
    sets = producer_sets(nodes)
    points: dict[ProducerSet, list[Node]] = {}
    for node in nodes:
        mine = sets[node.id]
        if node.parents and all(sets[p.id] != mine for p in node.parents):
            points.setdefault(mine, []).append(node)
    return points


def join_inputs(nodes: list[Node], joined: ProducerSet) -> list[ProducerSet]:
    """The streams a JOIN of ``joined`` pairs: the largest producer sets of the flow strictly
    inside it, in the order their first producer appears in ``nodes``. They are disjoint when
    the flow's producer sets nest (the engine plans only such flows: docs/architecture.md)."""
    inner = {s for s in producer_sets(nodes).values() if s < joined}
    largest = [s for s in inner if not any(s < other for other in inner)]
    first = {n.id: i for i, n in enumerate(nodes)}
    return sorted(largest, key=lambda s: min(first[p] for p in s))


def _describe(nodes: list[Node], streams: list[ProducerSet]) -> str:
    """The joined streams in words: "'cam1' and 'cam2'", "'cam1' + 'cam2' and 'cam3'"."""
    parts = [
        " + ".join(repr(n.name) for n in nodes if n.id in stream)  # in flow order
        for stream in streams
    ]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def _check_joins(nodes: list[Node]) -> None:
    """``join=`` only on join points, one policy per set of joined streams, and a
    ``min_inputs`` the streams can meet."""
    sets = producer_sets(nodes)
    points = join_points(nodes)
    at_point = {n.id for group in points.values() for n in group}
    for node in nodes:
        join = node.join_policy
        if join is None or node.id in at_point:
            continue
        mine = sets[node.id]
        if len(mine) == 1:
            where = f"all its inputs come from {_producer_names(p for p in nodes if p.id in mine)}"
        else:
            carrier = next(p for p in node.parents if sets[p.id] == mine)
            first = points[mine][0]
            where = (
                f"its parent {carrier.name!r} already carries every stream it reads "
                f"(they first meet at {first.name!r})"
            )
        raise ValueError(
            f"node {node.name!r} has join={join!r} but {where}: join= belongs only on a node "
            "where streams of different producers first meet"
        )
    for joined, group in points.items():
        given = [n for n in group if n.join_policy is not None]
        streams = join_inputs(nodes, joined)
        for node in given[1:]:
            if node.join_policy != given[0].join_policy:
                raise ValueError(
                    f"nodes {given[0].name!r} and {node.name!r} both join the streams of "
                    f"{_describe(nodes, streams)} with different policies "
                    f"({given[0].join_policy!r} and {node.join_policy!r}): those streams meet "
                    "in one JOIN stage, so give join= on one of them"
                )
        join = given[0].join_policy if given else None
        if join is not None and join.min_inputs > len(streams):
            raise ValueError(
                f"node {given[0].name!r} joins {len(streams)} streams "
                f"({_describe(nodes, streams)}) but its {join!r} asks for "
                f"min_inputs={join.min_inputs}"
            )


def resolve_joins(nodes: list[Node], flow_type: str) -> dict[int, Join]:
    """The join policy of every join point, by node id: the one given with ``join=``, or the
    flow type's default (logged, so that a user sees which rule pairs the streams)."""
    resolved: dict[int, Join] = {}
    for joined, group in join_points(nodes).items():
        given = next((n.join_policy for n in group if n.join_policy is not None), None)
        join = given if given is not None else Join.default_for(flow_type)
        if given is None:
            log.info(
                "the streams of %s meet at node %r, which has no join=: the %s default %r "
                "pairs them (give join=Join.seq(), Join.time(...) or Join.latest(...) to choose)",
                _describe(nodes, join_inputs(nodes, joined)), group[0].name, flow_type, join,
            )
        for node in group:
            resolved[node.id] = join
    return resolved
