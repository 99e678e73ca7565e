"""End-to-end flows in task processes: delivery, order, drops, start methods, the context
manager. How a flow fails (a node raising, a task killed, stop, Ctrl-C) is test_faults.py's."""

from __future__ import annotations

import pytest
from conftest import read_lines
from nodes import (
    AddProcessor,
    BigMeta,
    CheckMeta,
    CopyProcessor,
    DictOfArrays,
    NumpyCopyProcessor,
    OpencvThreads,
    PairProcessor,
    RecordingConsumer,
    RunningList,
    UnwrapDict,
)
from scripts import run_script, write_script

from videoflow.config import available_cpus
from videoflow.consumers import VoidConsumer
from videoflow.core import BATCH, REALTIME, Flow
from videoflow.processors import (
    CountAggregator,
    IdentityProcessor,
    JoinerProcessor,
    MaxAggregator,
    SumAggregator,
)
from videoflow.producers import IntProducer, SyntheticFrameProducer

SEED = """
    from videoflow.core import Flow
    from videoflow.core.constants import BATCH, REALTIME
    from videoflow.producers import IntProducer
    from videoflow.processors import IdentityProcessor
    from videoflow.consumers import CommandlineConsumer

    if __name__ == "__main__":
        A = IntProducer(0, 40, 0.1)
        B = IdentityProcessor(nb_tasks=2)(A)
        C = CommandlineConsumer()(B)
        flow = Flow([A], [C], flow_type={flow_type})
        flow.run(); flow.join()
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flow_type", ["BATCH", "REALTIME"])
def test_seed_example_prints_0_to_40_in_order(tmp_path, flow_type):
    done = run_script(write_script(tmp_path, SEED, flow_type=flow_type))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(i) for i in range(41)]  # the end is included


def run_flow(producer, consumer, flow_type=BATCH, **options):
    flow = Flow([producer], [consumer], flow_type=flow_type, flow_options=options or None)
    flow.run()
    flow.join()
    return flow.stats()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("nb_tasks", [1, 3])
def test_batch_delivers_10000_integers_in_order(output_file, nb_tasks):
    a = IntProducer(0, 9_999)
    b = AddProcessor(1, nb_tasks=nb_tasks)(a)
    c = RecordingConsumer(output_file)(b)
    stats = run_flow(a, c)
    assert read_lines(output_file) == [str(i + 1) for i in range(10_000)]
    assert (stats.produced, stats.delivered, stats.dropped) == (10_000, 10_000, 0)
    assert stats.pool_slots_in_use == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("nb_tasks", [1, 2])
def test_queues_of_depth_one_lose_nothing(output_file, nb_tasks):
    """queue_depth=1 once hung at the first message with nb_tasks=2: the native ring of
    capacity 1 took a second record over the first, unread."""
    a = IntProducer(0, 1999)
    b = AddProcessor(1, nb_tasks=nb_tasks)(a)
    c = AddProcessor(1, nb_tasks=nb_tasks)(b)
    d = RecordingConsumer(output_file)(c)
    stats = run_flow(a, d, queue_depth=1)
    assert read_lines(output_file) == [str(i + 2) for i in range(2000)]
    assert (stats.produced, stats.delivered) == (2000, 2000)
    assert stats.pool_slots_in_use == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("nb_tasks", [1, 2])
def test_batch_delivers_2000_frames_intact(output_file, nb_tasks):
    a = SyntheticFrameProducer((120, 160, 3), count=2000)
    b = CopyProcessor(nb_tasks=nb_tasks)(a)
    c = NumpyCopyProcessor()(b)
    d = IdentityProcessor()(c)
    e = RecordingConsumer(output_file, frames=True)(d)
    stats = run_flow(a, e)
    assert read_lines(output_file) == [f"{i}:ok" for i in range(2000)]
    assert stats.delivered == 2000 and stats.pool_slots_in_use == 0


@pytest.mark.timeout(60)
def test_full_hd_frames_pass_through_without_loss(output_file):
    a = SyntheticFrameProducer((1080, 1920, 3), count=200)
    b = IdentityProcessor()(a)
    c = RecordingConsumer(output_file, frames=True)(b)
    stats = run_flow(a, c)
    assert read_lines(output_file) == [f"{i}:ok" for i in range(200)]
    assert stats.pool_slots_in_use == 0


@pytest.mark.timeout(60)
def test_values_that_need_pickling_and_blobs(output_file):
    a = SyntheticFrameProducer((64, 64, 3), count=50)
    b = DictOfArrays()(a)
    m = BigMeta()(b)
    u = UnwrapDict()(m)
    k = CheckMeta()(u)
    c = RecordingConsumer(output_file, frames=True)(k)
    stats = run_flow(a, c)
    assert read_lines(output_file) == [f"{i}:ok" for i in range(50)]
    assert stats.pool_slots_in_use == 0


@pytest.mark.timeout(60)
def test_several_parents_arrive_in_call_order_and_values_live_until_last_reader(output_file):
    a = IntProducer(0, 99)
    b = AddProcessor(1000)(a)
    c = AddProcessor(2000)(a)
    j = PairProcessor()(c, a, b)
    k = JoinerProcessor()(j, a)
    d = RecordingConsumer(output_file)(k)
    run_flow(a, d)
    assert read_lines(output_file) == [
        repr(((i + 2000, i, i + 1000), i)).replace(" ", "") for i in range(100)
    ]


@pytest.mark.timeout(60)
def test_aggregators_and_stateful_nodes(output_file, tmp_path):
    a = IntProducer(1, 10)
    s = SumAggregator()(a)
    m = MaxAggregator()(a)
    n = CountAggregator()(a)
    r = RunningList(nb_tasks=3)(a)
    j = JoinerProcessor()(s, m, n, r)
    c = RecordingConsumer(output_file)(j)
    run_flow(a, c)
    assert read_lines(output_file)[-1] == "(55,10,10,10)"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_start_methods(output_file, method):
    a = IntProducer(0, 199)
    b = AddProcessor(5, nb_tasks=2)(a)
    c = RecordingConsumer(output_file)(b)
    run_flow(a, c, start_method=method)
    assert read_lines(output_file) == [str(i + 5) for i in range(200)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("option", "nb_tasks"), [(0, 2), (3, 1), (3, 2)])
def test_each_task_gives_opencv_its_share_of_the_cpus(output_file, monkeypatch, option, nb_tasks):
    """3 or 4 task processes: by default OpenCV gets the CPUs divided among them (at least 1),
    and an explicit opencv_threads wins."""
    monkeypatch.delenv("OPENCV_FOR_THREADS_NUM", raising=False)
    a = IntProducer(0, 5)
    b = OpencvThreads(nb_tasks=nb_tasks)(a)
    c = RecordingConsumer(output_file)(b)
    flow = Flow([a], [c], flow_type=BATCH, flow_options={"opencv_threads": option})
    flow.run()
    flow.join()
    expected = option or max(1, available_cpus() // (2 + nb_tasks))
    assert read_lines(output_file) == [str(expected)] * 6


@pytest.mark.timeout(60)
@pytest.mark.parametrize("nb_tasks", [1, 2])
def test_realtime_drops_add_up_under_a_slow_consumer(output_file, nb_tasks):
    a = SyntheticFrameProducer((240, 320, 3), count=300, fps=1000)
    b = IdentityProcessor(nb_tasks=nb_tasks)(a)
    c = RecordingConsumer(output_file, delay=0.01, frames=True)(b)
    stats = run_flow(a, c, flow_type=REALTIME)
    lines = read_lines(output_file)
    indices = [int(line.split(":")[0]) for line in lines]
    assert all(line.endswith(":ok") for line in lines)
    assert indices == sorted(set(indices))
    assert stats.produced == 300
    assert stats.dropped > 0
    assert stats.produced == stats.delivered + stats.dropped
    assert stats.delivered == len(lines)
    assert stats.pool_slots_in_use == 0


@pytest.mark.timeout(60)
def test_context_manager_waits_and_aborts_on_error(output_file):
    a = IntProducer(0, 19)
    c = RecordingConsumer(output_file)(a)
    with Flow([a], [c], flow_type=BATCH):
        pass
    assert len(read_lines(output_file)) == 20

    a = IntProducer(0, None)
    c = VoidConsumer()(a)
    with pytest.raises(KeyError), Flow([a], [c]) as flow:
        raise KeyError("user code failed")
    assert not flow.stats().running


@pytest.mark.timeout(30)
def test_unpicklable_node_is_a_clear_error():
    a = IntProducer(0, 2)
    b = AddProcessor(1)(a)
    b.hook = lambda v: v  # lambdas cannot be sent to forkserver/spawn tasks
    c = VoidConsumer()(b)
    flow = Flow([a], [c])
    with pytest.raises(ValueError, match="cannot be sent to its task process"):
        flow.run()
