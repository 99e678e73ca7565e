"""The names of a flow's kernel objects: built and read back by transport/names.py only."""

from __future__ import annotations

import os
import time

import pytest
from nodes import CopyProcessor

from videoflow.consumers import VoidConsumer
from videoflow.core import BATCH, Flow
from videoflow.producers import SyntheticFrameProducer
from videoflow.transport import names
from videoflow.transport.names import LOCK, POOL, QUEUE


def test_every_name_reads_back_as_what_it_was_made_for():
    flow = names.new_flow_prefix()
    assert flow.startswith(f"vf.{os.getpid()}.")
    queue = names.parse(names.queue_name(flow, 12))
    pool = names.parse(names.pool_name(names.pool_family(flow, 3, 1), 2))
    lock = names.parse(names.lock_name(flow))
    assert queue is not None and pool is not None and lock is not None
    assert (queue.kind, queue.link, queue.flow, queue.owner_pid) == (QUEUE, 12, flow, os.getpid())
    assert (pool.kind, pool.stage, pool.worker, pool.number, pool.flow) == (POOL, 3, 1, 2, flow)
    assert (lock.kind, lock.flow) == (LOCK, flow)
    assert names.parse("/" + names.queue_name(flow, 0)) == names.parse(names.queue_name(flow, 0))


@pytest.mark.parametrize(
    "entry",
    ["sem.other", "vf.", "vf.12.abc", "vf.12.xyz.q1", "vf.12.ab.q", "vf.12.ab.1-0",
     "vf.12.ab.1-0.2.3", "vf.12.ab.codec.1", "vf.x.ab.q1", "vf.12.ab.lock.1"],
)
def test_names_of_others_are_not_ours(entry):
    assert names.parse(entry) is None


@pytest.mark.timeout(60)
def test_a_running_flow_has_only_names_that_parse_to_it():
    a = SyntheticFrameProducer((32, 32, 3), count=None, fps=200, name="src")
    b = CopyProcessor(nb_tasks=2, name="mid")(a)
    c = VoidConsumer(name="sink")(b)
    flow = Flow([a], [c], flow_type=BATCH)
    flow.run()
    try:
        deadline = time.monotonic() + 20
        # until both workers of mid have handled a frame (each then has a pool of its own)
        while time.monotonic() < deadline and not all(
            t.messages_out for t in flow.stats().node("mid").tasks
        ):
            time.sleep(0.02)
        entries = names.owned_entries()
        parsed = [names.parse(e) for e in entries]
        assert entries and None not in parsed, entries
        flows = {p.flow for p in parsed if p is not None}
        assert len(flows) == 1
        pools = names.flow_pools(flows.pop())
        # the producer (stage 0) and both workers of mid (stage 1) write frames into pools
        assert {(p.stage, p.worker) for p in pools} >= {(0, 0), (1, 0), (1, 1)}
        assert {p.entry for p in pools} <= set(entries)
        stats = flow.stats()
        assert stats.node("src").tasks[0].slots_in_use is not None
    finally:
        flow.stop()
        flow.join()
    assert names.owned_entries() == []
