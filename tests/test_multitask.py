"""Multi-task nodes: fan-out over K processes, ordered merge, drops, stop, GPU assignment."""

from __future__ import annotations

import os

import pytest
from conftest import read_lines
from nodes import JitterProcessor, LifecycleProcessor, RecordingConsumer, SlowProcessor

from videoflow.config import FlowConfig
from videoflow.core import BATCH, GPU, REALTIME, Flow
from videoflow.engine.plan import StageSpec, assign_gpus, build_plan, visible_gpus
from videoflow.producers import IntProducer, SyntheticFrameProducer


def run(producer, consumer, flow_type=BATCH):
    flow = Flow([producer], [consumer], flow_type=flow_type)
    flow.run()
    flow.join()
    return flow.stats()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("nb_tasks", [2, 3, 4])
def test_batch_order_with_random_delays(output_file, nb_tasks):
    a = IntProducer(0, 9_999)
    b = JitterProcessor(0.0004, nb_tasks=nb_tasks)(a)
    c = RecordingConsumer(output_file)(b)
    stats = run(a, c)
    assert read_lines(output_file) == [str(i) for i in range(10_000)]
    workers = stats.node(b.name).tasks
    assert len(workers) == nb_tasks and all(w.messages_in > 0 for w in workers)
    assert sum(w.messages_in for w in workers) == 10_000


@pytest.mark.timeout(120)
def test_consecutive_multi_task_nodes_keep_order(output_file):
    a = IntProducer(0, 2999)
    b = JitterProcessor(0.0005, nb_tasks=2)(a)
    c = JitterProcessor(0.0005, nb_tasks=3)(b)
    d = RecordingConsumer(output_file)(c)
    run(a, d)
    assert read_lines(output_file) == [str(i) for i in range(3000)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("nb_tasks", [2, 3])
def test_realtime_output_increases_and_counts_add_up(output_file, nb_tasks):
    a = SyntheticFrameProducer((90, 160, 3), count=600, fps=2000)
    b = JitterProcessor(0.004, nb_tasks=nb_tasks)(a)
    c = RecordingConsumer(output_file, delay=0.003, frames=True)(b)
    stats = run(a, c, REALTIME)
    lines = read_lines(output_file)
    indices = [int(line.split(":")[0]) for line in lines]
    assert all(line.endswith(":ok") for line in lines)
    assert indices == sorted(set(indices))
    assert stats.dropped > 0
    assert stats.produced == 600 == stats.delivered + stats.dropped
    assert stats.pool_slots_in_use == 0


@pytest.mark.timeout(60)
def test_each_worker_opens_and_closes_once_and_stop_reaches_child_once(tmp_path, output_file):
    a = IntProducer(0, 499)
    b = LifecycleProcessor(str(tmp_path), nb_tasks=3)(a)
    c = SlowProcessor(0, nb_tasks=2)(b)
    d = RecordingConsumer(output_file)(c)
    run(a, d)
    marks = os.listdir(tmp_path)
    opens = {m.split(".")[1] for m in marks if m.startswith("open.")}
    closes = {m.split(".")[1] for m in marks if m.startswith("close.")}
    assert len(opens) == 3 and opens == closes
    assert read_lines(output_file) == [str(i) for i in range(500)]


def test_visible_gpus_from_environment():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,2, 3"}) == ["0", "2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_gpu_assignment_gives_each_worker_its_own_gpu_then_cpu():
    specs = [
        StageSpec(None, "a", "producer", 1, ()),
        StageSpec(None, "b", "processor", 2, (1,), nb_tasks=3, device_type=GPU),
        StageSpec(None, "c", "processor", 3, (2,), nb_tasks=1, device_type=GPU),
        StageSpec(None, "d", "consumer", 4, (3,)),
    ]
    plan = build_plan(specs, FlowConfig())
    merge_free = {k: v for k, v in assign_gpus(plan, ["4", "7"]).items()}
    b, c = plan.stages[1].index, plan.stages[2].index
    assert merge_free == {(b, 0): "4", (b, 1): "7", (b, 2): None, (c, 0): None}
    assert assign_gpus(plan, []) == {(b, 0): None, (b, 1): None, (b, 2): None, (c, 0): None}


@pytest.mark.timeout(60)
def test_gpu_workers_get_their_own_device_or_fall_back_to_cpu(tmp_path, output_file, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    a = IntProducer(0, 49)
    b = LifecycleProcessor(str(tmp_path), nb_tasks=3, device_type=GPU)(a)
    c = RecordingConsumer(output_file)(b)
    run(a, c)
    seen = []
    for mark in os.listdir(tmp_path):
        if mark.startswith("open."):
            with open(os.path.join(tmp_path, mark)) as f:
                seen.append(f.read())
    seen.sort()
    assert seen == [" cpu", "0 gpu", "1 gpu"]  # the fallback worker sees no GPU
    assert b.device_type == GPU  # the parent's node object is untouched
