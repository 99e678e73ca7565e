"""Fault matrix: every way a flow can fail ends it within 5 s, cleanly, whatever K and flow type.

Each case runs producer -> X (nb_tasks = K) -> consumer with one injected fault (tests/nodes.py,
``Faulty``) and checks the ending: a FlowError naming the faulty node (or a clean stop), no live
child process, none of the flow's names in /dev/shm or /dev/mqueue, and pool occupancy 0.
"Within 5 s" is measured from the moment the fault fired (the node records it) to the return of
``join()``: a liveness bound, not a performance figure.
"""

from __future__ import annotations

import contextlib
import glob
import multiprocessing as mp
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import own_entries, read_lines, wait_clean
from nodes import DictOfArrays, FaultyConsumer, FaultyProcessor, FaultyProducer, KeepsInput
from scripts import (
    descendants,
    interrupt,
    read_until,
    script_stats,
    start_script,
    wait_gone,
    write_script,
)

from videoflow import FlowError
from videoflow.consumers import VoidConsumer
from videoflow.core import BATCH, REALTIME, Flow
from videoflow.errors import StaleSlotError
from videoflow.producers import SyntheticFrameProducer
from videoflow.transport.shm import POISON, PoolRegistry, SlotAllocator

END_WITHIN = 5.0
KS = [1, 3]
TYPES = [BATCH, REALTIME]


def build(tmp_path, where: str, fault: str, k: int, flow_type: str, count=None, delay=0.0):
    """producer -> X(K) -> consumer, with ``fault`` in the node named by ``where``."""
    folder = str(tmp_path)
    out = str(tmp_path / "out.txt")
    p = FaultyProducer(
        fault if where == "producer" else "none", folder=folder, count=count, delay=delay,
        name="source",
    )
    x = FaultyProcessor(fault if where == "processor" else "none", folder=folder, nb_tasks=k,
                        name="middle")(p)
    c = FaultyConsumer(fault if where == "consumer" else "none", out, folder=folder,
                       name="sink")(x)
    return Flow([p], [c], flow_type=flow_type), out


def fault_time(tmp_path) -> float:
    marks = glob.glob(str(tmp_path / "fault.*"))
    assert marks, "the fault never fired"
    return min(float(open(m).read()) for m in marks)


def finish(flow: Flow) -> tuple[FlowError | None, float]:
    """Join (20 s at most: a hang fails the test), return the error and when join returned."""
    try:
        ended = flow.join(timeout=20)
    except FlowError as exc:
        return exc, time.time()
    assert ended, "the flow did not end within 20 s"
    return None, time.time()


def assert_clean(flow: Flow, lost: int = 0) -> None:
    """Nothing of the flow is left the moment join() has returned.

    ``lost``: slots a killed task may have held (the one message in its hands, one slot here);
    a killed process cannot give them back, so the owner reclaims them once every task ended.
    """
    assert not mp.active_children(), f"live task processes: {mp.active_children()}"
    assert not own_entries(), f"left in /dev/shm or /dev/mqueue: {own_entries()}"
    stats = flow.stats()
    assert not stats.running
    assert stats.pool_slots_in_use == 0, f"{stats.pool_slots_in_use} slots still in use"
    assert stats.slots_reclaimed <= lost, f"{stats.slots_reclaimed} slots held by killed tasks"


def expect_failure(tmp_path, flow: Flow, node: str, *words: str, lost: int = 0) -> FlowError:
    flow.run()
    err, ended = finish(flow)
    assert err is not None, "the flow ended without an error"
    assert err.node == node, str(err)
    text = str(err)
    for word in words:
        assert word in text, text
    took = ended - fault_time(tmp_path)
    print(f"ended {took:.2f} s after the fault, {flow.stats().pool_slots_in_use} slots in use")
    assert took < END_WITHIN
    assert_clean(flow, lost)
    return err


# -- a node raising -------------------------------------------------------------------------

PHASES = [  # (where, fault, the method that raised, the exception it raised)
    ("producer", "open", "open", "RuntimeError"),
    ("processor", "open", "open", "RuntimeError"),
    ("consumer", "open", "open", "RuntimeError"),
    ("producer", "call", "next", "ValueError"),
    ("processor", "call", "process", "ValueError"),
    ("consumer", "call", "consume", "KeyError"),
    ("processor", "close", "close", "RuntimeError"),
    ("producer", "close", "close", "RuntimeError"),
]
NAMES = {"producer": "source", "processor": "middle", "consumer": "sink"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flow_type", TYPES)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize(("where", "fault", "method", "raised"), PHASES)
def test_exception(tmp_path, where, fault, method, raised, k, flow_type):
    count = 60 if fault == "close" else None  # close() runs at the end of the run
    flow, _ = build(tmp_path, where, fault, k, flow_type, count=count)
    err = expect_failure(tmp_path, flow, NAMES[where], f"in {method}()", raised, "(injected)")
    # the child's own traceback, down to the node's method that raised
    assert "Traceback" in err.remote_traceback and f"in {method}" in err.remote_traceback
    assert raised in err.remote_traceback
    assert 0 <= err.task < (k if where == "processor" else 1)


# -- a worker dying -------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flow_type", TYPES)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize(("fault", "signame"), [("kill", "SIGKILL"), ("segv", "SIGSEGV")])
def test_worker_dies(tmp_path, fault, signame, k, flow_type):
    flow, _ = build(tmp_path, "processor", fault, k, flow_type)
    err = expect_failure(tmp_path, flow, "middle", f"killed by signal {signame}", lost=k)
    assert err.exitcode == -getattr(signal, signame)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flow_type", TYPES)
@pytest.mark.parametrize("fault", ["kill", "segv"])
def test_consumer_dies(tmp_path, fault, flow_type):
    # After K = 3 workers the consumer also restores their order: killed, it loses the
    # message in hand and those in its reorder buffer (at most the window, 2K + 4 + 4).
    flow, _ = build(tmp_path, "consumer", fault, 3, flow_type)
    expect_failure(tmp_path, flow, "sink", "killed by signal", lost=1 + 14)


# -- bad outputs ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flow_type", TYPES)
@pytest.mark.parametrize("k", KS)
def test_unpicklable_output(tmp_path, k, flow_type):
    flow, _ = build(tmp_path, "processor", "unpicklable", k, flow_type)
    expect_failure(tmp_path, flow, "middle", "pickle", "lock")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flow_type", TYPES)
@pytest.mark.parametrize("k", KS)
def test_shared_memory_too_small_is_a_clear_error(tmp_path, k, flow_type):
    # The node asks for a frame larger than /dev/shm: its first slot cannot be reserved, and
    # posix_fallocate fails at once (tmpfs checks a request against its total size before
    # allocating a page), so this never fills the machine's /dev/shm.
    flow, _ = build(tmp_path, "processor", "shm_full", k, flow_type)
    expect_failure(tmp_path, flow, "middle", "PoolExhaustedError", "/dev/shm")


def _frames_ok(out: str, flow: Flow, flow_type: str, count: int) -> None:
    lines = read_lines(out)
    indices = [int(line.split(":")[0]) for line in lines]
    assert all(line.endswith(":ok") for line in lines), [x for x in lines if "bad" in x][:5]
    stats = flow.stats()
    if flow_type == BATCH:
        assert indices == list(range(count))
        assert stats.produced == stats.delivered == count and stats.dropped == 0
    else:
        assert indices == sorted(set(indices))
        assert stats.produced == count == stats.delivered + stats.dropped
    assert stats.pool_slots_in_use == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flow_type", TYPES)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("fault", ["oversize", "resize"])
def test_outputs_that_change_size_mid_run_arrive_intact(tmp_path, fault, k, flow_type):
    # "oversize": from message 20 on, frames 100 times the size of the ones before (a new,
    # larger slot size class); "resize": a different shape every message. Both grow the pools.
    flow, out = build(tmp_path, "processor", fault, k, flow_type, count=150, delay=0.001)
    flow.run()
    err, _ = finish(flow)
    assert err is None, str(err)
    _frames_ok(out, flow, flow_type, 150)
    assert_clean(flow)


# -- stops ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flow_type", TYPES)
@pytest.mark.parametrize("k", KS)
def test_stop_from_another_thread(tmp_path, k, flow_type):
    flow, out = build(tmp_path, "processor", "none", k, flow_type, delay=0.001)
    flow.run()
    while len(read_lines(out)) < 30:
        time.sleep(0.01)
    stopped_at = time.time()
    threading.Thread(target=flow.stop).start()
    err, ended = finish(flow)
    assert err is None, str(err)
    assert ended - stopped_at < END_WITHIN
    produced = flow.stats().produced
    _frames_ok(out, flow, flow_type, produced)
    assert_clean(flow)


# -- signals to the process that runs the flow -----------------------------------------------

SCRIPT = """
    import os, time
    from nodes import FaultyConsumer, FaultyProcessor, FaultyProducer
    from scripts import join_and_report
    from videoflow.core import Flow

    class HeldConsumer(FaultyConsumer):
        # Waits while the hold file exists: a graceful stop cannot end meanwhile.
        def consume(self, *values):
            while {hold!r} and os.path.exists({hold!r}):
                time.sleep(0.005)
            super().consume(*values)

    if __name__ == "__main__":
        p = FaultyProducer("none", delay={delay})
        x = FaultyProcessor("none", nb_tasks={k})(p)
        c = HeldConsumer("none", {out!r}, delay={consumer_delay})(x)
        flow = Flow([p], [c], flow_type={flow_type!r})
        flow.run()
        join_and_report(
            flow, lambda s: [s.produced, s.delivered, s.dropped, s.pool_slots_in_use]
        )
"""


@contextlib.contextmanager
def running_script(
    tmp_path, k: int, flow_type: str, delay: float, consumer_delay: float = 0.0,
    hold: str | None = None,
) -> Iterator[tuple[subprocess.Popen, str]]:
    """SCRIPT, started once 30 frames reached its consumer, and killed on the way out if a test
    left it running. While the file ``hold`` exists (create it once this yields) the consumer
    takes no more frames."""
    out = str(tmp_path / "out.txt")
    script = write_script(
        tmp_path, SCRIPT, out=out, k=k, flow_type=flow_type, delay=delay,
        consumer_delay=consumer_delay, hold=hold,
    )
    try:
        with start_script(script, lambda: len(read_lines(out)), 30, seconds=20) as (proc, _):
            yield proc, out
    finally:
        if hold is not None and os.path.exists(hold):
            os.unlink(hold)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flow_type", TYPES)
@pytest.mark.parametrize("k", KS)
def test_sigkill_of_the_parent_leaves_nothing(tmp_path, k, flow_type):
    with running_script(tmp_path, k, flow_type, delay=0.001) as (proc, _):
        tasks = descendants(proc.pid)
        assert len(tasks) >= k + 2
        proc.kill()
        killed_at = time.monotonic()
        proc.wait(timeout=10)  # not communicate(): the orphans may hold its pipes a little longer
    left = wait_gone(tasks, 10)
    gone_after = time.monotonic() - killed_at
    assert not left, f"processes of the killed flow still alive: {sorted(left)}"
    assert gone_after < END_WITHIN
    entries, _ = wait_clean(proc.pid, END_WITHIN - gone_after)
    assert not entries, f"left behind by the killed flow: {entries}"
    proc.communicate(timeout=5)


STUCK_SCRIPT = """
    from nodes import Ints, RecordingConsumer, Stuck
    from scripts import join_and_report
    from videoflow.core import Flow

    if __name__ == "__main__":
        p = Ints(delay=0.002, block_at={block_at}, folder={folder!r})
        x = Stuck("deadlock", {stuck_at}, {folder!r}, nb_tasks=2)(p)
        c = RecordingConsumer({out!r})(x)
        flow = Flow([p], [c], flow_options={{"stop_timeout": 1.0}})
        flow.run()
        join_and_report(flow, lambda s: s.produced)
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("where", ["next", "process"])
def test_tasks_stuck_in_the_node_end_when_the_owner_is_killed(tmp_path, where):
    """A task checks its owner between messages; one stuck inside next() or process() never
    gets there. Killed with SIGKILL, the owner cleans nothing up: its tasks must leave on
    their own, with their /dev/shm entries, within about two stop_timeouts."""
    out = str(tmp_path / "out.txt")
    stuck = "blocked" if where == "next" else "stuck"
    script = write_script(
        tmp_path, STUCK_SCRIPT, folder=str(tmp_path), out=out,
        block_at=20 if where == "next" else None, stuck_at=10 if where == "process" else None,
    )
    with start_script(script, lambda: len(glob.glob(str(tmp_path / f"{stuck}.*"))), 1) as (
        proc, _,
    ):
        tasks = descendants(proc.pid)
        assert len(tasks) >= 4  # a producer, two Stuck tasks, a consumer
        proc.kill()
        proc.wait(timeout=10)
    left = wait_gone(tasks, 30)
    assert not left, f"tasks outlived their killed owner: {sorted(left)}"
    entries, _ = wait_clean(proc.pid, 10)
    assert not entries, f"left behind by the killed flow: {entries}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flow_type", TYPES)
@pytest.mark.parametrize("k", KS)
def test_sigint_once_stops_cleanly(tmp_path, k, flow_type):
    with running_script(tmp_path, k, flow_type, delay=0.001) as (proc, out):
        tasks = descendants(proc.pid)
        stdout, stderr, sent = interrupt(proc, timeout=20)
    assert time.monotonic() - sent < END_WITHIN
    assert proc.returncode == 0, stderr
    produced, delivered, dropped, in_use = script_stats(stdout)
    lines = read_lines(out)
    indices = [int(line.split(":")[0]) for line in lines]
    assert all(line.endswith(":ok") for line in lines)
    if flow_type == BATCH:
        assert produced == delivered == len(lines) and dropped == 0
        assert indices == list(range(len(lines)))
    else:
        assert produced == delivered + dropped and delivered == len(lines)
        assert indices == sorted(set(indices))
    assert in_use == 0
    assert not wait_gone(tasks, END_WITHIN - (time.monotonic() - sent))
    entries, _ = wait_clean(proc.pid, 1)
    assert not entries


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flow_type", TYPES)
@pytest.mark.parametrize("k", KS)
def test_sigint_twice_kills(tmp_path, k, flow_type):
    # The consumer is held: the graceful stop that the first Ctrl-C starts cannot end before
    # the second one comes. The second is sent once the first was acknowledged: two SIGINTs
    # that arrive before Python runs its handler are one KeyboardInterrupt.
    hold = tmp_path / "hold"
    with running_script(tmp_path, k, flow_type, delay=0.001, hold=str(hold)) as (proc, _):
        tasks = descendants(proc.pid)
        hold.touch()
        proc.send_signal(signal.SIGINT)
        said = read_until(proc.stderr, "Ctrl-C again to kill it", seconds=20)
        assert "Ctrl-C again to kill it" in said, said
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, stderr = proc.communicate(timeout=20)
    assert time.monotonic() - sent < END_WITHIN
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr.replace("KeyboardInterrupt", ""), stderr
    assert not wait_gone(tasks, END_WITHIN - (time.monotonic() - sent))
    entries, _ = wait_clean(proc.pid, 1)
    assert not entries


# -- kept frames, use after release (debug mode) --------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize(("part", "wrapped"), [(False, False), (True, False), (False, True)])
def test_a_node_that_keeps_an_input_view_reads_it_unchanged(tmp_path, part, wrapped, k, debug):
    # A kept view (the frame, a slice of it, a frame inside a pickled dict) keeps its slot:
    # KeepsInput raises if what it kept changed; debug mode poisons every released slot.
    a = SyntheticFrameProducer((48, 64, 3), count=100, name="source")
    b = DictOfArrays(name="wrap")(a) if wrapped else a  # the frame inside a pickled dict
    c = KeepsInput(part, nb_tasks=k, name="keeper")(b)
    d = VoidConsumer()(c)
    flow = Flow([a], [d], flow_type=BATCH, flow_options={"debug": debug})
    flow.run()
    err, _ = finish(flow)
    assert err is None, str(err)
    assert_clean(flow)


def test_debug_registry_rejects_stale_handles_and_poisons_released_slots():
    registry = PoolRegistry(debug=True)
    allocator = SlotAllocator(registry, f"vf.{os.getpid()}.unit.0-0", 2, on_wait=lambda: None)
    try:
        frame, ref = allocator.array((4, 4), np.uint8)
        frame[...] = 7
        assert (registry.array(ref, 0, (4, 4), (4, 1), "|u1") == 7).all()
        registry.release(ref)
        assert (frame == POISON).all()  # what a view kept past the release now reads
        with pytest.raises(StaleSlotError, match="read after it was released"):
            registry.array(ref, 0, (4, 4), (4, 1), "|u1")
        _, again = allocator.array((4, 4), np.uint8)  # the lowest free slot, reused
        assert again.slot == ref.slot and again.gen == ref.gen + 1
        with pytest.raises(StaleSlotError, match="released twice"):
            registry.release(ref)
    finally:
        for pool in allocator.owned():
            pool.unlink()
