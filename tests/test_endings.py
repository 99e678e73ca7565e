"""Every ending is bounded and says what happened: the fault matrix of issue 18.

Each case makes a flow end in a way a user can hit (a worker frozen or deadlocked, a close()
that never returns, a thread that keeps a task alive, a producer blocked in next(), a script
that forgets join(), a node that cannot be unpickled or exits on its own, a dead forkserver,
a message queue limit) and checks the ending through the public API: how the flow ended, what
the FlowError says, that every slot came back. The autouse fixture of conftest.py checks that
no process and no /dev/shm entry is left. Deadlines are set short (``FAST``) so that each case
ends within seconds; nothing here asserts a wall-clock time.
"""

from __future__ import annotations

import gc
import glob
import math
import os
import re
import signal
import subprocess
import time
import weakref

import pytest
from conftest import read_lines, wait_clean, wait_for
from nodes import (
    CountsLoads,
    ExitsAt,
    GrabbingProducer,
    Ints,
    Lingers,
    NumpyCopyProcessor,
    RaisesBrokenStr,
    RecordingConsumer,
    Stuck,
    Unloadable,
)
from scripts import alive, run_script, script_stats, write_script

from videoflow import FlowError
from videoflow.consumers import VoidConsumer
from videoflow.core import BATCH, REALTIME, Flow
from videoflow.engine.runner import forkserver_pid
from videoflow.producers import IntProducer, SyntheticFrameProducer

FAST = {"stop_timeout": 0.5, "stop_grace": 0.5}



def wait_settled(count, done: int, quiet: float = 2.0, seconds: float = 30.0) -> None:
    """Wait until ``count()`` reaches ``done`` or stops growing for ``quiet`` seconds."""
    deadline = time.monotonic() + seconds
    last, since = -1, time.monotonic()
    while (now := count()) < done and time.monotonic() < deadline:
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > quiet:
            return
        time.sleep(0.02)


def noted(folder, what: str) -> list[int]:
    """Pids that left a ``<what>.<pid>`` note (tests/nodes.py ``note``)."""
    return sorted(int(p.rsplit(".", 1)[1]) for p in glob.glob(os.path.join(folder, f"{what}.*")))


def join_error(flow: Flow) -> FlowError:
    """join() must end the flow (30 s at most: a hang fails the test) with a FlowError."""
    with pytest.raises(FlowError) as info:
        assert flow.join(timeout=30), "the flow did not end"
    return info.value


def run_to_error(source, node) -> tuple[Flow, FlowError]:
    """source -> node -> VoidConsumer, BATCH: run it, expect a FlowError naming ``node``."""
    flow = Flow([source], [VoidConsumer()(node(source))], flow_type=BATCH)
    flow.run()
    err = join_error(flow)
    assert err.node == node.name, str(err)
    return flow, err


def stuck_flow(
    tmp_path, how: str, k: int, flow_type: str = BATCH, **options
) -> tuple[Flow, str]:
    out = str(tmp_path / "out.txt")
    a = Ints(delay=0.002, name="source")
    b = Stuck(how, 20, str(tmp_path), nb_tasks=k, name="middle")(a)
    c = RecordingConsumer(out, name="sink")(b)
    return Flow([a], [c], flow_type=flow_type, flow_options={**FAST, **options}), out


# -- a frozen or deadlocked worker ------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("how", ["sigstop", "deadlock"])
def test_stop_ends_a_flow_with_a_stuck_worker_and_report_names_it(tmp_path, how, k):
    flow, _ = stuck_flow(tmp_path, how, k)
    flow.run()
    wait_for(lambda: noted(tmp_path, "stuck"), what="the stuck worker")
    wait_for(lambda: flow.report().stalled, what="a stalled task in the report")
    report = flow.report()
    assert report.bottleneck is None, str(report)
    assert report.stalled[0].startswith("middle (task "), report.stalled
    # Message 20 or, with 3 tasks, a later one that another task started first.
    held = re.search(r"in process\(\) holding message (\d+)", report.stalled[0])
    assert held and 20 <= int(held[1]) < 20 + k, report.stalled
    assert "stalled: middle (task" in report.verdict and "stalled)" in report.table()
    flow.stop()
    err = join_error(flow)
    assert err.node == "middle", str(err)
    text = str(err)
    assert "did not end within 0.5 s of stop() (stop_timeout)" in text
    assert held[0] in text
    if how == "sigstop":
        assert "its process is stopped (SIGSTOP, or a debugger)" in text
    stats = flow.stats()
    assert not stats.running and stats.pool_slots_in_use == 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("ending", ["stop", "stall_timeout"])
def test_a_flow_whose_idle_worker_is_frozen_ends(tmp_path, ending):
    # One of three workers is stopped before any message reaches it: the other two take every
    # message, but the stop message meant for the frozen one never gets through. stop() ends
    # the flow; so does the stall watchdog, on its own, once the worker has been stopped that
    # long (messages may still be moving around it).
    out = str(tmp_path / "out.txt")
    a = Ints(40, delay=0.002, name="source")
    b = Stuck("none", None, str(tmp_path), nb_tasks=3, name="middle")(a)
    c = RecordingConsumer(out, name="sink")(b)
    options = {**FAST, "stall_timeout": 1.0} if ending == "stall_timeout" else FAST
    flow = Flow([a], [c], flow_type=BATCH, flow_options=options)
    flow.run()
    wait_for(lambda: len(noted(tmp_path, "pid")) == 3, what="three workers")
    frozen = noted(tmp_path, "pid")[0]
    os.kill(frozen, signal.SIGSTOP)
    if ending == "stop":
        # Every message gets through, unless the producer began before the SIGSTOP landed (a
        # loaded machine) and the frozen worker holds one: then an in-order prefix does.
        wait_settled(lambda: len(read_lines(out)), done=40)
        assert not flow.join(timeout=1), "the flow ended with a frozen worker"
        flow.stop()
    err = join_error(flow)
    assert err.node == "middle" and "its process is stopped" in str(err), str(err)
    if ending == "stop":
        lines = read_lines(out)
        assert lines == [str(i) for i in range(len(lines))]
    else:
        assert "(stall_timeout): 'middle' (task " in str(err) and " is stalled, " in str(err)
    assert flow.stats().pool_slots_in_use == 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("flow_type", [BATCH, REALTIME])
@pytest.mark.parametrize("how", ["sigstop", "deadlock"])
def test_stall_timeout_fails_a_stalled_flow_naming_the_task(tmp_path, how, flow_type):
    # REALTIME: the producer keeps making and dropping messages around the stuck task.
    flow, _ = stuck_flow(tmp_path, how, 3, flow_type, stall_timeout=1.0)
    flow.run()  # no stop(): the watchdog alone ends it
    err = join_error(flow)
    assert err.node == "middle", str(err)
    text = str(err)
    assert text.startswith("no message moved for 1 s (stall_timeout): 'middle' (task ")
    assert re.search(r"is stalled, in process\(\) holding message \d+ for", text), text
    report = flow.report()
    assert report.stalled and report.stalled[0].startswith("middle (task "), str(report)
    assert flow.stats().pool_slots_in_use == 0


@pytest.mark.timeout(60)
def test_stall_timeout_leaves_a_moving_flow_alone(tmp_path):
    out = str(tmp_path / "out.txt")
    a = Ints(60, delay=0.01)
    c = RecordingConsumer(out)(a)
    flow = Flow([a], [c], flow_type=BATCH, flow_options={"stall_timeout": 0.5})
    flow.run()
    assert flow.join(timeout=30)
    assert len(read_lines(out)) == 60 and not flow.report().stalled


# -- a task that does not exit after its last message ------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("where", "how", "says"),
    [
        ("sink", "close", "node 'sink' (task 0) did not return from close() within 0.5 s"),
        ("sink", "thread", "threads kept it alive: grabber"),
        ("source", "thread", "threads kept it alive: grabber"),
    ],
)
def test_a_task_that_does_not_exit_is_killed_and_named(tmp_path, where, how, says):
    out = str(tmp_path / "out.txt")
    if where == "source":
        a = GrabbingProducer(20, name="source")
        c = RecordingConsumer(out, name="sink")(a)
    else:
        a = Ints(20, name="source")
        c = Lingers(how, out, name="sink")(a)
    flow = Flow([a], [c], flow_type=BATCH, flow_options=FAST)
    flow.run()
    err = join_error(flow)
    assert err.node == where and says in str(err), str(err)
    assert "of its last message (stop_timeout), so it was killed" in str(err)
    assert read_lines(out) == [str(i) for i in range(20)]  # everything was delivered first
    stats = flow.stats()
    assert stats.delivered == 20 and stats.pool_slots_in_use == 0


# -- a producer blocked in next() ----------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("k", [1, 3])
def test_stop_interrupts_a_producer_blocked_in_next(tmp_path, k):
    out = str(tmp_path / "out.txt")
    a = Ints(block_at=30, folder=str(tmp_path), name="source")
    b = Stuck("none", None, str(tmp_path), nb_tasks=k)(a)
    c = RecordingConsumer(out)(b)
    flow = Flow([a], [c], flow_type=BATCH, flow_options={"stop_timeout": 20})
    flow.run()
    wait_for(lambda: noted(tmp_path, "blocked") and len(read_lines(out)) == 30)
    flow.stop()
    assert flow.join(timeout=30)  # graceful: no error, well before stop_timeout
    assert read_lines(out) == [str(i) for i in range(30)]
    stats = flow.stats()
    assert stats.produced == stats.delivered == 30 and stats.pool_slots_in_use == 0


CTRL_C_SCRIPT = """
    from nodes import Ints, RecordingConsumer
    from scripts import join_and_report
    from videoflow.core import BATCH, Flow

    if __name__ == "__main__":
        a = Ints(block_at=30, folder={folder!r})
        c = RecordingConsumer({out!r})(a)
        flow = Flow([a], [c], flow_type=BATCH, flow_options={{"stop_timeout": 20}})
        flow.run()
        join_and_report(flow, lambda s: [s.produced, s.delivered, s.pool_slots_in_use])
"""


@pytest.mark.timeout(60)
def test_the_first_ctrl_c_interrupts_a_producer_blocked_in_next(tmp_path):
    out = str(tmp_path / "out.txt")
    script = write_script(tmp_path, CTRL_C_SCRIPT, folder=str(tmp_path), out=out)

    def interrupt(proc: subprocess.Popen) -> None:
        wait_for(lambda: noted(tmp_path, "blocked") and len(read_lines(out)) == 30)
        proc.send_signal(signal.SIGINT)

    done = run_script(script, meanwhile=interrupt)
    assert done.returncode == 0, done.stderr
    assert script_stats(done.stdout) == [30, 30, 0], done.stdout + done.stderr
    assert not wait_clean(done.pid, 5)[0]


# -- a script that ends without join() --------------------------------------------------------

EXIT_SCRIPT = """
    import os, time
    from nodes import Ints, RecordingConsumer
    from videoflow.core import Flow

    if __name__ == "__main__":
        a = Ints({count}, delay=0.002, name="numbers")
        c = RecordingConsumer({out!r}, name="keeper")(a)
        Flow([a], [c], flow_type={flow_type!r}).run()
        while {wait} and not (os.path.exists({out!r}) and os.path.getsize({out!r})):
            time.sleep(0.01)  # until values arrive (the test's timeout bounds it)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flow_type", [BATCH, REALTIME])
def test_a_flow_left_running_at_exit_ends_without_silent_loss(tmp_path, flow_type):
    # BATCH: the interpreter waits for the flow, which delivers all 200 values; REALTIME (no
    # end of its own, left once values flow): the flow is stopped gracefully, and its consumer
    # closed. Either way a warning names the flow.
    out = str(tmp_path / "out.txt")
    count = 200 if flow_type == BATCH else None
    script = write_script(
        tmp_path, EXIT_SCRIPT, out=out, count=count, flow_type=flow_type,
        wait=flow_type == REALTIME,
    )
    done = run_script(script)
    stderr = done.stderr
    assert done.returncode == 0, stderr
    said = f"the {flow_type.upper()} flow numbers -> keeper was still running at interpreter exit"
    assert said in stderr, stderr
    values = [int(v) for v in read_lines(out)]
    if flow_type == BATCH:
        assert "waiting for it to deliver everything" in stderr
        assert values == list(range(200))
    else:
        assert "stopping it" in stderr
        assert values and values == sorted(set(values))  # closed cleanly, in order
    assert not wait_clean(done.pid, 5)[0]


# -- descriptors and memory -------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _small_flow(fail: bool) -> Flow:
    a = SyntheticFrameProducer((32, 32, 3), count=20)
    b = (RaisesBrokenStr() if fail else NumpyCopyProcessor())(a)
    c = NumpyCopyProcessor(nb_tasks=2)(b)
    return Flow([a], [VoidConsumer()(c)], flow_type=BATCH)


@pytest.mark.timeout(120)
def test_finished_and_failed_flows_hold_no_descriptor(tmp_path):
    kept: list[object] = []
    gc.disable()
    try:
        first = _small_flow(False)  # starts the forkserver, if it is not running yet
        first.run()
        first.join()
        before = _open_fds()
        for i in range(10):
            flow = _small_flow(fail=i % 2 == 1)  # the last one fails
            flow.run()
            try:
                flow.join()
            except FlowError as exc:
                kept.append(exc)  # its traceback holds join()'s frame, and so the flow
            kept.append(flow)
        assert _open_fds() == before, os.listdir("/proc/self/fd")
        # No cycle through the raised error: dropped, a failed flow goes at once, gc or not.
        failed = weakref.ref(kept[-1])
        assert isinstance(kept[-2], FlowError)
        kept.clear()
        del flow
        assert failed() is None, gc.get_referrers(failed())
    finally:
        gc.enable()


@pytest.mark.timeout(60)
def test_each_task_unpickles_its_node_once(tmp_path):
    a = IntProducer(0, 20)
    b = CountsLoads(str(tmp_path), nb_tasks=3)(a)
    flow = Flow([a], [VoidConsumer()(b)], flow_type=BATCH)
    flow.run()
    assert flow.join(timeout=30)
    loads = glob.glob(str(tmp_path / "loaded.*"))
    assert len(loads) == 3 and all(len(read_lines(p)) == 1 for p in loads), loads


# -- errors that say what happened ----------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("k", [1, 3])
def test_os_exit_in_a_node_is_named_and_its_slots_come_back(tmp_path, k):
    a = SyntheticFrameProducer((48, 64, 3), count=100, name="source")
    flow, err = run_to_error(a, ExitsAt(5, nb_tasks=k, name="middle"))
    assert err.exitcode == 0, str(err)
    assert "exited unexpectedly with code 0 (in process() holding message 5)" in str(err)
    stats = flow.stats()
    assert stats.pool_slots_in_use == 0 and stats.slots_reclaimed >= 1


@pytest.mark.timeout(60)
def test_a_node_that_cannot_be_unpickled_in_its_task_is_named(tmp_path):
    _, err = run_to_error(IntProducer(0, 5), Unloadable(name="fragile"))
    assert str(err).startswith(
        "node 'fragile' (task 0) could not be unpickled in its task process: RuntimeError: "
        "this node cannot be restored (injected)"
    )
    assert "__setstate__" in err.remote_traceback


@pytest.mark.timeout(60)
def test_an_exception_whose_str_raises_reaches_the_flow_error(tmp_path):
    _, err = run_to_error(IntProducer(0, 10), RaisesBrokenStr(name="odd"))
    assert "raised BrokenStr in process(): <BrokenStr.__str__ raised TypeError>" in str(err)
    assert "BrokenStr" in err.remote_traceback and "raise BrokenStr" in err.remote_traceback


@pytest.mark.timeout(90)
def test_a_dead_forkserver_is_reported_as_such(tmp_path):
    a = Ints(delay=0.005, name="source")
    b = Stuck("none", None, str(tmp_path), nb_tasks=2, name="middle")(a)
    flow = Flow(
        [a], [VoidConsumer()(b)], flow_type=BATCH,
        flow_options={"start_method": "forkserver", **FAST},
    )
    flow.run()
    wait_for(lambda: len(noted(tmp_path, "pid")) == 2 and flow.stats().produced > 10)
    server = forkserver_pid()
    assert server is not None
    os.kill(server, signal.SIGKILL)
    err = join_error(flow)
    assert err.node == "<forkserver>", str(err)
    assert f"the forkserver process (pid {server}) died" in str(err)
    assert "no node is to blame" in str(err)
    wait_for(lambda: not alive(set(noted(tmp_path, "pid"))), 10, "the end of the orphaned tasks")
    assert flow.stats().pool_slots_in_use == 0
    a2 = IntProducer(0, 5)
    flow2 = Flow([a2], [VoidConsumer()(a2)], flow_options={"start_method": "forkserver"})
    flow2.run()
    assert flow2.join(timeout=60)  # a new forkserver


MSGQUEUE_SCRIPT = """
    import resource
    hard = resource.getrlimit(resource.RLIMIT_MSGQUEUE)[1]
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (2048, hard))
    from videoflow.consumers import VoidConsumer
    from videoflow.core import Flow
    from videoflow.producers import IntProducer

    if __name__ == "__main__":
        a = IntProducer(0, 5)
        Flow([a], [VoidConsumer()(a)]).run()
"""


@pytest.mark.timeout(60)
def test_without_the_native_extension_the_queue_limit_is_named(tmp_path):
    script = write_script(tmp_path, MSGQUEUE_SCRIPT)
    run = run_script(script, env={"VIDEOFLOW_NATIVE": "0"}, timeout=50)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("OSError: [Errno 24] cannot create the control queue"), run.stderr
    assert "RLIMIT_MSGQUEUE" in last and "ulimit -q" in last and "queue_depth" in last


# -- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("stop_timeout", 0, "stop_timeout must be a number of seconds from 0.01 to 86400"),
        ("stop_timeout", math.inf, "stop_timeout must be a number of seconds"),
        ("stall_timeout", -1, "stall_timeout must be a number of seconds from 0 to 86400 "
                              "(0: off), got -1"),
        ("stall_timeout", math.nan, "stall_timeout must be a number of seconds"),
        ("stall_timeout", "5", "stall_timeout must be a number of seconds"),
    ],
)
def test_ending_options_are_checked(option, value, says):
    a = IntProducer(0, 3)
    with pytest.raises(ValueError, match=re.escape(says)):
        Flow([a], [VoidConsumer()(a)], flow_options={option: value})
