"""Several producers at run time: JOIN stages, their policies, ``node[i]``, ``self.meta`` after
a join, stop semantics, counters, and the fault matrix of joined flows.

Every test also checks (conftest) that no process and no /dev/shm entry is left, and the
flow's pools end with no slot in use. The suite runs on both transports (VIDEOFLOW_NATIVE=0 in
CI): the doorbell is a futex word on the native path and a pipe on the other.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time

import pytest
from conftest import own_entries, wait_clean
from join_nodes import Fails, JoinedLog, Stamped, Together, read_log
from nodes import BigMeta, FaultyProcessor
from scripts import interrupt, script_stats, start_script, write_script

from videoflow import FlowError
from videoflow.core import BATCH, REALTIME, Flow, Join
from videoflow.engine.plan import JOIN
from videoflow.processors import IdentityProcessor
from videoflow.transport import native
from videoflow.transport.doorbell import NativeDoorbell, PipeDoorbell

SHAPE = (24, 32, 3)

pytestmark = pytest.mark.timeout(90)


def run(flow: Flow, timeout: float = 60) -> None:
    flow.run()
    assert flow.join(timeout=timeout), "the flow did not end"


def assert_accounted(flow: Flow, ended_normally: bool = True) -> None:
    """The counting identities of every JOIN, and no slot left in use."""
    stats = flow.stats()
    assert not stats.running
    assert stats.pool_slots_in_use == 0, f"{stats.pool_slots_in_use} slots still in use"
    for join in stats.joins:
        for inp in join.inputs:
            assert inp.received == inp.used + inp.stale + inp.unmatched + inp.buffered, inp
            if ended_normally:
                assert inp.buffered == 0, inp
                assert inp.produced == inp.received + inp.dropped, inp
    assert not own_entries()


def log_path(tmp_path, name="out") -> str:
    return str(tmp_path / f"{name}.jsonl")


# -- Join.seq --------------------------------------------------------------------------------


def test_seq_pairs_the_ith_frames_and_counts_what_is_left(tmp_path):
    out = log_path(tmp_path)
    a = Stamped(40, shape=SHAPE, name="a")
    b = Stamped(25, shape=SHAPE, name="b")
    pair = Together(join=Join.seq(), name="pair")(a, b)
    sink = JoinedLog(out, names=("a", "b"), frames=True, name="sink")(pair[0], pair[1])
    flow = Flow([a, b], [sink], flow_type=BATCH)
    run(flow)
    lines = read_log(out)
    assert [line["index"] for line in lines] == list(range(25))
    for i, line in enumerate(lines):
        assert line["values"] == [True, True]
        assert line["sources"]["a"]["index"] == i and line["sources"]["b"]["index"] == i
        assert line["sources"]["a"]["timestamp_ms"] == 10.0 * i
    stats = flow.stats()
    join = stats.join()
    assert join.name == "pair.join" and join.policy == "Join.seq()"
    assert join.sets == 25 and join.partial == 0 and join.dropped == 0
    a_in, b_in = join.inputs
    assert (a_in.name, a_in.produced, a_in.received, a_in.used, a_in.unmatched) == (
        "a", 40, 40, 25, 15
    )
    assert (b_in.name, b_in.produced, b_in.used, b_in.unmatched) == ("b", 25, 25, 0)
    assert stats.produced == 65 and stats.produced_by == {"a": 40, "b": 25}
    assert stats.delivered == 25
    assert all(n.kind != JOIN for n in stats.nodes)  # the JOIN is in stats.joins
    assert_accounted(flow)


def test_seq_frames_reach_the_join_intact_and_in_order(tmp_path):
    out = log_path(tmp_path)
    a = Stamped(60, shape=SHAPE, name="a")
    b = Stamped(60, shape=SHAPE, delay=0.002, name="b")
    frames = JoinedLog(out, names=("a", "b"), frames=True, name="sink")(a, b)
    flow = Flow([a, b], [frames], flow_type=BATCH, flow_options={"debug": True})
    run(flow)
    lines = read_log(out)
    assert [line["index"] for line in lines] == list(range(60))
    assert all(line["values"] == [True, True] for line in lines)
    assert_accounted(flow)


def test_a_full_join_buffer_holds_back_only_its_own_stream(tmp_path):
    out = log_path(tmp_path)
    a = Stamped(None, shape=SHAPE, name="a")
    b = Stamped(None, stall_at=1, stall=60.0, shape=SHAPE, name="b")  # silent after one frame
    frames = JoinedLog(out, names=("a", "b"), frames=True, name="sink")(a, b)
    depth, pending = 4, 3
    flow = Flow([a, b], [frames], flow_type=BATCH,
                flow_options={"join_pending": pending, "queue_depth": depth})
    # a's first frame goes out with b's; then the JOIN buffers `pending` of a's, a's queue to
    # the JOIN fills, and a holds one more, waiting for room: a stops there, nothing dropped.
    held_back = 1 + pending + depth + 1
    flow.run()
    try:
        deadline = time.monotonic() + 60
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            made = flow.stats().node("a").messages_in
            if made != seen:
                seen, since = made, time.monotonic()
            elif made >= held_back and time.monotonic() - since > 0.5:
                break
            time.sleep(0.02)
        assert seen == held_back, f"a made {seen} frames while b was silent"
        assert flow.stats().join().inputs[0].buffered == pending
    finally:
        flow.stop()  # interrupts b's silence too
    assert flow.join(timeout=60)
    lines = read_log(out)
    assert [line["index"] for line in lines] == list(range(len(lines))) and len(lines) >= 1
    assert all(line["values"] == [True, True] for line in lines)
    stats = flow.stats()
    assert stats.node("a").blocked_s > 0 and stats.join().inputs[0].dropped == 0
    assert_accounted(flow)


@pytest.mark.parametrize("k", [1, 2])
def test_multi_task_nodes_before_and_after_a_join_keep_the_order(tmp_path, k):
    out = log_path(tmp_path)
    a = Stamped(50, shape=SHAPE, name="a")
    b = Stamped(50, shape=SHAPE, name="b")
    a2 = IdentityProcessor(nb_tasks=k, name="a2")(a)  # a multi-task tail: merged before the JOIN
    pair = Together(join=Join.seq(), nb_tasks=k, name="pair")(a2, b)
    first = IdentityProcessor(name="first")(pair[0])
    second = IdentityProcessor(name="second")(pair[1])
    sink = JoinedLog(out, names=("a", "b"), frames=True, name="sink")(first, second)
    flow = Flow([a, b], [sink], flow_type=BATCH)
    run(flow)
    lines = read_log(out)
    assert [line["index"] for line in lines] == list(range(50))
    assert all(line["values"] == [True, True] for line in lines)
    assert_accounted(flow)


# -- Join.latest -----------------------------------------------------------------------------


def test_latest_goes_on_without_a_silent_stream(tmp_path):
    out = log_path(tmp_path)
    fast = Stamped(40, delay=0.01, name="fast")
    slow = Stamped(6, delay=0.01, stall_at=2, stall=1.0, name="slow")  # silent for 1 s
    pair = Together(join=Join.latest(timeout_ms=5), name="pair")(fast, slow)
    left = IdentityProcessor(name="left")(pair[0])
    right = IdentityProcessor(name="right")(pair[1])
    sink = JoinedLog(out, names=("fast", "slow"), name="sink")(left, right)
    flow = Flow([fast, slow], [sink], flow_type=REALTIME)
    run(flow)
    lines = read_log(out)
    fast_seen = [line["values"][0] for line in lines if line["values"][0] is not None]
    slow_seen = [line["values"][1] for line in lines if line["values"][1] is not None]
    assert fast_seen == sorted(set(fast_seen)) and slow_seen == sorted(set(slow_seen))
    missing = [line for line in lines if line["values"][1] is None]  # sets without slow
    assert missing and all(line["sources"]["slow"] is None for line in missing)
    for line in lines:  # sources and values agree
        src = line["sources"]["fast"]
        assert (src is None) == (line["values"][0] is None)
        assert src is None or src["index"] == line["values"][0]
    stats = flow.stats()
    join = stats.join()
    after = sum(stats.node(n).dropped for n in ("pair", "left", "right"))  # realtime drops
    assert join.sets == len(lines) + after and join.partial >= len(missing)
    assert join.waits_on is not None
    assert_accounted(flow)


def test_latest_in_batch_loses_nothing_it_receives(tmp_path):
    out = log_path(tmp_path)
    a = Stamped(30, name="a")
    b = Stamped(30, name="b")
    # The join point is the consumer itself; in BATCH its inboxes block rather than drop.
    sink = JoinedLog(out, delay=0.005, join=Join.latest(timeout_ms=2), name="sink")(a, b)
    flow = Flow([a, b], [sink], flow_type=BATCH)
    run(flow)
    lines = read_log(out)
    join = flow.stats().join()
    for k, inp in enumerate(join.inputs):
        assert inp.dropped == 0 and inp.produced == inp.received == 30
        used = [line["values"][k] for line in lines if line["values"][k] is not None]
        assert len(used) == inp.used and used == sorted(set(used))
    assert_accounted(flow)


# -- Join.time -------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["drop", "none"])
def test_time_pairs_by_timestamp(tmp_path, missing):
    out = log_path(tmp_path)
    a = Stamped(20, period_ms=10.0, name="a")  # 0, 10, 20, ...
    b = Stamped(10, period_ms=20.0, start_ms=2.0, name="b")  # 2, 22, 42, ...
    sink = JoinedLog(out, join=Join.time(tolerance_ms=5, missing=missing), name="sink")(a, b)
    flow = Flow([a, b], [sink], flow_type=BATCH)
    run(flow)
    lines = read_log(out)
    pairs = [tuple(line["values"]) for line in lines]
    if missing == "drop":
        assert pairs == [(2 * j, j) for j in range(10)]
    else:
        assert pairs == [(i, i // 2 if i % 2 == 0 else None) for i in range(20)]
    a_in = flow.stats().join().inputs[0]
    assert a_in.unmatched == (10 if missing == "drop" else 0)
    assert_accounted(flow)


def test_time_refuses_timestamps_that_go_back(tmp_path):
    a = Stamped(10, name="a")
    b = Stamped(10, stamps=[0, 10, 20, 15, 30, 40, 50, 60, 70, 80], name="b")
    sink = JoinedLog(log_path(tmp_path), join=Join.time(tolerance_ms=3), name="sink")(a, b)
    flow = Flow([a, b], [sink], flow_type=BATCH)
    flow.run()
    says = r"'sink.join' .*while pairing its inputs: b: .*went from 20 to 15.*increase"
    with pytest.raises(FlowError, match=says):
        flow.join(timeout=30)
    assert_accounted(flow, ended_normally=False)


# -- meta, node[i], nested joins, blobs ------------------------------------------------------


def test_nested_joins_merge_their_sources(tmp_path):
    out = log_path(tmp_path)
    cams = [Stamped(12, shape=SHAPE, name=f"cam{i}") for i in (1, 2, 3)]
    pair = Together(join=Join.seq(), name="pair")(cams[0], cams[1])
    both = Together(name="both")(pair[0], pair[1])
    alln = Together(join=Join.seq(), name="all")(both, cams[2])
    one, three = IdentityProcessor(name="one")(alln[0]), IdentityProcessor(name="three")(alln[1])
    first = IdentityProcessor(name="first")(one[0])
    sink = JoinedLog(out, names=("cam1", "cam3"), frames=True, name="sink")(first, three)
    flow = Flow(cams, [sink], flow_type=BATCH)
    run(flow)
    lines = read_log(out)
    assert len(lines) == 12
    for i, line in enumerate(lines):
        assert line["index"] == i
        assert {k: v["index"] for k, v in line["sources"].items()} == {
            "cam1": i, "cam2": i, "cam3": i
        }
        assert line["values"] == [True, True]
    assert [j.name for j in flow.stats().joins] == ["pair.join", "all.join"]
    assert [i.name for i in flow.stats().join("all.join").inputs] == ["cam1+cam2", "cam3"]
    assert_accounted(flow)


def test_a_joined_message_too_large_for_its_queue_goes_through_a_blob(tmp_path):
    out = log_path(tmp_path)
    a = Stamped(20, name="a")
    b = Stamped(20, name="b")
    big = BigMeta(name="big")(a)  # 20 kB of metadata: more than a control message holds
    sink = JoinedLog(out, name="sink")(big, b)
    flow = Flow([a, b], [sink], flow_type=BATCH)
    run(flow)
    lines = read_log(out)
    assert [line["values"] for line in lines] == [[i, i] for i in range(20)]
    assert all(line["blob"] == 20000 for line in lines)
    assert_accounted(flow)


def test_an_item_of_an_output_that_is_not_a_tuple_names_both_nodes(tmp_path):
    a = Stamped(5, name="a")
    single = IdentityProcessor(name="single")(a)
    first = IdentityProcessor(name="first")(single[0])
    flow = Flow([a], [JoinedLog(log_path(tmp_path))(first)], flow_type=BATCH)
    flow.run()
    with pytest.raises(FlowError, match=r"'first' reads single\[0\], but 'single' returned a int"):
        flow.join(timeout=30)
    assert_accounted(flow, ended_normally=False)


def test_producers_that_never_meet_run_side_by_side(tmp_path):
    short, long = log_path(tmp_path, "short"), log_path(tmp_path, "long")
    a = Stamped(5, name="a")
    b = Stamped(60, delay=0.001, name="b")
    flow = Flow([a, b], [JoinedLog(short)(a), JoinedLog(long)(b)], flow_type=BATCH)
    run(flow)  # ends once both have ended: a's end did not end b's stream
    assert [line["values"] for line in read_log(short)] == [[i] for i in range(5)]
    assert [line["values"] for line in read_log(long)] == [[i] for i in range(60)]
    assert flow.stats().produced_by == {"a": 5, "b": 60}
    assert_accounted(flow)


# -- stopping --------------------------------------------------------------------------------


def test_one_producer_ending_ends_only_its_stream(tmp_path):
    out = log_path(tmp_path)
    a = Stamped(3, name="a")  # ends at once
    b = Stamped(30, delay=0.005, name="b")
    sink = JoinedLog(out, join=Join.latest(timeout_ms=1), name="sink")(a, b)
    flow = Flow([a, b], [sink], flow_type=REALTIME)
    run(flow)
    seen_b = [line["values"][1] for line in read_log(out) if line["values"][1] is not None]
    assert seen_b[-1] == 29  # b went on to its end after a had ended
    assert_accounted(flow)


@pytest.mark.parametrize("flow_type", [BATCH, REALTIME])
def test_stop_ends_every_producer_and_drains(tmp_path, flow_type):
    out = log_path(tmp_path)
    a = Stamped(None, delay=0.002, shape=SHAPE, name="a")
    b = Stamped(None, delay=0.003, shape=SHAPE, name="b")
    sink = JoinedLog(out, names=("a", "b"), frames=True, name="sink")(a, b)
    flow = Flow([a, b], [sink], flow_type=flow_type)
    flow.run()
    deadline = time.monotonic() + 30
    while len(read_log(out)) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    threading.Thread(target=flow.stop).start()
    assert flow.join(timeout=30)
    lines = read_log(out)
    assert all(all(v in (True, None) for v in line["values"]) for line in lines)
    join = flow.stats().join()
    assert join.sets == len(lines)
    if flow_type == BATCH:  # nothing produced is lost: what was not paired is counted
        for inp in join.inputs:
            assert inp.dropped == 0 and inp.produced == inp.received
    assert_accounted(flow)


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flow_type", [BATCH, REALTIME])
def test_an_exception_in_one_streams_node_fails_the_flow(tmp_path, flow_type):
    a = Stamped(None, delay=0.002, shape=SHAPE, name="a")
    b = Stamped(None, delay=0.002, shape=SHAPE, name="b")
    bad = FaultyProcessor("call", at=15, folder=str(tmp_path), name="bad")(b)
    sink = JoinedLog(log_path(tmp_path), names=("a", "b"), frames=True, name="sink")(a, bad)
    flow = Flow([a, b], [sink], flow_type=flow_type)
    flow.run()
    with pytest.raises(FlowError, match=r"'bad' \(task 0\) raised ValueError in process\(\)"):
        flow.join(timeout=30)
    assert_accounted(flow, ended_normally=False)


@pytest.mark.parametrize("flow_type", [BATCH, REALTIME])
def test_an_exception_after_the_join_fails_the_flow(tmp_path, flow_type):
    a = Stamped(None, delay=0.002, shape=SHAPE, name="a")
    b = Stamped(None, delay=0.002, shape=SHAPE, name="b")
    pair = Together(name="pair")(a, b)
    bad = Fails(10, name="bad")(pair)
    sink = JoinedLog(log_path(tmp_path), names=("a", "b"), frames=True)(bad[0], bad[1])
    flow = Flow([a, b], [sink], flow_type=flow_type)
    flow.run()
    with pytest.raises(FlowError, match=r"'bad' .*bad message 10 \(injected\)"):
        flow.join(timeout=30)
    assert_accounted(flow, ended_normally=False)


def _join_pid(flow: Flow) -> int:
    engine = flow.engine
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for task in engine._tasks:  # type: ignore[attr-defined]
            if task.kind == JOIN and task.pid is not None:
                return task.pid
        time.sleep(0.01)
    raise AssertionError("no JOIN task started")


@pytest.mark.parametrize("flow_type", [BATCH, REALTIME])
def test_sigkill_of_a_join_task(tmp_path, flow_type):
    out = log_path(tmp_path)
    a = Stamped(None, delay=0.001, shape=SHAPE, name="a")
    b = Stamped(None, delay=0.001, shape=SHAPE, name="b")
    pair = Together(name="pair")(a, b)
    sink = JoinedLog(out, names=("a", "b"), frames=True, delay=0.002)(pair[0], pair[1])
    flow = Flow([a, b], [sink], flow_type=flow_type)
    flow.run()
    pid = _join_pid(flow)
    deadline = time.monotonic() + 30
    while len(read_log(out)) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(FlowError, match=r"'pair.join' was killed by signal SIGKILL"):
        flow.join(timeout=30)
    stats = flow.stats()
    assert stats.pool_slots_in_use == 0
    # What the JOIN held when it died (its buffers, the set in hand) was reclaimed.
    assert stats.slots_reclaimed <= 2 * (flow.config.queue_depth + 2) + 2
    assert not mp.active_children() and not own_entries()


SCRIPT = """
    from join_nodes import JoinedLog, Stamped
    from scripts import join_and_report
    from videoflow.core import Flow, Join

    def counts(s):
        inputs = [[i.produced, i.dropped, i.received, i.used, i.stale, i.unmatched]
                  for i in s.join().inputs]
        return [s.pool_slots_in_use, s.join().sets, inputs]

    if __name__ == "__main__":
        a = Stamped(None, delay=0.002, shape=(24, 32, 3), name="a")
        b = Stamped(None, delay=0.003, shape=(24, 32, 3), name="b")
        sink = JoinedLog({out!r}, names=("a", "b"), frames=True, join={join}, name="sink")(a, b)
        flow = Flow([a, b], [sink], flow_type={flow_type!r})
        flow.run()
        join_and_report(flow, counts)
"""


@pytest.mark.parametrize(
    ("flow_type", "join"), [(BATCH, "Join.seq()"), (REALTIME, "Join.latest(timeout_ms=5)")]
)
def test_ctrl_c_mid_join_stops_every_stream_cleanly(tmp_path, flow_type, join):
    out = log_path(tmp_path)
    script = write_script(tmp_path, SCRIPT, out=out, flow_type=flow_type, join=join)
    with start_script(script, lambda: len(read_log(out)), 20) as (proc, _):
        stdout, stderr, _ = interrupt(proc)
    assert proc.returncode == 0, stderr
    in_use, sets, inputs = script_stats(stdout)
    assert in_use == 0
    lines = read_log(out)
    assert sets == len(lines) and all(v is not False for ln in lines for v in ln["values"])
    for produced, dropped, received, used, stale, unmatched in inputs:
        assert produced == received + dropped
        assert received == used + stale + unmatched
        if flow_type == BATCH:
            assert dropped == 0 and stale == 0
    entries, _ = wait_clean(proc.pid, 5)
    assert not entries


# -- the doorbell ----------------------------------------------------------------------------


def _ring_later(spec_args, delay):
    kind, payload = spec_args
    time.sleep(delay)
    if kind == "native":
        control, index = payload
        NativeDoorbell(control, index).ring()
    else:
        os.write(payload, b"\x01")


@pytest.mark.skipif(native is None, reason="the native extension is off")
def test_the_native_doorbell_wakes_a_sleeper_in_another_process():
    control = mp.get_context("fork").RawArray("q", 4)
    bell = NativeDoorbell(control, 2)
    seen = bell.value()
    assert not bell.wait(seen, 0.01)  # nobody rang: the wait times out
    bell.ring()
    assert bell.wait(seen, 10)  # rung before the wait: no lost wake-up
    seen = bell.value()
    child = mp.get_context("fork").Process(target=_ring_later, args=(("native", (control, 2)), 0.2))
    child.start()
    t0 = time.monotonic()
    assert bell.wait(seen, 30)
    child.join()
    assert time.monotonic() - t0 < 30 and bell.value() == seen + 1


def test_the_pipe_doorbell_wakes_a_sleeper_in_another_process():
    ctx = mp.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    bell = PipeDoorbell(reader, writer)
    assert not bell.wait(bell.value(), 0.01)
    bell.ring()
    bell.ring()
    assert bell.wait(0, 1) and not bell.wait(0, 0.01)  # one wait empties the pipe
    child = ctx.Process(target=_ring_later, args=(("pipe", writer.fileno()), 0.2))
    child.start()
    assert bell.wait(0, 30)
    child.join()
    bell.close()


def test_an_idle_join_sleeps_instead_of_polling(tmp_path):
    a = Stamped(3, name="a")
    b = Stamped(3, stall_at=1, stall=1.5, name="b")  # the JOIN waits 1.5 s for b
    sink = JoinedLog(log_path(tmp_path), name="sink")(a, b)
    flow = Flow([a, b], [sink], flow_type=BATCH)
    run(flow)
    stats = flow.stats()
    join = stats.join()
    assert join.inputs[1].waited_s > 0.5 * 1.5 and join.waits_on.name == "b"
    # Polling its inboxes would have cost the JOIN about as much CPU as it waited.
    assert join.cpu_s < 0.2 * join.wait_s
    assert "waits on b" in str(flow.report())
    assert_accounted(flow)
