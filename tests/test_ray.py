"""The Ray engine: the same semantics as the process engine, checked on both.

Every semantic test runs on both engines (``engine`` parameter): batch order and exactly-once
with K = 1..3 and random delays, realtime accounting, a node raising, stop(), SIGINT once and
twice to a script, a killed worker. Ray-only: restarts, GPU requests, placement on a simulated
two-node cluster. One local Ray instance serves the whole session (``ray.init`` costs seconds);
after every test no actor of the test is alive and /dev/shm holds no new entry.

Run with ``pytest -m ray`` (needs the ``ray`` extra); the default run leaves these out.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import join_nodes  # noqa: E402
import nodes  # noqa: E402
import test_joins  # noqa: E402
import test_realtime  # noqa: E402
from conftest import read_lines, wait_for  # noqa: E402
from nodes import (  # noqa: E402
    FailingConsumer,
    FailingProcessor,
    FailingProducer,
    Ints,
    JitterProcessor,
    LifecycleProcessor,
    Lingers,
    RecordingConsumer,
    SlowProcessor,
    Stuck,
)
from scripts import (  # noqa: E402
    descendants,
    run_script,
    script_stats,
    wait_gone,
    write_script,
)

from videoflow import FlowError  # noqa: E402
from videoflow.consumers import VoidConsumer  # noqa: E402
from videoflow.core import BATCH, REALTIME, ConsumerNode, Flow, Join, ProcessorNode  # noqa: E402
from videoflow.core.constants import GPU  # noqa: E402
from videoflow.engine import ray_engine  # noqa: E402
from videoflow.engine.ray_engine import RayEngine  # noqa: E402
from videoflow.processors import IdentityProcessor  # noqa: E402
from videoflow.producers import IntProducer, SyntheticFrameProducer  # noqa: E402
from videoflow.transport.names import parse  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]

ENGINES = ["process", "ray"]
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
FAKE_GPUS = 1  # the local instance declares one GPU, so that GPU requests can be placed
END_WITHIN = 10.0  # seconds from a signal to the end of the script (Ray adds its own exit)


# -- one local Ray instance for the session ----------------------------------------------------


def _shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


_session: dict[str, Any] = {}


def local_ray() -> str:
    """Connect this process to the session's local Ray instance (started on first use, and
    again after the cluster test replaced it); returns its address."""
    if not ray.is_initialized():
        from ray import cloudpickle

        # Workers cannot import tests/ modules by name: send the test nodes by value.
        for module in (nodes, join_nodes, sys.modules[__name__]):
            cloudpickle.register_pickle_by_value(module)
        ray.init(num_cpus=2, num_gpus=FAKE_GPUS, include_dashboard=False,
                 log_to_driver=False)
        _session["address"] = ray.get_runtime_context().gcs_address
    return str(_session["address"])


@pytest.fixture(scope="session", autouse=True)
def ray_session():
    yield
    if ray.is_initialized():
        ray.shutdown()


class ShmWatch:
    """Which new /dev/shm entries are this test's: a "vf." entry whose owner pid (in its name)
    is a process of this test, or any entry mapped or open, while the test ran, by a process
    of this test: this pytest process and everything below it (the Ray instance it started,
    its actors, the scripts a test runs). Other suites running at the same time create and
    remove their own entries (``sem.mp-*`` of multiprocessing...): those are not ours.

    A thread looks every ``EVERY`` seconds at the entries that appeared since the start and
    at what the processes of this test map and hold open, so that an entry made by an actor
    that is gone by the end of the test still counts."""

    EVERY = 0.2

    def __init__(self) -> None:
        self.before = _shm()
        self.ours: set[str] = set()
        self.pids: set[int] = {os.getpid()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shm-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.EVERY):
            self.look()

    def look(self) -> None:
        new = _shm() - self.before - self.ours
        tree = {os.getpid()} | _descendants(os.getpid())
        self.pids |= tree
        for entry in new:
            name = parse(entry)
            if name is not None and name.owner_pid in self.pids:
                self.ours.add(entry)
        held = {e for e in new - self.ours if not e.startswith("vf.")}
        if held:
            self.ours |= held & _held_by(tree)

    def left(self, seconds: float = 5.0) -> set[str]:
        """Our entries still there once those on their way out are gone (``seconds`` at
        most)."""
        self._stop.set()
        self._thread.join()
        self.look()
        deadline = time.monotonic() + seconds
        while (left := self.ours & _shm()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left


def _held_by(pids: set[int]) -> set[str]:
    """The /dev/shm entries that processes ``pids`` map or hold open."""
    held: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as f:
            held.update(line.rsplit("/dev/shm/", 1)[1].split(" ")[0].strip()
                        for line in f if "/dev/shm/" in line)
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("/dev/shm/"):
                        held.add(target[len("/dev/shm/"):].split(" ")[0])
    return held


@pytest.fixture(autouse=True)
def no_actor_left():
    """Every actor a test started is gone when it ends, and /dev/shm holds no new entry of
    this test (ShmWatch; conftest checks the process engine's flows by their owner too)."""
    local_ray()
    watch = ShmWatch()
    try:
        yield
    finally:
        left = watch.left(0)  # stops the watch even when the test failed
    running = list(ray_engine._running)  # flows a failed test left running: end them first
    for engine in running:
        engine.kill()
        engine.wait(10)
    assert not running, "a test left a Ray flow running"
    deadline = time.monotonic() + 10
    while (alive := _alive_actors()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, f"actors left alive: {alive}"
    deadline = time.monotonic() + 5
    while (left := left & _shm()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"new entries in /dev/shm: {sorted(left)}"


def _alive_actors() -> list[tuple[str, int]]:
    """(class, pid) of the actors this Ray instance still has alive."""
    if not ray.is_initialized():
        return []
    from ray._private import state

    return [(a.get("ActorClassName", "?"), a.get("Pid", 0))
            for a in state.actors().values() if a.get("State") == "ALIVE"]


def engine_of(name: str, **options: Any) -> Any:
    """The ``engine=`` argument for a flow on ``name``: a RayEngine object when options are
    given, else the name."""
    return RayEngine(**options) if name == "ray" and options else name


def run(producer, consumer, engine, flow_type=BATCH, timeout: float = 60) -> Flow:
    flow = Flow([producer], [consumer], flow_type=flow_type, engine=engine)
    flow.run()
    assert flow.join(timeout), "the flow did not end in time"
    if isinstance(flow.engine, RayEngine):  # its actors are gone when join() returns
        pids = set(flow.engine.actor_pids())
        assert pids and not _wait_gone(pids, 0), "actors outlived join()"
    return flow


def ints(path: str) -> list[int]:
    return [int(x) for x in read_lines(path)]


# -- batch: order and exactly once ---------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_batch_delivers_every_message_once_in_order(output_file, engine, k):
    a = IntProducer(0, 149)
    b = JitterProcessor(0.004, nb_tasks=k)(a)
    c = JitterProcessor(0.002, nb_tasks=1)(b)
    d = RecordingConsumer(output_file)(c)
    flow = run(a, d, engine)
    assert ints(output_file) == list(range(150))
    stats = flow.stats()
    assert stats.produced == stats.delivered == 150 and stats.dropped == 0
    assert stats.node(b.name).nb_tasks == k and stats.node(b.name).messages_in == 150
    assert not stats.running and stats.pool_slots_in_use == 0
    assert len(flow.report().rows) == 4 and b.name in str(flow.report())


@pytest.mark.parametrize("engine", ENGINES)
def test_frames_and_metadata_travel_intact(output_file, engine):
    a = SyntheticFrameProducer((120, 160, 3), count=60)
    b = nodes.BigMeta(nb_tasks=2)(a)
    c = nodes.CheckMeta()(b)
    d = RecordingConsumer(output_file, frames=True)(c)
    run(a, d, engine)
    assert read_lines(output_file) == [f"{i}:ok" for i in range(60)]


@pytest.mark.parametrize("engine", ENGINES)
def test_several_parents_arrive_in_call_order(output_file, engine):
    a = IntProducer(0, 29)
    b = nodes.AddProcessor(100, nb_tasks=2)(a)
    c = nodes.PairProcessor()(b, a)
    d = RecordingConsumer(output_file)(c)
    run(a, d, engine)
    assert read_lines(output_file) == [f"({i + 100},{i})" for i in range(30)]


@pytest.mark.parametrize("engine", ENGINES)
def test_every_n_and_items_of_an_output(output_file, engine):
    # every=3: the node runs on one message in 3 and its last output goes on with the others,
    # marked in meta["skipped"]; pair[1] / pair[0]: a node reads one item of a tuple output.
    a = IntProducer(0, 29, name="source")
    b = nodes.CountCalls(every=3, name="counter")(a)
    pair = nodes.PairProcessor(name="pair")(a, b)
    c = nodes.MetaLog(output_file, name="sink")(pair[1])
    flow = run(a, c, engine)
    with open(output_file) as f:
        lines = [json.loads(line) for line in f]
    assert [line["index"] for line in lines] == list(range(30))
    for line in lines:
        i = line["index"]
        ran_on = i - i % 3
        assert line["value"] == [ran_on, ran_on // 3 + 1]
        assert line["skipped"] == (None if i == ran_on else {"counter": ran_on})
        assert line["stamped"]  # the producer stamped when it made the message
    assert flow.stats().node("counter").skipped == 20
    age = flow.stats().node("sink").frame_age
    assert age is not None and age.frames == 30


# -- realtime: drops to keep up, and counts them ---------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("k", "drop"), [(1, "oldest"), (2, "oldest"), (1, "newest")])
def test_realtime_drops_add_up(output_file, engine, k, drop):
    a = SyntheticFrameProducer((60, 80, 3), count=300, fps=500)
    b = IdentityProcessor(nb_tasks=k)(a)
    c = RecordingConsumer(output_file, delay=0.02, frames=True)(b)
    flow = Flow([a], [c], flow_type=REALTIME, engine=engine,
                flow_options={"realtime_drop": drop})
    flow.run()
    assert flow.join(60)
    lines = read_lines(output_file)
    indices = [int(line.split(":")[0]) for line in lines]
    assert all(line.endswith(":ok") for line in lines)
    assert indices == sorted(set(indices))
    stats = flow.stats()
    assert stats.produced == 300 and stats.dropped > 0
    assert stats.produced == stats.delivered + stats.dropped
    assert stats.delivered == len(lines)


# -- a node raising --------------------------------------------------------------------------------


def _failing(where: str):
    if where == "producer":
        a = FailingProducer(20, name="source")
        return a, VoidConsumer()(IdentityProcessor()(a)), "source", ("ValueError", "next()")
    if where == "open":
        a = FailingProducer(20, where="open", name="camera")
        return a, VoidConsumer()(a), "camera", ("RuntimeError", "open()", "cannot open")
    if where == "processor":
        a = IntProducer(0, 1000)
        b = FailingProcessor(77, nb_tasks=2, name="divider")(a)
        return a, VoidConsumer()(b), "divider", ("ZeroDivisionError", "process()", "77")
    a = IntProducer(0, 1000, 0.001)
    return a, FailingConsumer(10, name="sink")(a), "sink", ("KeyError", "consume()")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("where", ["producer", "open", "processor", "consumer"])
def test_a_node_raising_is_a_flow_error_naming_it(engine, where):
    a, c, name, words = _failing(where)
    flow = Flow([a], [c], flow_type=BATCH, engine=engine)
    flow.run()
    with pytest.raises(FlowError) as info:
        flow.join(60)
    err = info.value
    assert err.node == name, str(err)
    for word in words:
        assert word in str(err), str(err)
    assert "Traceback" in err.remote_traceback
    assert not flow.stats().running


@pytest.mark.parametrize("engine", ENGINES)
def test_an_output_that_cannot_be_sent_is_a_flow_error_naming_its_node(tmp_path, engine):
    p = nodes.FaultyProducer("none", count=100, name="source")
    x = nodes.FaultyProcessor("unpicklable", nb_tasks=2, name="middle")(p)
    c = VoidConsumer()(x)
    flow = Flow([p], [c], flow_type=BATCH, engine=engine)
    flow.run()
    with pytest.raises(FlowError) as info:
        flow.join(60)
    assert info.value.node == "middle" and "pickle" in str(info.value), str(info.value)


# -- stop ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("flow_type", [BATCH, REALTIME])
def test_stop_drains_what_was_produced(output_file, engine, flow_type):
    a = IntProducer(0, None, 0.002)
    b = SlowProcessor(0.002, nb_tasks=2)(a)
    c = RecordingConsumer(output_file)(b)
    flow = Flow([a], [c], flow_type=flow_type, engine=engine)
    flow.run()
    deadline = time.monotonic() + 60
    while len(read_lines(output_file)) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    live = flow.stats()  # counters while it runs
    assert live.running and live.produced >= live.delivered >= 30
    flow.stop()
    assert flow.join(30)
    got = ints(output_file)
    stats = flow.stats()
    assert got == sorted(set(got)) and len(got) >= 30
    if flow_type == BATCH:
        assert got == list(range(stats.produced)) and stats.dropped == 0
    assert stats.produced == stats.delivered + stats.dropped == len(got) + stats.dropped


# -- Ctrl-C in the process that runs the flow -----------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    import nodes
    from nodes import FaultyConsumer, FaultyProcessor, FaultyProducer
    from videoflow.core import Flow

    if __name__ == "__main__":
        if {engine!r} == "ray":
            from ray import cloudpickle
            cloudpickle.register_pickle_by_value(nodes)
        p = FaultyProducer("none", delay=0.002)
        x = FaultyProcessor("none", nb_tasks=2)(p)
        c = FaultyConsumer("none", {out!r}, delay={consumer_delay})(x)
        options = {{"engine": {engine!r}, "ray_address": {address!r}}}  # the session's Ray
        flow = Flow([p], [c], flow_type={flow_type!r}, flow_options=options)
        flow.run()
        pids = getattr(flow.engine, "actor_pids", lambda: [])
        deadline = time.monotonic() + 60
        while {engine!r} == "ray" and len(pids()) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        print("running", *pids(), flush=True)
        try:
            flow.join()
            code = 0
        except KeyboardInterrupt:
            code = 130
        s = flow.stats()
        print("stats", s.produced, s.delivered, s.dropped, flush=True)
        sys.exit(code)
    """
)


def _start_script(tmp_path, engine: str, flow_type: str, consumer_delay: float = 0.0):
    out = str(tmp_path / "out.txt")
    script = tmp_path / "flow.py"
    script.write_text(SCRIPT.format(tests=TESTS_DIR, out=out, engine=engine, address=local_ray(),
                                    flow_type=flow_type, consumer_delay=consumer_delay))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline().split()
    assert first and first[0] == "running", proc.stderr.read()  # type: ignore[union-attr]
    pids = {int(p) for p in first[1:]} or _descendants(proc.pid)
    deadline = time.monotonic() + 60
    while len(read_lines(out)) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(read_lines(out)) >= 30, "the flow did not get going"
    return proc, out, pids


def _descendants(pid: int) -> set[int]:
    return descendants(pid)


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    return wait_gone(pids, seconds)


def _interrupt(proc: subprocess.Popen, times: int) -> tuple[str, str]:
    """Ctrl-C ``times`` times (50 ms apart); the script's output once it has ended, which
    must be within END_WITHIN seconds of the last signal."""
    for i in range(times):
        if i:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < END_WITHIN
    return stdout, stderr


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("flow_type", [BATCH, REALTIME])
def test_sigint_once_stops_cleanly(tmp_path, engine, flow_type):
    proc, out, pids = _start_script(tmp_path, engine, flow_type)
    stdout, stderr = _interrupt(proc, 1)
    assert proc.returncode == 0, stderr
    produced, delivered, dropped = map(int, stdout.split("stats", 1)[1].split()[:3])
    lines = read_lines(out)
    indices = [int(line.split(":")[0]) for line in lines]
    assert all(line.endswith(":ok") for line in lines)
    assert delivered == len(lines) and produced == delivered + dropped
    if flow_type == BATCH:
        assert dropped == 0 and indices == list(range(len(lines)))
    else:
        assert indices == sorted(set(indices))
    assert not _wait_gone(pids, END_WITHIN)


@pytest.mark.parametrize("engine", ENGINES)
def test_sigint_twice_kills(tmp_path, engine):
    # A slow consumer: the graceful stop of the first Ctrl-C still drains when the second comes.
    proc, _, pids = _start_script(tmp_path, engine, BATCH, consumer_delay=0.05)
    _, stderr = _interrupt(proc, 2)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr.replace("KeyboardInterrupt", ""), stderr
    assert "Unhandled error" not in stderr, stderr  # the calls to killed actors were fetched
    assert not _wait_gone(pids, END_WITHIN), "tasks or actors outlived a second Ctrl-C"


@pytest.mark.parametrize("engine", ENGINES)
def test_sigkill_of_the_owner_leaves_no_task_behind(tmp_path, engine):
    proc, _, pids = _start_script(tmp_path, engine, BATCH)
    proc.kill()
    proc.wait(timeout=10)
    assert not _wait_gone(pids, END_WITHIN), "tasks or actors outlived their owner"
    proc.communicate(timeout=10)


# -- a worker that dies ----------------------------------------------------------------------------


class KillOnce(ProcessorNode):
    """Kills its own process (SIGKILL) at message ``at``, once per test whatever restarts it;
    records every open() in ``folder``."""

    def __init__(self, folder: str, at: int = 40, **kw: Any) -> None:
        super().__init__(**kw)
        self.folder, self.at = folder, at

    def open(self) -> None:
        with open(os.path.join(self.folder, f"open.{os.getpid()}"), "w"):
            pass

    def process(self, value: Any) -> Any:
        if self.meta["index"] >= self.at:
            try:  # O_EXCL: of two workers past ``at`` at once, only one kills itself
                os.close(os.open(os.path.join(self.folder, "killed"), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.002)
        return value


@pytest.mark.parametrize("engine", ENGINES)
def test_a_killed_worker_ends_the_flow_with_an_error(tmp_path, engine):
    a = IntProducer(0, 400)
    b = KillOnce(str(tmp_path), nb_tasks=2, name="victim")(a)
    c = VoidConsumer()(b)
    flow = Flow([a], [c], flow_type=BATCH, engine=engine)
    flow.run()
    with pytest.raises(FlowError) as info:
        flow.join(60)
    assert info.value.node == "victim", str(info.value)
    assert ("died" if engine == "ray" else "killed by signal SIGKILL") in str(info.value)
    assert os.path.exists(tmp_path / "killed")


def test_with_restarts_a_killed_actor_loses_nothing(tmp_path, output_file):
    a = IntProducer(0, 299)
    b = KillOnce(str(tmp_path), nb_tasks=2, name="victim")(a)
    c = RecordingConsumer(output_file)(b)
    flow = run(a, c, RayEngine(max_restarts=1))
    assert os.path.exists(tmp_path / "killed")
    assert ints(output_file) == list(range(300))  # every message once, in order
    opens = [f for f in os.listdir(tmp_path) if f.startswith("open.")]
    assert len(opens) == 3  # two actors, one of them opened again after its restart
    stats = flow.stats()
    assert stats.produced == stats.delivered == 300 and stats.dropped == 0


# -- bounded endings, as on the process engine (tests/test_endings.py) ----------------------------

FAST = {"stop_timeout": 0.5, "stop_grace": 0.5}



def join_error(flow: Flow) -> FlowError:
    """join() must end the flow with a FlowError (60 s at most: a hang fails the test)."""
    with pytest.raises(FlowError) as info:
        assert flow.join(timeout=60), "the flow did not end"
    return info.value


def stuck_flow(tmp_path, how: str, flow_type: str = BATCH, **options: Any) -> Flow:
    """source -> middle (3 tasks; the first to see message 20 gets stuck) -> sink, on Ray."""
    a = Ints(delay=0.002, name="source")
    b = Stuck(how, 20, str(tmp_path), nb_tasks=3, name="middle")(a)
    c = RecordingConsumer(str(tmp_path / "out.txt"), name="sink")(b)
    return Flow([a], [c], flow_type=flow_type, engine="ray", flow_options={**FAST, **options})


@pytest.mark.parametrize("flow_type", [BATCH, REALTIME])
def test_stop_interrupts_a_producer_blocked_in_next_on_ray(tmp_path, output_file, flow_type):
    # The producer's next() blocks for ever after 30 values (a camera that stops delivering):
    # stop() interrupts it and the flow ends gracefully. Were it not interrupted, the stop
    # would become an abort after stop_timeout, and join() would raise a FlowError naming the
    # producer "in next()": the error, not a clock, tells the two apart.
    a = Ints(block_at=30, folder=str(tmp_path), name="source")
    b = IdentityProcessor(nb_tasks=2)(a)
    c = RecordingConsumer(output_file)(b)
    flow = Flow([a], [c], flow_type=flow_type, engine="ray", flow_options={"stop_timeout": 20})
    flow.run()
    blocked = os.path.join(str(tmp_path), "blocked.")
    wait_for(lambda: any(str(p).startswith(blocked) for p in tmp_path.iterdir()),
             what="the blocked producer")
    if flow_type == BATCH:
        wait_for(lambda: len(read_lines(output_file)) == 30, what="30 messages")
    flow.stop()
    assert flow.join(timeout=60)
    stats = flow.stats()
    assert stats.produced == 30 and stats.produced == stats.delivered + stats.dropped
    if flow_type == BATCH:
        assert ints(output_file) == list(range(30)) and stats.dropped == 0


@pytest.mark.parametrize("how", ["deadlock", "sigstop"])
def test_stop_ends_a_flow_with_a_stuck_worker_and_report_names_it(tmp_path, how):
    flow = stuck_flow(tmp_path, how)
    flow.run()
    wait_for(lambda: any(p.name.startswith("stuck.") for p in tmp_path.iterdir()),
             what="the stuck worker")
    wait_for(lambda: flow.report().stalled, what="a stalled task in the report")
    report = flow.report()
    assert report.stalled[0].startswith("middle (task "), report.stalled
    # Message 20 or, with 3 tasks, a later one that another task started first.
    held = re.search(r"in process\(\) holding message (\d+)", report.stalled[0])
    assert held and 20 <= int(held[1]) < 23, report.stalled
    assert "stalled: middle (task" in report.verdict
    flow.stop()
    err = join_error(flow)
    text = str(err)
    assert err.node == "middle", text
    assert "did not end within 0.5 s of stop() (stop_timeout)" in text
    assert re.search(rf"'middle' \(task \d\): {re.escape(held[0])} for \d", text), text
    assert "and were aborted (and killed if still running 0.5 s later, stop_grace)" in text
    if how == "sigstop":
        assert "its process is stopped (SIGSTOP, or a debugger)" in text


CTRL_C_SCRIPT = """
    import nodes
    from nodes import Ints, RecordingConsumer
    from scripts import join_and_report
    from videoflow.core import BATCH, Flow

    if __name__ == "__main__":
        from ray import cloudpickle
        cloudpickle.register_pickle_by_value(nodes)
        a = Ints(block_at=30, folder={folder!r})
        c = RecordingConsumer({out!r})(a)
        options = {{"engine": "ray", "ray_address": {address!r}, "stop_timeout": 20}}
        flow = Flow([a], [c], flow_type=BATCH, flow_options=options)
        flow.run()
        join_and_report(flow, lambda s: [s.produced, s.delivered])
"""


def test_the_first_ctrl_c_interrupts_a_producer_blocked_in_next_on_ray(tmp_path, output_file):
    script = write_script(tmp_path, CTRL_C_SCRIPT, folder=str(tmp_path), out=output_file,
                          address=local_ray())

    def ctrl_c(proc: subprocess.Popen) -> None:
        wait_for(lambda: len(read_lines(output_file)) == 30, what="30 messages")
        proc.send_signal(signal.SIGINT)

    ran = run_script(script, timeout=90, meanwhile=ctrl_c)
    assert ran.returncode == 0, ran.stderr  # no FlowError: the stop did not wait for next()
    assert script_stats(ran.stdout) == [30, 30], ran.stdout + ran.stderr
    assert "Unhandled error" not in ran.stderr, ran.stderr


@pytest.mark.parametrize("flow_type", [BATCH, REALTIME])
def test_stall_timeout_fails_a_stalled_flow_naming_the_task_on_ray(tmp_path, flow_type):
    flow = stuck_flow(tmp_path, "deadlock", flow_type, stall_timeout=1.0)
    flow.run()  # no stop(): the watchdog alone ends it
    err = join_error(flow)
    text = str(err)
    assert err.node == "middle", text
    assert text.startswith("no message moved for 1 s (stall_timeout): 'middle' (task "), text
    assert re.search(r"is stalled, in process\(\) holding message \d+ for", text), text
    report = flow.report()
    assert report.stalled and report.stalled[0].startswith("middle (task "), str(report)


def test_a_close_that_does_not_return_is_named_on_ray(tmp_path, output_file):
    a = Ints(20, name="source")
    c = Lingers("close", output_file, name="sink")(a)
    flow = Flow([a], [c], flow_type=BATCH, engine="ray", flow_options=FAST)
    flow.run()
    err = join_error(flow)
    assert err.node == "sink", str(err)
    assert ("node 'sink' (task 0) did not return from close() within 0.5 s of its last "
            "message (stop_timeout), so it was killed") in str(err)
    assert read_lines(output_file) == [str(i) for i in range(20)]  # delivered first
    assert flow.stats().delivered == 20


ENDING_SCRIPT = """
    import nodes
    from nodes import FaultyProcessor, FaultyProducer, Lingers, Stuck
    from videoflow import FlowError
    from videoflow.consumers import VoidConsumer
    from videoflow.core import Flow

    if __name__ == "__main__":
        from ray import cloudpickle
        cloudpickle.register_pickle_by_value(nodes)
        p = FaultyProducer("none", count=200, delay=0.002, name="source")
        if {ending!r} == "stall":
            x = Stuck("deadlock", 20, {folder!r}, nb_tasks=2, name="middle")(p)
        else:
            fault = "unpicklable" if {ending!r} == "unsendable" else "none"
            x = FaultyProcessor(fault, nb_tasks=2, name="middle")(p)
        if {ending!r} == "close":
            c = Lingers("close", {out!r}, name="sink")(x)
        else:
            c = VoidConsumer()(x)
        options = {{"engine": "ray", "ray_address": {address!r}, "stop_timeout": 0.5,
                    "stop_grace": 0.5, "stall_timeout": 1.0 if {ending!r} == "stall" else 0}}
        flow = Flow([p], [c], flow_type="batch", flow_options=options)
        flow.run()
        try:
            flow.join()
        except FlowError as err:
            print("FlowError", err.node, flush=True)
"""


@pytest.mark.parametrize("ending", ["unsendable", "stall", "close"])
def test_a_failed_flow_says_only_its_flow_error(tmp_path, ending):
    # Calls in flight when a flow is torn down fail (a message that could not be sent, the
    # actors killed): Ray logs "Unhandled error" for each result nobody fetched, unless the
    # engine fetches them. The user's console shows the FlowError only.
    script = write_script(tmp_path, ENDING_SCRIPT, folder=str(tmp_path), ending=ending,
                          out=str(tmp_path / "out.txt"), address=local_ray())
    proc = run_script(script, timeout=90)
    node = "sink" if ending == "close" else "middle"
    assert f"FlowError {node}" in proc.stdout, proc.stdout + proc.stderr
    assert "Unhandled error" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


# -- joins and skip_when_busy: the process engine's tests, on Ray ---------------------------------


class TestOnRay:
    """The tests of joins (tests/test_joins.py) and of skip_when_busy (tests/test_realtime.py)
    that hold whatever the engine, run on Ray (``VIDEOFLOW_ENGINE=ray``); the default suite runs
    them on the process engine. Left out: those about shared memory, queue depths and the JOIN
    task's process (blobs, a full inbox, SIGKILL of the JOIN, its doorbell)."""

    @pytest.fixture(autouse=True)
    def _on_ray(self, monkeypatch):
        monkeypatch.setenv("VIDEOFLOW_ENGINE", "ray")

    test_seq_pairs = staticmethod(test_joins.test_seq_pairs_the_ith_frames_and_counts_what_is_left)
    test_seq_frames = staticmethod(test_joins.test_seq_frames_reach_the_join_intact_and_in_order)
    test_multi_task = staticmethod(
        test_joins.test_multi_task_nodes_before_and_after_a_join_keep_the_order)
    test_latest_silent = staticmethod(test_joins.test_latest_goes_on_without_a_silent_stream)
    test_latest_batch = staticmethod(test_joins.test_latest_in_batch_loses_nothing_it_receives)
    test_time_pairs = staticmethod(test_joins.test_time_pairs_by_timestamp)
    test_time_refuses = staticmethod(test_joins.test_time_refuses_timestamps_that_go_back)
    test_nested = staticmethod(test_joins.test_nested_joins_merge_their_sources)
    test_never_meet = staticmethod(test_joins.test_producers_that_never_meet_run_side_by_side)
    test_one_ends = staticmethod(test_joins.test_one_producer_ending_ends_only_its_stream)
    test_stop = staticmethod(test_joins.test_stop_ends_every_producer_and_drains)
    test_raising_before = staticmethod(
        test_joins.test_an_exception_in_one_streams_node_fails_the_flow)
    test_raising_after = staticmethod(test_joins.test_an_exception_after_the_join_fails_the_flow)
    test_skip_when_busy = staticmethod(
        test_realtime.test_skip_when_busy_passes_waiting_messages_on)


def test_a_join_waiting_for_one_stream_holds_back_the_other_producer(tmp_path):
    """BATCH on Ray: while b is silent, a's values wait in the JOIN's buffer and in a's window,
    then a's producer waits: nothing dropped, nothing unbounded, the pairs go on afterwards."""
    out = str(tmp_path / "out.jsonl")
    a = join_nodes.Stamped(40, shape=(24, 32, 3), name="a")
    b = join_nodes.Stamped(8, stall_at=1, stall=3.0, shape=(24, 32, 3), name="b")
    sink = join_nodes.JoinedLog(out, names=("a", "b"), frames=True, name="sink")(a, b)
    pending, depth = 3, 4
    flow = Flow([a, b], [sink], flow_type=BATCH, engine="ray",
                flow_options={"join_pending": pending, "queue_depth": depth})
    # a's first value goes out with b's; then the JOIN buffers `pending` of a's values and a's
    # stream has its window (2 per actor + queue_depth) in flight or waiting for the JOIN.
    bound = 1 + pending + 2 + depth
    flow.run()
    most = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        made = flow.stats().produced_by
        if made["b"] > 1:
            break
        most = max(most, made["a"])
        time.sleep(0.1)
    assert flow.join(60)
    assert pending < most <= bound
    lines = join_nodes.read_log(out)
    assert [line["index"] for line in lines] == list(range(8))
    assert all(line["values"] == [True, True] for line in lines)
    stats = flow.stats()
    a_in = stats.join().inputs[0]
    assert (a_in.produced, a_in.dropped, a_in.used, a_in.unmatched) == (40, 0, 8, 32)
    assert stats.node("a").blocked_s > 0
    test_joins.assert_accounted(flow)


def test_with_restarts_a_killed_actor_in_a_joined_stream_loses_nothing(tmp_path):
    # The victim is the last stage of a's stream: Ray retries its calls that also return the
    # metadata the driver pairs by (call_split), and every pair still comes once, in order.
    out = str(tmp_path / "out.jsonl")
    a = join_nodes.Stamped(150, name="a")
    b = join_nodes.Stamped(150, name="b")
    victim = KillOnce(str(tmp_path), nb_tasks=2, name="victim")(a)
    sink = join_nodes.JoinedLog(out, join=Join.seq(), name="sink")(victim, b)
    flow = Flow([a, b], [sink], flow_type=BATCH, engine=RayEngine(max_restarts=1))
    flow.run()
    assert flow.join(60)
    assert os.path.exists(tmp_path / "killed")
    assert [line["values"] for line in join_nodes.read_log(out)] == [[i, i] for i in range(150)]
    a_in = flow.stats().join().inputs[0]
    assert (a_in.received, a_in.used, a_in.unmatched) == (150, 150, 0)


def test_a_restarted_node_that_skips_when_busy_goes_on_skipping_as_before(tmp_path, output_file):
    # The node dies at message 40 and Ray restarts it: its calls say their number, so it
    # still runs on the messages that find nothing waiting behind them, not on none of them.
    a = IntProducer(0, None, fps=1000, name="source")
    b = KillOnce(str(tmp_path), at=40, skip_when_busy=True, name="victim")(a)
    c = nodes.MetaLog(output_file, name="sink")(b)
    flow = Flow([a], [c], flow_type=REALTIME, engine=RayEngine(max_restarts=1))
    flow.run()

    def logged() -> list[dict[str, Any]]:
        with open(output_file) as f:
            return [json.loads(line) for line in f if line.strip()]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.exists(output_file) and sum(1 for x in logged() if x["index"] > 40) >= 40:
            break
        time.sleep(0.05)
    flow.stop()
    assert flow.join(60)
    assert os.path.exists(tmp_path / "killed")
    lines = logged()
    got = [line["index"] for line in lines]
    assert got == sorted(set(got))
    after = [line for line in lines if line["index"] > 40]
    ran = [line for line in after if line["skipped"] is None]
    assert len(ran) >= 3 and len(ran) < len(after), (len(ran), len(after))
    stats = flow.stats()
    assert stats.node("victim").skipped > 0
    assert stats.produced == stats.delivered + stats.dropped


# -- Ray specifics ---------------------------------------------------------------------------------


def test_gpu_nodes_ask_ray_for_a_gpu_while_there_are_any(tmp_path, output_file):
    # The session's instance declares one GPU: one task gets it, the other runs on the CPU.
    a = IntProducer(0, 19)
    b = LifecycleProcessor(str(tmp_path), nb_tasks=2, device_type=GPU)(a)
    c = RecordingConsumer(output_file)(b)
    run(a, c, "ray")
    seen = sorted((tmp_path / m).read_text() for m in os.listdir(tmp_path) if m.startswith("open."))
    assert seen == [" cpu", "0 gpu"]
    assert b.device_type == GPU


def test_bad_actor_options_and_unpicklable_nodes_are_clear_errors():
    a = IntProducer(0, 5)
    c = VoidConsumer()(a)
    flow = Flow([a], [c], engine=RayEngine(actor_options={"nobody": {"num_cpus": 1}}))
    with pytest.raises(ValueError, match="nobody"):
        flow.run()
    with pytest.raises(ValueError, match="max_restarts"):
        RayEngine(max_restarts=-5)


def test_allocate_and_meta_work_in_nodes(output_file):
    a = SyntheticFrameProducer((32, 48, 3), count=40)  # writes into allocate()d frames
    b = nodes.CopyProcessor(nb_tasks=2)(a)  # allocate() + copy
    c = nodes.DictOfArrays()(b)  # reads meta["index"]
    d = nodes.UnwrapDict()(c)  # checks it against meta
    e = RecordingConsumer(output_file, frames=True)(d)
    run(a, e, "ray")
    assert read_lines(output_file) == [f"{i}:ok" for i in range(40)]


def test_bench_runs_the_videoflow_rows_on_ray(tmp_path):
    from videoflow.benchmark.result import validate
    from videoflow.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--engine", "ray", "--quick", "--size", "64x48", "--only", "handoff",
                 "--duration", "0.3", "--baselines", "single", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert validate(data) == []
    ours = next(r for r in data["rows"] if r["impl"] == "videoflow")
    assert ours["params"]["engine"] == "ray" and ours["frames"] > 0 and ours["hop_cpu_us"] > 0
    assert "single process" in ours["ratios"]


class CheckFrame(ProcessorNode):
    """Checks the frame it receives and says which Ray node it ran on."""

    def process(self, frame: np.ndarray) -> tuple[bool, str]:
        return nodes.check_frame(frame, self.meta["index"]), ray.get_runtime_context().get_node_id()


class Collect(ConsumerNode):
    def __init__(self, path: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = path

    def consume(self, frame: np.ndarray, checked: tuple[bool, str]) -> None:
        ok = nodes.check_frame(frame, self.meta["index"]) and checked[0]
        with open(self.path, "a") as f:
            f.write(f"{self.meta['index']}:{'ok' if ok else 'bad'}:{checked[1]}\n")


@pytest.mark.timeout(240)
def test_a_two_node_cluster_runs_stages_on_different_nodes(tmp_path):
    """Last in the file: it replaces the session's instance by a simulated cluster."""
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"camera_box": 1}, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, resources={"gpu_box": 1})
        ray.init(address=cluster.address, log_to_driver=False)
        out = str(tmp_path / "out.txt")
        a = SyntheticFrameProducer((240, 320, 3), count=50, name="camera")
        b = CheckFrame(nb_tasks=2, name="detector")(a)
        c = Collect(out, name="writer")(a, b)
        engine = RayEngine(actor_options={
            "camera": {"resources": {"camera_box": 0.1}},
            "detector": {"resources": {"gpu_box": 0.1}},
            "writer": {"resources": {"camera_box": 0.1}},
        })
        run(a, c, engine, timeout=120)
        where = engine.placement()
        assert where[("camera", 0)] == where[("writer", 0)]
        assert where[("detector", 0)] == where[("detector", 1)] != where[("camera", 0)]
        lines = [line.split(":") for line in read_lines(out)]
        assert [int(i) for i, _, _ in lines] == list(range(50))
        assert all(ok == "ok" and node == where[("detector", 0)] for _, ok, node in lines)
    finally:
        ray.shutdown()
        cluster.shutdown()
        _session.clear()
