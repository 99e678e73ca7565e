"""Graph validation and ordering: from the nodes a user wired to a checked, sorted list."""

from __future__ import annotations

import graphlib
from collections.abc import Iterable

from videoflow.core.node import ConsumerNode, Node, ProducerNode


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


def sorted_nodes(producers: list[Node], consumers: list[Node]) -> list[Node]:
    """Validate the graph between ``producers`` and ``consumers``; return it topologically sorted.

    Raises ValueError for: not exactly one producer, a cycle, a consumer used as a parent, a node
    that the producer does not reach, a node that leads to no consumer, duplicate names.
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
    if len(producers) != 1:
        raise ValueError(
            f"a flow needs exactly one producer, got {len(producers)}: "
            "multiple producers are not supported yet"
        )
    if not consumers:
        raise ValueError("a flow needs at least one consumer")
    producer = producers[0]

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
                    f"producer {node.name!r} feeds the flow but is not its producer: "
                    "multiple producers are not supported yet"
                )
            raise ValueError(f"node {node.name!r} is not reachable from producer {producer.name!r}")
    for node in forward:
        if node.id not in backward_ids:
            if isinstance(node, ConsumerNode):
                raise ValueError(
                    f"consumer {node.name!r} is reachable from the producer but is not in the "
                    "flow's consumers"
                )
            raise ValueError(f"node {node.name!r} leads to none of the flow's consumers")
    for node in consumers:
        if node.id not in forward_ids:
            raise ValueError(f"consumer {node.name!r} is not reachable from {producer.name!r}")

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
    return [by_id[i] for i in order]
