"""Property: a batch flow over any graph gives what a single-process evaluation gives.

Hypothesis draws DAGs with one producer, up to 6 processors (1 or 2 parents each, nb_tasks 1
to 3, with or without a delay, int or array outputs) and one consumer reading every node that
has no child. The flow's output must equal the reference: the same functions called in
topological order in this process. Each example starts processes (~0.5 s), hence few examples.
"""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nodes import MixConsumer, MixProcessor, mix, mix_scalar

from videoflow.core import BATCH, Flow
from videoflow.producers import IntProducer

COUNT = 40


@st.composite
def graphs(draw):
    """[(parents, salt, big, nb_tasks, delay)] for processors 1..n; node 0 is the producer."""
    n = draw(st.integers(0, 6))
    nodes = []
    for i in range(1, n + 1):
        parents = draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=2))
        nodes.append(
            (
                tuple(parents),
                draw(st.integers(0, 1000)),
                draw(st.booleans()),
                draw(st.integers(1, 3)),
                draw(st.sampled_from([0.0, 0.0, 0.001])),
            )
        )
    return nodes


def sinks(graph) -> list[int]:
    used = {p for parents, *_ in graph for p in parents}
    return [i for i in range(len(graph) + 1) if i not in used]


def reference(graph) -> list[str]:
    lines = []
    for index in range(COUNT):
        values = [index]
        for parents, salt, big, _, _ in graph:
            values.append(mix(salt, big, tuple(values[p] for p in parents)))
        out = " ".join(str(mix_scalar(values[s])) for s in sinks(graph))
        lines.append(f"{index}: {out}")
    return lines


def run_flow(graph, path: str) -> list[str]:
    nodes = [IntProducer(0, COUNT - 1)]
    for parents, salt, big, nb_tasks, delay in graph:
        node = MixProcessor(salt, big, delay, nb_tasks=nb_tasks)
        nodes.append(node(*(nodes[p] for p in parents)))
    consumer = MixConsumer(path)(*(nodes[s] for s in sinks(graph)))
    flow = Flow([nodes[0]], [consumer], flow_type=BATCH)
    flow.run()
    assert flow.join(timeout=60), "the flow did not end"
    stats = flow.stats()
    assert stats.produced == stats.delivered == COUNT and stats.pool_slots_in_use == 0
    with open(path) as f:
        return f.read().splitlines()


@pytest.mark.timeout(300)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_batch_output_equals_single_process_reference(graph):
    with tempfile.TemporaryDirectory() as folder:
        assert run_flow(graph, os.path.join(folder, "out.txt")) == reference(graph)
