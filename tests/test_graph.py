"""Graph API and validation: no processes are started here."""

from __future__ import annotations

import pytest

from videoflow.config import FlowConfig
from videoflow.consumers import CommandlineConsumer, VoidConsumer
from videoflow.core import BATCH, Flow, FunctionProcessorNode, OneTaskProcessorNode
from videoflow.engine.plan import MERGE, StageSpec, build_plan
from videoflow.processors import IdentityProcessor, JoinerProcessor
from videoflow.producers import IntProducer


def test_call_wires_parents_in_order():
    a = IntProducer(0, 2)
    b = IdentityProcessor()(a)
    c = IdentityProcessor()(a)
    j = JoinerProcessor()(c, b)
    assert j.parents == [c, b]
    assert a.children == [b, c]


def test_second_call_is_a_runtime_error():
    a = IntProducer(0, 2)
    b = IdentityProcessor()(a)
    with pytest.raises(RuntimeError, match="already called"):
        b(a)


def test_producer_takes_no_parents():
    with pytest.raises(RuntimeError, match="takes no parents"):
        IntProducer(0, 2)(IntProducer(0, 2))


def test_parents_must_be_nodes():
    with pytest.raises(TypeError, match="must be nodes"):
        IdentityProcessor()(42)


@pytest.mark.parametrize("nb_tasks", [0, -1, 1.5, True, "2"])
def test_bad_nb_tasks(nb_tasks):
    with pytest.raises(ValueError, match="nb_tasks"):
        IdentityProcessor(nb_tasks=nb_tasks)


def test_one_task_processor_ignores_nb_tasks():
    assert OneTaskProcessorNode(nb_tasks=4).nb_tasks == 1


def test_cycle_is_a_value_error():
    a = IntProducer(0, 2)
    x = IdentityProcessor(name="x")
    y = IdentityProcessor(name="y")(x)
    x(a, y)
    c = VoidConsumer()(y)
    with pytest.raises(ValueError, match="cycle"):
        Flow([a], [c])


def test_every_producer_feeding_the_flow_must_be_listed():
    a, b = IntProducer(0, 2), IntProducer(0, 2, name="b")
    j = JoinerProcessor()(a, b)
    c = VoidConsumer()(j)
    Flow([a, b], [c])  # several producers validate (running them: tests/test_join_api.py)
    with pytest.raises(ValueError, match="producer 'b' feeds the flow but is not in its"):
        Flow([a], [c])
    with pytest.raises(ValueError, match="needs a producer, got none"):
        Flow([], [c])


def test_consumer_used_as_parent_is_named():
    a = IntProducer(0, 2)
    c = VoidConsumer(name="sink")(a)
    IdentityProcessor()(c)
    with pytest.raises(ValueError, match="'sink'"):
        Flow([a], [c])


def test_unreachable_node_is_named():
    a = IntProducer(0, 2)
    stray = IdentityProcessor(name="stray")
    stray_c = VoidConsumer(name="stray_sink")(stray)
    c = VoidConsumer()(a)
    with pytest.raises(ValueError, match="'stray"):
        Flow([a], [c, stray_c])


def test_dead_end_node_is_named():
    a = IntProducer(0, 2)
    IdentityProcessor(name="dead_end")(a)
    c = VoidConsumer()(a)
    with pytest.raises(ValueError, match="'dead_end' leads to none"):
        Flow([a], [c])


def test_unlisted_consumer_is_named():
    a = IntProducer(0, 2)
    c = VoidConsumer()(a)
    VoidConsumer(name="forgotten")(a)
    with pytest.raises(ValueError, match="'forgotten'"):
        Flow([a], [c])


def test_wrong_roles_and_names():
    a = IntProducer(0, 2)
    b = IdentityProcessor(name="same")(a)
    c = IdentityProcessor(name="same")(b)
    d = VoidConsumer()(c)
    with pytest.raises(ValueError, match="named 'same'"):
        Flow([a], [d])
    with pytest.raises(ValueError, match="not a ConsumerNode"):
        Flow([a], [b])
    with pytest.raises(ValueError, match="not a ProducerNode"):
        Flow([b], [d])


def test_bad_flow_type_and_options():
    a = IntProducer(0, 2)
    c = CommandlineConsumer()(a)
    with pytest.raises(ValueError, match="flow_type"):
        Flow([a], [c], flow_type="fast")
    with pytest.raises(ValueError, match="unknown flow option 'queue_size'"):
        Flow([a], [c], flow_options={"queue_size": 3})
    with pytest.raises(ValueError, match="start_method"):
        Flow([a], [c], flow_options={"start_method": "thread"})
    with pytest.raises(ValueError, match="opencv_threads must be an integer from -1"):
        Flow([a], [c], flow_options={"opencv_threads": -2})


def test_opencv_threads_share_the_cpus_unless_told(monkeypatch):
    monkeypatch.delenv("OPENCV_FOR_THREADS_NUM", raising=False)
    auto = FlowConfig()
    assert auto.opencv_threads_per_task(4, cpus=2) == 1
    assert auto.opencv_threads_per_task(4, cpus=16) == 4
    assert auto.opencv_threads_per_task(3, cpus=16) == 5
    assert FlowConfig(opencv_threads=3).opencv_threads_per_task(4, cpus=2) == 3
    assert FlowConfig(opencv_threads=-1).opencv_threads_per_task(4, cpus=2) is None
    monkeypatch.setenv("OPENCV_FOR_THREADS_NUM", "2")
    assert auto.opencv_threads_per_task(4, cpus=16) is None
    assert FlowConfig(opencv_threads=3).opencv_threads_per_task(4, cpus=16) == 3


def test_join_before_run_and_run_twice():
    a = IntProducer(0, 2)
    c = VoidConsumer()(a)
    flow = Flow([a], [c], flow_type=BATCH)
    with pytest.raises(RuntimeError, match="not been started"):
        flow.join()
    flow.run()
    with pytest.raises(RuntimeError, match="already started"):
        flow.run()
    flow.join()


def test_topological_order_and_function_node():
    a = IntProducer(0, 2)
    b = FunctionProcessorNode(abs)(a)
    c = IdentityProcessor()(b)
    j = JoinerProcessor()(a, c)
    d = VoidConsumer()(j)
    flow = Flow([a], [d])
    order = flow.nodes
    assert order.index(a) < order.index(b) < order.index(c) < order.index(j) < order.index(d)
    assert b.name == "abs"


def _spec(name, nid, reads, nb=1, kind="processor"):
    return StageSpec(None, name, kind, nid, reads, nb)


def test_plan_inserts_merge_between_multi_task_nodes_and_frees_at_last_reader():
    specs = [
        _spec("a", 1, (), kind="producer"),
        _spec("b", 2, (1,), nb=2),
        _spec("c", 3, (2,), nb=3),
        _spec("d", 4, (1, 3), kind="consumer"),
    ]
    plan = build_plan(specs, FlowConfig())
    kinds = [s.spec.kind for s in plan.stages]
    assert kinds == ["producer", "processor", MERGE, "processor", "consumer"]
    assert [link.receivers for link in plan.links] == [2, 1, 3, 1]
    assert [link.senders for link in plan.links] == [1, 2, 1, 3]
    assert plan.links[0].window > 0 and plan.links[1].window == 0
    assert plan.stages[4].drop_after == (1, 3)
    assert plan.stages[1].drop_after == ()
    assert plan.stages[3].drop_after == (2,)
    assert not plan.stages[4].keep_output
