"""Several producers, ``Join`` and ``node[i]``: the API, the graph rules and the plan (no
processes; tests/test_joins.py runs such flows).
"""

from __future__ import annotations

import logging
import math

import pytest

from videoflow.consumers import (
    CommandlineConsumer,
    FileAppenderConsumer,
    ImageFolderWriter,
    JsonLinesWriter,
    MjpegServer,
    VideoDisplay,
    VideofileWriter,
    VideoWriter,
    VoidConsumer,
    WebhookConsumer,
)
from videoflow.core import BATCH, REALTIME, Flow, FunctionProcessorNode, Join, OneTaskProcessorNode
from videoflow.core.graph import join_inputs, join_points, resolve_joins
from videoflow.core.join import REALTIME_TIMEOUT_MS
from videoflow.core.node import OutputItem
from videoflow.engine.plan import JOIN, MERGE, build_plan
from videoflow.processors import IdentityProcessor, JoinerProcessor
from videoflow.producers import IntProducer


# -- Join ---------------------------------------------------------------------------------------
def test_join_policies_and_their_defaults():
    assert Join.seq() == Join.seq() and repr(Join.seq()) == "Join.seq()"
    timed = Join.time(5)
    assert (timed.policy, timed.tolerance_ms, timed.missing, timed.timeout_ms) == (
        "time", 5.0, "drop", None,
    )
    assert repr(Join.time(2.5, missing="none", timeout_ms=40)) == (
        "Join.time(tolerance_ms=2.5, missing='none', timeout_ms=40)"
    )
    latest = Join.latest(40, min_inputs=2)
    assert (latest.policy, latest.timeout_ms, latest.min_inputs) == ("latest", 40.0, 2)
    assert Join.latest(timeout_ms=0).timeout_ms == 0.0
    assert Join.default_for(BATCH) == Join.seq()
    assert Join.default_for(REALTIME) == Join.latest(REALTIME_TIMEOUT_MS)
    with pytest.raises(ValueError, match="flow_type"):
        Join.default_for("fast")


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Join.time(-1), ValueError, "tolerance_ms must be a finite number"),
        (lambda: Join.time(math.nan), ValueError, "tolerance_ms must be a finite"),
        (lambda: Join.time("5"), TypeError, "tolerance_ms must be a number of milliseconds"),
        (lambda: Join.time(True), TypeError, "tolerance_ms must be a number"),
        (lambda: Join.time(None), TypeError, "tolerance_ms must be a number"),
        (lambda: Join.time(5, missing="wait"), ValueError, "missing must be 'drop'"),
        (lambda: Join.time(5, timeout_ms=math.inf), ValueError, "timeout_ms must be a finite"),
        (lambda: Join.latest(-5), ValueError, "timeout_ms must be a finite"),
        (lambda: Join.latest(None), TypeError, "timeout_ms must be a number"),
        (lambda: Join.latest(40, min_inputs=0), ValueError, "min_inputs must be a positive"),
        (lambda: Join.latest(40, min_inputs=1.5), ValueError, "min_inputs must be a positive"),
        (lambda: Join("fastest"), ValueError, "unknown join policy 'fastest'"),
        (lambda: Join("seq", timeout_ms=5), ValueError, "Join.seq waits for every input"),
        (lambda: Join("latest", timeout_ms=5, tolerance_ms=1), ValueError, "belongs to Join.time"),
        (lambda: Join("latest", timeout_ms=5, missing="none"), ValueError, "belongs to Join.time"),
        (lambda: Join("seq", min_inputs=2), ValueError, "belongs to Join.latest"),
    ],
)
def test_join_arguments_are_checked(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_join_is_immutable():
    with pytest.raises(AttributeError):
        Join.seq().policy = "time"


# -- join= and node[i] -------------------------------------------------------------------------
def test_join_keyword_on_processors_and_consumers():
    policy = Join.latest(40)
    assert IdentityProcessor(join=policy).join_policy is policy
    assert OneTaskProcessorNode(join=policy).join_policy is policy
    assert FunctionProcessorNode(abs, join=policy).join_policy is policy
    assert VoidConsumer(join=policy).join_policy is policy
    assert IdentityProcessor().join_policy is None
    with pytest.raises(TypeError, match=r"join= of <IdentityProcessor 'x'> must be Join.seq\(\)"):
        IdentityProcessor(join="latest", name="x")
    with pytest.raises(TypeError, match="join="):
        VoidConsumer(join=40)


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: CommandlineConsumer(**kw),
        lambda **kw: FileAppenderConsumer("/tmp/x.jsonl", **kw),
        lambda **kw: MjpegServer(port=0, **kw),
        lambda **kw: VideoWriter("/tmp/x.mp4", **kw),
        lambda **kw: VideofileWriter("/tmp/x.mp4", **kw),
        lambda **kw: ImageFolderWriter("/tmp/x", **kw),
        lambda **kw: VideoDisplay(**kw),
        lambda **kw: JsonLinesWriter("/tmp/x.jsonl", **kw),
        lambda **kw: WebhookConsumer("http://localhost:1", **kw),
    ],
)
def test_every_built_in_consumer_takes_join_and_realtime_drop(make):
    """A built-in consumer can be where cameras meet, and choose what a full queue drops."""
    policy = Join.latest(40)
    node = make(join=policy, realtime_drop="newest", name="end")
    assert (node.join_policy, node.realtime_drop, node.name) == (policy, "newest", "end")
    with pytest.raises(TypeError):
        make(no_such_option=1)


def test_item_selector_wires_the_parent_and_remembers_the_item():
    cam1 = IntProducer(0, 3, name="cam1")
    det = JoinerProcessor(name="det")(cam1)
    item = det[1]
    assert isinstance(item, OutputItem) and item.node is det and item.index == 1
    assert repr(item) == "det[1]"
    trk = JoinerProcessor(name="trk")(cam1, det[1], det)
    assert trk.parents == [cam1, det, det]
    assert trk.parent_items == (None, 1, None)
    assert det.children == [trk, trk] and det.parent_items == (None,)
    assert IdentityProcessor().parent_items == ()
    assert cam1[0].node is cam1  # a producer's output too


def test_item_selector_arguments_are_checked():
    a = IntProducer(0, 3)
    sink = VoidConsumer(name="sink")(a)
    with pytest.raises(TypeError, match="consumer 'sink' has no output"):
        sink[0]
    for bad in ("0", 1.0, True, slice(0, 2)):
        with pytest.raises(TypeError, match="integer index"):
            a[bad]
    with pytest.raises(ValueError, match=">= 0"):
        a[-1]
    with pytest.raises(TypeError, match="not iterable"):
        list(a)
    with pytest.raises(TypeError, match="not iterable"):
        IdentityProcessor()(*a)
    with pytest.raises(TypeError, match="must be nodes"):
        IdentityProcessor()((a, 0))


# -- graph rules -------------------------------------------------------------------------------
def cameras(n=2):
    return [IntProducer(0, 5, name=f"cam{i + 1}") for i in range(n)]


def kinds(plan):
    return [(s.spec.name, s.spec.kind) for s in plan.stages]


def test_the_multi_camera_graph_validates_and_plans_one_join():
    cam1, cam2 = cameras()
    policy = Join.latest(timeout_ms=40)
    det = JoinerProcessor(join=policy, name="det")(cam1, cam2)
    trk1 = JoinerProcessor(name="trk1")(cam1, det[0])
    trk2 = JoinerProcessor(name="trk2")(cam2, det[1])
    w1, w2 = VoidConsumer(name="w1")(trk1), VoidConsumer(name="w2")(trk2)
    flow = Flow([cam1, cam2], [w1, w2], flow_type=REALTIME)
    assert {n.name for n in flow.nodes} == {"cam1", "cam2", "det", "trk1", "trk2", "w1", "w2"}
    points = join_points(flow.nodes)
    assert list(points.values()) == [[det]]
    assert resolve_joins(flow.nodes, REALTIME) == {det.id: policy}
    assert join_inputs(flow.nodes, frozenset((cam1.id, cam2.id))) == [
        frozenset((cam1.id,)), frozenset((cam2.id,)),
    ]
    with pytest.raises(RuntimeError, match="not been started"):
        flow.stats()
    plan = build_plan(flow._specs(), flow.config)
    # One segment per producer set: {cam1}, {cam2}, then {cam1, cam2} behind its JOIN.
    assert [seg.sources for seg in plan.segments] == [("cam1",), ("cam2",), ("cam1", "cam2")]
    assert [seg.parent for seg in plan.segments] == [2, 2, -1]
    join = plan.stages[plan.segments[2].stages[0]]
    assert join.spec.kind == JOIN and join.spec.name == "det.join" and join.spec.join == policy
    assert [i.name for i in join.join_inputs] == ["cam1", "cam2"]
    # Each camera's tail feeds its own inbox of the JOIN, and rings its doorbell.
    assert [link.join for link in join.inboxes] == [join.index, join.index]
    tails = [plan.stages[seg.stages[-1]] for seg in plan.segments[:2]]
    assert [t.outbox for t in tails] == list(join.inboxes)
    # The trackers read the camera frames after the join: the frames are carried through it.
    assert join.join_inputs[0].carries == (cam1.id,)
    assert join.join_inputs[1].carries == (cam2.id,)
    trk1_stage = next(s for s in plan.stages if s.spec.name == "trk1")
    assert trk1_stage.spec.items == (None, 0)
    assert cam1.id in trk1_stage.drop_after
    # A camera's pool covers its path: its queue, the JOIN's buffer and the joined chain.
    cam1_stage = plan.stages[0]
    assert cam1_stage.nslots > plan.stages[join.index].nslots + join.max_pending


@pytest.mark.parametrize(("flow_type", "default"), [(BATCH, "Join.seq()"),
                                                    (REALTIME, "Join.latest(timeout_ms=20")])
def test_without_join_the_flow_types_default_applies_and_is_logged(caplog, flow_type, default):
    cam1, cam2 = cameras()
    det = JoinerProcessor(name="det")(cam1, cam2)
    sink = VoidConsumer()(det)
    with caplog.at_level(logging.INFO, logger="videoflow.core.graph"):
        Flow([cam1, cam2], [sink], flow_type=flow_type)
    (record,) = [r for r in caplog.records if "meet at node 'det'" in r.getMessage()]
    assert "'cam1' and 'cam2'" in record.getMessage()
    assert f"the {flow_type} default {default}" in record.getMessage()


def test_a_consumer_may_be_the_join_point():
    cam1, cam2 = cameras()
    sink = VoidConsumer(join=Join.time(3), name="sink")(cam1, cam2)
    flow = Flow([cam1, cam2], [sink], flow_type=BATCH)
    assert resolve_joins(flow.nodes, BATCH) == {sink.id: Join.time(3)}


def test_join_where_streams_already_met_is_an_error():
    cam1, cam2 = cameras()
    det = JoinerProcessor(name="det")(cam1, cam2)
    trk = JoinerProcessor(join=Join.seq(), name="trk")(cam1, det[0])
    sink = VoidConsumer()(trk)
    with pytest.raises(
        ValueError,
        match=r"'trk' has join=Join.seq\(\) but its parent 'det' already carries every stream "
        r"it reads \(they first meet at 'det'\): join= belongs only",
    ):
        Flow([cam1, cam2], [sink])


def test_join_in_a_single_producer_flow_is_an_error():
    a = IntProducer(0, 3, name="a")
    b = IdentityProcessor(name="b")(a)
    j = JoinerProcessor(join=Join.latest(10), name="j")(a, b)
    sink = VoidConsumer()(j)
    with pytest.raises(ValueError, match=r"'j' has join=.* but all its inputs come from producer "
                                         "'a': join= belongs only"):
        Flow([a], [sink])


def test_join_points_of_the_same_streams_share_one_policy():
    cam1, cam2 = cameras()
    d1 = JoinerProcessor(join=Join.seq(), name="d1")(cam1, cam2)
    d2 = JoinerProcessor(join=Join.latest(5), name="d2")(cam2, cam1)
    sink = VoidConsumer()(d1, d2)
    with pytest.raises(ValueError, match="'d1' and 'd2' both join the streams of 'cam1' and "
                                         "'cam2' with different policies"):
        Flow([cam1, cam2], [sink])

    cam1, cam2 = cameras()
    d1 = JoinerProcessor(join=Join.seq(), name="d1")(cam1, cam2)
    d2 = JoinerProcessor(name="d2")(cam2, cam1)  # no policy: the one of d1
    sink = VoidConsumer()(d1, d2)
    flow = Flow([cam1, cam2], [sink], flow_type=REALTIME)
    assert resolve_joins(flow.nodes, REALTIME) == {d1.id: Join.seq(), d2.id: Join.seq()}


def test_min_inputs_must_fit_the_number_of_joined_streams():
    cam1, cam2 = cameras()
    det = JoinerProcessor(join=Join.latest(5, min_inputs=3), name="det")(cam1, cam2)
    sink = VoidConsumer()(det)
    with pytest.raises(ValueError, match=r"'det' joins 2 streams \('cam1' and 'cam2'\) but its "
                                         r"Join.latest\(.*\) asks for min_inputs=3"):
        Flow([cam1, cam2], [sink])


def test_nested_joins_have_one_join_point_per_set_of_streams():
    cam1, cam2, cam3 = cameras(3)
    pair = JoinerProcessor(name="pair")(cam1, cam2)
    solo = IdentityProcessor(name="solo")(cam3)
    alln = JoinerProcessor(join=Join.seq(), name="all")(pair, solo, cam1)
    sink = VoidConsumer()(alln)
    flow = Flow([cam1, cam2, cam3], [sink], flow_type=BATCH)
    points = join_points(flow.nodes)
    assert [n.name for group in points.values() for n in group] == ["pair", "all"]
    everything = frozenset(p.id for p in (cam1, cam2, cam3))
    assert join_inputs(flow.nodes, everything) == [
        frozenset((cam1.id, cam2.id)), frozenset((cam3.id,)),
    ]
    assert resolve_joins(flow.nodes, BATCH) == {pair.id: Join.seq(), alln.id: Join.seq()}


def test_producers_that_never_meet_are_a_valid_flow():
    cam1, cam2 = cameras()
    w1, w2 = VoidConsumer()(cam1), VoidConsumer()(cam2)
    flow = Flow([cam1, cam2], [w1, w2], flow_type=BATCH)
    assert join_points(flow.nodes) == {}
    plan = build_plan(flow._specs(), flow.config)
    assert all(s.spec.kind != JOIN for s in plan.stages)
    assert [seg.parent for seg in plan.segments] == [-1, -1]  # two chains side by side


def test_producer_lists_are_checked():
    cam1, cam2 = cameras()
    det = JoinerProcessor()(cam1, cam2)
    sink = VoidConsumer()(det)
    with pytest.raises(ValueError, match="listed twice in the flow's producers"):
        Flow([cam1, cam2, cam1], [sink])
    with pytest.raises(ValueError, match="producer 'cam2' feeds the flow but is not in its "
                                         "producers"):
        Flow([cam1], [sink])
    idle = IntProducer(0, 3, name="idle")
    with pytest.raises(ValueError, match="'idle' leads to none of the flow's consumers"):
        Flow([cam1, cam2, idle], [sink])
    stray = IdentityProcessor(name="stray")
    stray_sink = VoidConsumer(name="stray_sink")(stray)
    with pytest.raises(
        ValueError, match=r"'stray(_sink)?' is not reachable from producers 'cam1', 'cam2'"
    ):
        Flow([cam1, cam2], [sink, stray_sink])


def test_an_item_selector_is_planned_as_a_read_of_the_parent():
    a = IntProducer(0, 3, name="a")
    pair = JoinerProcessor(name="pair")(a, a)
    first = IdentityProcessor(name="first")(pair[0])
    flow = Flow([a], [VoidConsumer()(first)], flow_type=BATCH)
    plan = build_plan(flow._specs(), flow.config)
    stage = next(s for s in plan.stages if s.spec.name == "first")
    assert stage.spec.reads == (pair.id,) and stage.spec.items == (0,)
    assert stage.spec.read_names == ("pair",)
    assert stage.spec.select_items([(10, 11)]) == [10]
    assert stage.spec.select_items([None]) == [None]  # a set without that input
    with pytest.raises(TypeError, match=r"'first' reads pair\[0\], but 'pair' returned a int"):
        stage.spec.select_items([5])
    with pytest.raises(IndexError, match=r"'first' reads pair\[0\], but 'pair' returned 0"):
        stage.spec.select_items([()])


def test_streams_that_meet_two_different_sets_are_refused():
    cam1, cam2, cam3 = cameras(3)
    left = JoinerProcessor(name="left")(cam1, cam2)
    right = JoinerProcessor(name="right")(cam2, cam3)
    with pytest.raises(ValueError, match=r"'cam1', 'cam2' meet at node 'left' and those of "
                                         r"'cam2', 'cam3' at node 'right'.*share 'cam2'"):
        Flow([cam1, cam2, cam3], [VoidConsumer()(left), VoidConsumer()(right)], flow_type=BATCH)


def test_nested_joins_plan_a_join_per_set_and_multi_task_tails_get_a_merge():
    cam1, cam2, cam3 = cameras(3)
    heavy = IdentityProcessor(nb_tasks=2, name="heavy")(cam3)
    pair = JoinerProcessor(name="pair", nb_tasks=2)(cam1, cam2)
    alln = JoinerProcessor(name="all")(pair, heavy)
    flow = Flow([cam1, cam2, cam3], [VoidConsumer(name="sink")(alln)], flow_type=BATCH)
    plan = build_plan(flow._specs(), flow.config)
    names = [s.spec.name for s in plan.stages]
    assert "pair.join" in names and "all.join" in names
    assert "heavy.merge" in names and "pair.merge" in names  # K=2 tails merge before a JOIN
    outer = plan.stages[names.index("all.join")]
    assert [i.name for i in outer.join_inputs] == ["cam1+cam2", "cam3"]
    assert [i.sources for i in outer.join_inputs] == [("cam1", "cam2"), ("cam3",)]
    inner = plan.stages[names.index("pair.join")]
    assert inner.outbox.window > 0  # the JOIN numbers messages for the two workers of pair
    assert plan.stages[names.index("pair.merge")].spec.kind == MERGE
    assert plan.stages[names.index("heavy.merge")].outbox.join == outer.index
