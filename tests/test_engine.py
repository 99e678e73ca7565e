"""The engine contract: choosing a flow's engine, and the binding hook nodes read from."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from conftest import read_lines
from nodes import CopyProcessor, RecordingConsumer, RunningList

from videoflow.config import FlowConfig
from videoflow.consumers import VoidConsumer
from videoflow.core import BATCH, Flow, ProcessorNode
from videoflow.engine import engines
from videoflow.engine.base import Engine
from videoflow.engine.plan import StageSpec
from videoflow.engine.runner import ProcessEngine
from videoflow.engine.stats import FlowStats
from videoflow.producers import IntProducer
from videoflow.producers.basic import SyntheticFrameProducer


def chain(*processors: ProcessorNode, count: int = 5, **flow_kw: Any) -> Flow:
    source = IntProducer(0, count - 1)  # count values: the end is included
    node: Any = source
    for p in processors:
        node = p(node)
    sink = VoidConsumer(name="sink")(node)
    return Flow([source], [sink], flow_type=BATCH, **flow_kw)


class RecordingEngine:
    """An engine of its own, as a user would write one: delegates to the process engine and
    records what the flow gave it."""

    name = "recording"

    def __init__(self) -> None:
        self.inner = ProcessEngine()
        self.started: tuple[Sequence[StageSpec], bool, FlowConfig] | None = None

    def start(self, stages: Sequence[StageSpec], realtime: bool, config: FlowConfig) -> None:
        self.started = (stages, realtime, config)
        self.inner.start(stages, realtime, config)

    def stop(self) -> None:
        self.inner.stop()

    def abort(self) -> None:
        self.inner.abort()

    def kill(self) -> None:
        self.inner.kill()

    def wait(self, timeout: float | None = None) -> bool:
        return self.inner.wait(timeout)

    @property
    def running(self) -> bool:
        return self.inner.running

    @property
    def errors(self) -> list[Any]:
        return self.inner.errors

    def stats(self) -> FlowStats:
        return self.inner.stats()


# -- choosing the engine ---------------------------------------------------------------------
def test_the_process_engine_is_the_default_and_satisfies_the_protocol():
    flow = chain()
    assert isinstance(flow.engine, ProcessEngine)
    assert isinstance(flow.engine, Engine)
    assert flow.engine.name == "process" and flow.config.engine == "process"
    assert isinstance(chain(engine="process").engine, ProcessEngine)


def test_engine_by_flow_option_and_environment(monkeypatch):
    made: list[RecordingEngine] = []

    def factory() -> RecordingEngine:
        made.append(RecordingEngine())
        return made[-1]

    monkeypatch.setitem(engines._FACTORIES, "recording", factory)
    assert "recording" in engines.engine_names()
    flow = chain(flow_options={"engine": "recording"})
    assert flow.engine is made[0] and flow.config.engine == "recording"

    monkeypatch.setenv("VIDEOFLOW_ENGINE", "recording")
    assert chain().engine is made[1]
    # the argument and the option win over the environment
    assert isinstance(chain(engine="process").engine, ProcessEngine)
    assert isinstance(chain(flow_options={"engine": "process"}).engine, ProcessEngine)


def test_register_engine_checks_its_arguments(monkeypatch):
    monkeypatch.setattr(engines, "_FACTORIES", dict(engines._FACTORIES))
    engines.register_engine("mine", RecordingEngine)
    assert isinstance(chain(engine="mine").engine, RecordingEngine)
    with pytest.raises(ValueError, match="non-empty string"):
        engines.register_engine("", RecordingEngine)
    with pytest.raises(TypeError, match="callable"):
        engines.register_engine("x", "videoflow.engine.runner:ProcessEngine")  # type: ignore[arg-type]


def test_unknown_engine_names_the_known_ones(monkeypatch):
    for kwargs in ({"engine": "threads"}, {"flow_options": {"engine": "threads"}}):
        known = r"unknown engine 'threads'; known engines: process, ray"
        with pytest.raises(ValueError, match=known):
            chain(**kwargs)
    monkeypatch.setenv("VIDEOFLOW_ENGINE", "threads")
    with pytest.raises(ValueError, match="unknown engine 'threads'"):
        chain()
    with pytest.raises(ValueError, match="unknown engine"):
        FlowConfig.from_options()


def test_an_object_that_is_no_engine_is_refused():
    with pytest.raises(TypeError, match=r"engine must be a name .* got object"):
        chain(engine=object())  # type: ignore[arg-type]


def test_the_engine_is_given_once():
    with pytest.raises(ValueError, match="given twice"):
        chain(engine="process", flow_options={"engine": "process"})


def test_ray_missing_says_what_to_install(monkeypatch):
    real = engines.importlib.import_module

    def no_ray(name: str, *args: Any) -> Any:
        if name == "videoflow.engine.ray_engine":
            raise ModuleNotFoundError("No module named 'ray'", name="ray")
        return real(name, *args)

    monkeypatch.setattr(engines.importlib, "import_module", no_ray)
    with pytest.raises(ImportError, match=r'pip install "videoflow-shm\[ray\]"') as err:
        chain(engine="ray")
    assert "No module named 'ray'" in str(err.value)


def test_importing_videoflow_does_not_import_ray():
    code = textwrap.dedent(
        """
        import sys
        import videoflow, videoflow.core, videoflow.engine.engines, videoflow.engine.runner
        from videoflow.consumers import VoidConsumer
        from videoflow.core import Flow
        from videoflow.producers import IntProducer
        source = IntProducer(0, 3)
        Flow([source], [VoidConsumer()(source)])
        assert "ray" not in sys.modules, "ray was imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.timeout(60)
def test_a_flow_runs_on_an_engine_object(output_file):
    engine = RecordingEngine()
    source = SyntheticFrameProducer(shape=(24, 32, 3), count=12)
    copy = CopyProcessor()(source)
    running = RunningList(nb_tasks=3)(copy)
    sink = RecordingConsumer(output_file, frames=True)(copy)
    counts = RecordingConsumer(output_file + ".n")(running)
    flow = Flow([source], [sink, counts], flow_type=BATCH, engine=engine)
    assert flow.engine is engine
    flow.run()
    flow.join(timeout=60)
    assert read_lines(output_file) == [f"{i}:ok" for i in range(12)]
    assert read_lines(output_file + ".n") == [str(i) for i in range(1, 13)]
    assert engine.started is not None
    stages, realtime, config = engine.started
    assert realtime is False and config is flow.config
    assert {s.name: s.one_task for s in stages} == {
        n.name: isinstance(n, RunningList) for n in flow.nodes
    }
    stats = flow.stats()
    assert stats.node(running.name).one_task and not stats.node(copy.name).one_task
    assert stats.delivered == 12 and stats.pool_slots_in_use == 0
    with pytest.raises(RuntimeError, match="runs one flow once"):
        engine.inner.start(stages, False, config)


def test_a_process_engine_runs_one_flow():
    engine = ProcessEngine()
    assert not engine.running
    with pytest.raises(RuntimeError, match="not started"):
        engine.stats()
    engine.stop()  # before start: nothing to stop, no error
    engine.abort()


# -- the binding hook ----------------------------------------------------------------------------
class FakeContext:
    def __init__(self) -> None:
        self.meta: dict[str, Any] = {"index": 7}
        self.calls: list[tuple[tuple[int, ...], Any]] = []

    def allocate(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        self.calls.append((shape, dtype))
        return np.zeros(shape, dtype=dtype)


def test_an_unbound_node_allocates_on_the_heap_and_has_its_own_meta():
    node, other = CopyProcessor(), CopyProcessor()
    out = node.allocate((4, 5, 3))
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and out.flags.writeable
    assert node.allocate(6, np.float32).shape == (6,)
    assert node.meta == {}
    node.meta["seen"] = 1
    assert node.meta == {"seen": 1} and other.meta == {}
    frame = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert np.array_equal(node.process(frame), frame)


def test_a_bound_node_reads_its_context():
    node, context = CopyProcessor(), FakeContext()
    node.bind(context)
    assert node.meta is context.meta and node.meta["index"] == 7
    context.meta = {"index": 8}  # an engine replaces the meta per message
    assert node.meta["index"] == 8
    frame = np.ones((2, 3), dtype=np.int16)
    assert np.array_equal(node.process(frame), frame)
    assert context.calls == [((2, 3), np.dtype(np.int16))]
    node.allocate([3, 4])  # shapes are normalised to tuples of ints before the context
    assert context.calls[-1] == ((3, 4), np.uint8)

    copy = pickle.loads(pickle.dumps(node))  # a binding belongs to one process
    assert copy.meta == {} and len(context.calls) == 2
    copy.allocate(2)
    assert len(context.calls) == 2

    node.bind(None)
    assert node.meta == {}
    node.allocate(2)
    assert len(context.calls) == 2
