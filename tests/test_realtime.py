"""Realtime flows: freshest frame (drop the oldest), frame age, every=N and skip_when_busy.

Nothing here asserts a wall-clock time. Freshness shows in what is delivered: a queue that
drops its oldest message always delivers the last frame produced (nothing comes after it to
push it out), one that drops the newest always delivers the first ``queue_depth`` frames.
"""

from __future__ import annotations

import json

import pytest
from conftest import read_lines
from nodes import (
    CountCalls,
    IndexFrame,
    JitterProcessor,
    MetaLog,
    OldStamps,
    RecordingConsumer,
    SlowCountCalls,
    SlowProcessor,
)

from videoflow.config import FlowConfig
from videoflow.consumers import VoidConsumer
from videoflow.core import BATCH, REALTIME, Flow, ProcessorNode, Report
from videoflow.engine.control import age_bucket, age_bucket_bounds
from videoflow.engine.plan import PRODUCER, StageSpec, build_plan
from videoflow.engine.stats import FrameAge
from videoflow.producers import IntProducer, SyntheticFrameProducer

COUNT = 300
SHAPE = (24, 32, 3)


def run(producer, consumer, flow_type=REALTIME, **options):
    options.setdefault("progress", False)
    flow = Flow([producer], [consumer], flow_type=flow_type, flow_options=options)
    flow.run()
    assert flow.join(timeout=120)
    return flow.stats()


def indices(path: str) -> list[int]:
    lines = read_lines(path)
    assert all(line.endswith(":ok") for line in lines), "a frame arrived damaged"
    return [int(line.split(":")[0]) for line in lines]


def meta_log(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def check_accounts(stats, produced: int = COUNT) -> None:
    """Every message produced is delivered or dropped, once; every slot went back; each
    node's messages in are its messages out plus its drops."""
    assert stats.produced == produced == stats.delivered + stats.dropped
    assert stats.pool_slots_in_use == 0 and stats.errors == 0
    for node in stats.nodes:
        if node.kind != "consumer":
            assert node.messages_in == node.messages_out + node.dropped, node.name


# -- freshest frame ----------------------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("nb_tasks", [1, 2, 3])
def test_drop_oldest_keeps_order_counts_and_delivers_the_last_frame(output_file, nb_tasks):
    a = SyntheticFrameProducer(SHAPE, count=COUNT, pattern="index", name="source")
    b = JitterProcessor(0.004, nb_tasks=nb_tasks, name="work")(a)
    c = RecordingConsumer(output_file, frames=True, name="sink")(b)
    stats = run(a, c)
    got = indices(output_file)
    assert got == sorted(set(got)) and len(got) == stats.delivered
    assert stats.dropped > 0
    assert got[-1] == COUNT - 1  # the freshest frame is never pushed out
    check_accounts(stats)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("depth", [1, 3])
def test_drop_oldest_between_two_multi_task_nodes(output_file, depth):
    """K=2 -> merge -> K=3: the merge numbers messages into the second node's workers and
    renumbers the queued ones when it drops the oldest; the merge in front of the consumer
    must never wait for a number that was dropped (the flow would hang)."""
    a = SyntheticFrameProducer(SHAPE, count=COUNT, pattern="index", name="source")
    b = JitterProcessor(0.002, nb_tasks=2, name="first")(a)
    c = JitterProcessor(0.006, nb_tasks=3, name="second")(b)
    d = RecordingConsumer(output_file, frames=True, name="sink")(c)
    stats = run(a, d, realtime_depth=depth)
    got = indices(output_file)
    assert got == sorted(set(got)) and got[-1] == COUNT - 1
    assert stats.dropped > 0
    check_accounts(stats)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("nb_tasks", [1, 2])
@pytest.mark.parametrize("where", ["flow", "node"])
def test_drop_newest_keeps_the_frames_already_queued(output_file, nb_tasks, where):
    a = SyntheticFrameProducer(SHAPE, count=COUNT, pattern="index", name="source")
    per_node = {"realtime_drop": "newest"} if where == "node" else {}
    b = SlowProcessor(0.004, nb_tasks=nb_tasks, name="work", **per_node)(a)
    c = RecordingConsumer(output_file, frames=True, name="sink", **per_node)(b)
    options = {"realtime_drop": "newest"} if where == "flow" else {}
    stats = run(a, c, **options)
    got = indices(output_file)
    assert got == sorted(set(got))
    depth = FlowConfig().queue_depth
    assert got[:depth] == list(range(depth))  # queued first, never pushed out
    assert stats.dropped > 0
    check_accounts(stats)


@pytest.mark.timeout(120)
def test_drop_oldest_with_messages_larger_than_the_queue(output_file):
    """A message that outgrew its control queue travels as a blob in a slot: pushed out of
    the queue, its blob slot must go back too."""
    from nodes import BigMeta, CheckMeta

    a = SyntheticFrameProducer(SHAPE, count=COUNT, name="source")
    b = CheckMeta(name="check")(SlowProcessor(0.002, name="slow")(BigMeta(name="big")(a)))
    c = VoidConsumer(name="sink")(b)
    stats = run(a, c)
    assert stats.dropped > 0
    check_accounts(stats)


def _spec(name, kind, node_id, reads=(), **kw):
    return StageSpec(None, name, kind, node_id, reads, **kw)


def test_plan_gives_fresh_queues_one_slot_in_realtime():
    config = FlowConfig()
    specs = [
        _spec("a", PRODUCER, 1),
        _spec("b", "processor", 2, (1,), nb_tasks=2),
        _spec("c", "processor", 3, (2,), realtime_drop="newest"),
        _spec("d", "processor", 4, (3,), skip_when_busy=True),
        _spec("e", "consumer", 5, (4,)),
    ]
    links = build_plan(specs, config).links
    assert [(link.drop, link.realtime_depth) for link in links] == [
        ("oldest", 1),  # into 2 workers, one sender
        ("newest", 4),  # out of 2 workers into c (they never drop: the merge in c needs
        #                 every number)
        ("oldest", 4),  # d must see the messages that wait, to skip them
        ("oldest", 1),
    ]
    assert [link.depth(False, config) for link in links] == [4] * 4  # BATCH
    deep = build_plan(specs, FlowConfig(realtime_depth=8))
    assert deep.links[0].realtime_depth == 8
    assert deep.stages[0].nslots > build_plan(specs, config).stages[0].nslots


def test_drop_options_are_checked():
    with pytest.raises(ValueError, match="realtime_drop must be 'oldest'"):
        FlowConfig(realtime_drop="latest")
    with pytest.raises(ValueError, match="realtime_depth must be an integer from 1 to 64"):
        FlowConfig(realtime_depth=0)
    with pytest.raises(ValueError, match="realtime_drop of <SlowProcessor"):
        SlowProcessor(0.1, realtime_drop="old")
    with pytest.raises(ValueError, match=r"every of .* must be an integer >= 1"):
        ProcessorNode(every=0)
    with pytest.raises(ValueError, match=r"every=2 and nb_tasks=2: .* use nb_tasks=1"):
        ProcessorNode(every=2, nb_tasks=2)
    with pytest.raises(ValueError, match="skip_when_busy=True and nb_tasks=3"):
        ProcessorNode(skip_when_busy=True, nb_tasks=3)
    assert FlowConfig.from_options({"realtime_drop": "newest"}).realtime_drop == "newest"
    from videoflow.core.node import TaskModuleNode

    first = CountCalls(every=2, name="first")(IntProducer(0, 3))
    with pytest.raises(ValueError, match=r"'first' skips messages .* give them to the module"):
        TaskModuleNode(first, CountCalls()(first))


# -- frame age ----------------------------------------------------------------------------------
def test_age_histogram_buckets_and_quantiles():
    for us in (0, 3, 4, 7, 8, 99, 1000, 45_000, 10**7):
        low, high = age_bucket_bounds(age_bucket(us * 1000))
        assert low <= us * 1e-6 < high
    assert age_bucket(10**15) == age_bucket(10**14)  # the last bucket takes the rest
    buckets = [0] * 96
    for ms in range(1, 101):  # one frame per millisecond from 1 to 100
        buckets[age_bucket(ms * 1_000_000)] += 1
    age = FrameAge.from_counts(100, sum(range(1, 101)) * 1_000_000, 100_000_000, buckets)
    assert age.mean_s == pytest.approx(0.0505)
    assert age.p50_s == pytest.approx(0.050, rel=0.1)
    assert age.p99_s == pytest.approx(0.099, rel=0.1) and age.p99_s <= age.max_s == 0.1
    assert FrameAge.merge([age, age]).frames == 200
    assert FrameAge.merge([age, age]).p50_s == age.p50_s


@pytest.mark.timeout(60)
def test_frame_age_of_each_consumer(output_file):
    a = IntProducer(0, 59, wait_time_in_seconds=0.002, name="source")
    b = SlowProcessor(0.001, name="work")(a)
    c = MetaLog(output_file, name="sink")(b)
    stats = run(a, c, flow_type=BATCH)
    age = stats.node("sink").frame_age
    assert age is not None and age.frames == 60 == stats.delivered
    assert 0 < age.p50_s <= age.p99_s <= age.max_s <= stats.elapsed_s
    assert 0 < age.mean_s <= age.max_s
    assert stats.node("source").frame_age is None and stats.node("work").frame_age is None
    assert all(line["stamped"] for line in meta_log(output_file))
    assert "frame age at sink: p50" in str(Report.from_stats(stats))
    assert stats.to_dict()["nodes"][2]["frame_age"]["frames"] == 60


@pytest.mark.timeout(60)
def test_frame_age_counts_from_the_producers_own_stamp(output_file):
    a = OldStamps(20, age=2.0, name="source")
    c = MetaLog(output_file, name="sink")(a)
    age = run(a, c, flow_type=BATCH).node("sink").frame_age
    assert age is not None and age.frames == 20
    assert 2.0 <= age.mean_s <= age.max_s
    assert age.p50_s == pytest.approx(2.0, rel=0.1)  # a histogram: within its bucket


# -- skipping -----------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("every", [2, 3])
def test_every_n_runs_one_message_in_n_and_passes_the_last_output(output_file, every):
    a = IntProducer(0, 29, name="source")
    b = CountCalls(every=every, name="counter")(a)
    c = MetaLog(output_file, name="sink")(b)
    stats = run(a, c, flow_type=BATCH)
    lines = meta_log(output_file)
    assert [line["index"] for line in lines] == list(range(30))
    for line in lines:
        i = line["index"]
        ran_on = i - i % every
        assert line["value"] == [ran_on, ran_on // every + 1]
        assert line["skipped"] == (None if i == ran_on else {"counter": ran_on})
    node = stats.node("counter")
    assert node.skipped == 30 - len(range(0, 30, every))
    assert node.messages_in == node.messages_out == 30
    text = str(Report.from_stats(stats))
    assert f"counter passed its last output on for {node.skipped} of 30" in text


@pytest.mark.timeout(60)
def test_every_n_with_a_frame_output_gives_each_message_its_own_copy(output_file):
    """The last output is a frame in shared memory: it stays valid while the node holds it,
    every skipped message carries a copy, and every slot goes back (debug mode poisons freed
    slots, so a frame read after its slot went back would show it)."""
    a = SyntheticFrameProducer((8, 8), count=40, name="source")
    b = IndexFrame(every=4, name="stamp")(a)
    c = MetaLog(output_file, name="sink")(b)
    stats = run(a, c, flow_type=BATCH, debug=True)
    for line in meta_log(output_file):
        ran_on = line["index"] - line["index"] % 4
        assert line["value"] == [ran_on, ran_on]
    assert stats.node("stamp").skipped == 30
    assert stats.pool_slots_in_use == 0


@pytest.mark.timeout(120)
def test_skip_when_busy_passes_waiting_messages_on(output_file):
    # A camera at 500 fps before a 100 fps detector: messages keep arriving while it is busy
    # (unpaced, the producer would be over before its first call where the producer keeps
    # only the newest value not yet taken, as the Ray engine's does: tests/test_ray.py).
    a = IntProducer(0, COUNT - 1, fps=500, name="source")
    b = SlowCountCalls(0.01, skip_when_busy=True, name="detector")(a)
    c = MetaLog(output_file, name="sink")(b)
    stats = run(a, c)
    lines = meta_log(output_file)
    node = stats.node("detector")
    assert node.skipped > 0 and node.messages_in == node.messages_out + node.dropped
    got = [line["index"] for line in lines]
    assert got == sorted(set(got)) and got[-1] == COUNT - 1
    ran = [line for line in lines if line["skipped"] is None]
    calls = [line["value"][1] for line in ran]
    assert calls == sorted(set(calls))
    for line in lines:
        if line["skipped"] is not None:  # the output of the last message the node ran on
            source = line["skipped"]["detector"]
            assert source < line["index"] and line["value"][0] == source
    assert node.skipped >= len(lines) - len(ran)  # (the queue after it may drop some)
    runs = node.messages_in - node.skipped  # process() calls
    assert runs >= 1 and max(line["value"][1] for line in lines) <= runs
    check_accounts(stats)


@pytest.mark.timeout(60)
def test_skip_when_busy_does_nothing_in_batch(output_file):
    a = IntProducer(0, 49, name="source")
    b = SlowCountCalls(0.002, skip_when_busy=True, name="detector")(a)
    c = MetaLog(output_file, name="sink")(b)
    stats = run(a, c, flow_type=BATCH)
    assert stats.node("detector").skipped == 0
    assert [line["value"] for line in meta_log(output_file)] == [[i, i + 1] for i in range(50)]


# -- the numbering sender, in one process ----------------------------------------------------------
class _Queue:
    """A bounded FIFO with the ControlQueue interface; ``steal`` makes the next ``get`` also
    hand the message after it to a "worker", as a worker taking from the same queue would."""

    max_message_size = 4096

    def __init__(self, depth: int) -> None:
        self.depth, self.items, self.stolen, self.steal = depth, [], [], False

    def put(self, data: bytes, timeout: float) -> bool:
        if len(self.items) >= self.depth:
            return False
        self.items.append(data)
        return True

    def get(self, timeout: float) -> bytes | None:
        if not self.items:
            return None
        raw = self.items.pop(0)
        if self.steal and self.items:
            self.steal = False
            self.stolen.append(self.items.pop(0))
        return raw


def _outbox(depth: int):
    from types import SimpleNamespace

    from videoflow.engine.control import ROW
    from videoflow.engine.plan import Link
    from videoflow.engine.task import Outbox

    queue = _Queue(depth)
    link = Link(0, senders=1, receivers=2, window=100, counter=0, drop="oldest")
    spec = SimpleNamespace(realtime=True, config=FlowConfig(), outbox_window_counter=0)
    control = [0] * (1 + ROW)
    life = SimpleNamespace(check=lambda: None)
    allocator = SimpleNamespace(registry=None)
    return Outbox(queue, link, spec, control, life, allocator, 1), queue  # type: ignore[arg-type]


def _numbers(raws: list[bytes]) -> list[tuple[int, int]]:
    from videoflow.transport import message

    return [(message.seq(m), message.data_fields(m)[1]["index"]) for m in map(message.loads, raws)]


@pytest.mark.parametrize("depth", [1, 3])
def test_numbering_sender_drops_the_oldest_and_renumbers_without_gaps(depth):
    outbox, queue = _outbox(depth)
    for i in range(10):
        assert outbox.send(0, {"index": i}, {})  # always sent: the oldest queued one goes
    kept = list(range(10 - depth, 10))
    assert _numbers(queue.items) == list(zip(range(depth), kept, strict=True))
    assert outbox.next_seq == depth  # every number given out is in the queue, once


def test_numbering_sender_drops_the_new_message_when_a_worker_took_one_meanwhile():
    outbox, queue = _outbox(3)
    for i in range(3):
        outbox.send(0, {"index": i}, {})
    queue.steal = True  # a worker takes message 1 while the sender takes them back
    assert not outbox.send(0, {"index": 3}, {})  # renumbering would reorder: the new one goes
    assert _numbers(queue.stolen) == [(1, 1)]
    assert _numbers(queue.items) == [(0, 0), (2, 2)]  # back as they were: the merge sees 0, 1, 2
    assert outbox.next_seq == 3
    assert outbox.send(0, {"index": 4}, {})
    assert _numbers(queue.items) == [(0, 0), (2, 2), (3, 4)]  # there was room: numbered on
