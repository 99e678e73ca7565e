"""Observability: stats snapshots, the bottleneck report, progress line, logs from tasks, CLI."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from typing import Any

import pytest
from conftest import wait_clean
from nodes import BurnProcessor, SlowProcessor

from videoflow import cli
from videoflow.consumers import VoidConsumer
from videoflow.core import BATCH, REALTIME, Flow, OneTaskProcessorNode, ProcessorNode
from videoflow.engine import progress
from videoflow.engine.report import Report
from videoflow.engine.stats import FlowStats, NodeStats
from videoflow.producers import IntProducer
from videoflow.producers.basic import SyntheticFrameProducer

LOGGER = "videoflow_tests.talker"


# -- module-level nodes (task processes unpickle them by reference) ---------------------------
class SleepyTracker(OneTaskProcessorNode, SlowProcessor):
    """A stateful (one-task) node that is slow."""


class Talker(ProcessorNode):
    """Logs from its main thread (once per message) and from a thread of its own (in open)."""

    def open(self) -> None:
        thread = threading.Thread(
            target=logging.getLogger(LOGGER).info, args=("from a thread of %s", self.name)
        )
        thread.start()
        thread.join()

    def process(self, value: int) -> int:
        logging.getLogger(LOGGER).warning("value %d", value, extra={"colour": "blue"})
        logging.getLogger(LOGGER).debug("below the level: never sent")
        return value


def assert_clean() -> None:
    entries, children = wait_clean()
    assert not children, f"child processes left behind: {children}"
    assert not entries, f"/dev/shm entries left behind: {entries}"


def run_chain(*processors: ProcessorNode, producer: Any = None, flow_type: str = BATCH,
              options: dict[str, Any] | None = None) -> Flow:
    source = producer if producer is not None else IntProducer(0, 39)
    node: Any = source
    for p in processors:
        node = p(node)
    sink = VoidConsumer(name="sink")(node)
    flow = Flow([source], [sink], flow_type=flow_type, flow_options=options)
    flow.run()
    flow.join(timeout=60)
    return flow


# -- the verdict ---------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_verdict_names_the_slow_single_task_node():
    flow = run_chain(SlowProcessor(0.0, name="Fast"), SlowProcessor(0.02, name="Slow"))
    report = Report.from_stats(flow.stats(), cpus=8)
    assert report.bottleneck == "Slow"
    assert "raise nb_tasks of Slow from 1 to" in report.verdict
    assert flow.stats().node("Slow").busy > 0.8
    assert "Slow" in str(flow.report())
    assert_clean()


@pytest.mark.timeout(60)
def test_verdict_is_right_for_replicated_nodes():
    # Wide costs twice as much per message as Narrow but has four workers: Narrow holds the
    # flow back, although Wide's summed busy time is larger.
    wide, narrow = SlowProcessor(0.02, nb_tasks=4, name="Wide"), SlowProcessor(0.01, name="Narrow")
    flow = run_chain(wide, narrow, producer=IntProducer(0, 59))
    stats = flow.stats()
    wide_stats, narrow_stats = stats.node("Wide"), stats.node("Narrow")
    assert wide_stats.busy_s > narrow_stats.busy_s
    assert wide_stats.busy < narrow_stats.busy <= 1.0
    assert all(t.busy <= 1.0 for t in wide_stats.tasks)
    report = Report.from_stats(stats, cpus=8)
    assert report.bottleneck == "Narrow"
    assert "raise nb_tasks of Narrow from 1 to" in report.verdict
    assert_clean()


@pytest.mark.timeout(60)
def test_verdict_for_a_saturated_multi_task_node():
    wide, narrow = SlowProcessor(0.03, nb_tasks=2, name="Wide"), SlowProcessor(0.005, name="Narrow")
    flow = run_chain(wide, narrow)
    report = Report.from_stats(flow.stats(), cpus=8)
    assert report.bottleneck == "Wide"
    assert "raise nb_tasks of Wide from 2 to" in report.verdict
    # with no spare CPU, the advice is to make the node cheaper
    assert "make its process() cheaper" in Report.from_stats(flow.stats(), cpus=2).verdict
    assert_clean()


@pytest.mark.timeout(60)
def test_verdict_for_a_one_task_node():
    flow = run_chain(SleepyTracker(delay=0.02, name="Tracker"))
    report = Report.from_stats(flow.stats(), cpus=8)
    assert report.bottleneck == "Tracker"
    assert "one task" in report.verdict and "nb_tasks" not in report.verdict
    assert_clean()


@pytest.mark.timeout(60)
def test_cpu_time_tells_computing_from_sleeping():
    flow = run_chain(
        BurnProcessor(0.01, name="Burn"), SlowProcessor(0.01, name="Sleep"),
        producer=IntProducer(0, 29),
    )
    stats = flow.stats()
    burn, sleep = stats.node("Burn"), stats.node("Sleep")
    # What each node did, whatever the load: Burn used 0.3 s of CPU, Sleep slept 0.3 s. (A
    # share of wall time would be the machine's load: Burn's calls take longer when it waits
    # for a core.)
    assert burn.cpu_s >= 0.3 and burn.busy_s >= burn.cpu_s * 0.95
    assert sleep.busy_s >= 0.3 and sleep.cpu_s < 0.5 * sleep.busy_s
    assert burn.cpu_s / burn.busy_s > 2 * sleep.cpu_s / sleep.busy_s
    assert burn.cpu == pytest.approx(burn.cpu_s / stats.elapsed_s)
    assert stats.cpu_s >= burn.cpu_s + sleep.cpu_s and stats.cores_busy > 0
    text = str(Report.from_stats(stats, cpus=8))
    assert "cpu %" in text and "of 8 CPUs busy" in text
    assert "machine is the limit" not in text
    assert json.loads(json.dumps(stats.to_dict()))["nodes"][1]["tasks"][0]["cpu_s"] > 0
    assert_clean()


def test_a_saturated_machine_is_named_and_more_tasks_are_not_advised():
    def node(name: str, kind: str, busy_s: float, cpu_s: float) -> NodeStats:
        return NodeStats(
            name, kind, 1, 100, 100, 0, busy_s, 0.0, 0.0, (), cpu_s=cpu_s, elapsed_s=1.0
        )

    nodes = (
        node("src", "producer", 0.2, 0.2), node("Work", "processor", 0.95, 0.9),
        node("sink", "consumer", 0.9, 0.85),
    )
    stats = FlowStats(nodes, produced=100, delivered=100, dropped=0, running=False, elapsed_s=1.0)
    assert stats.cores_busy == pytest.approx(1.95)
    saturated = Report.from_stats(stats, cpus=2)
    assert saturated.bottleneck == "Work"
    assert "make Work.process() cheaper" in saturated.verdict
    assert "2.0 of 2 CPUs busy: the machine is the limit" in saturated.verdict
    spare = Report.from_stats(stats, cpus=8)
    assert "raise nb_tasks of Work from 1 to" in spare.verdict
    assert "machine is the limit" not in spare.verdict


# -- counts and snapshots --------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_realtime_counts_add_up_and_the_slow_node_is_named():
    producer = SyntheticFrameProducer((32, 32, 3), count=120, fps=300)
    flow = run_chain(SlowProcessor(0.02, name="Slow"), producer=producer, flow_type=REALTIME)
    stats = flow.stats()
    assert stats.produced == 120
    assert stats.dropped > 0
    assert stats.produced == stats.delivered + stats.dropped
    assert stats.pool_slots_in_use == 0
    # the producer's pacing makes it look busy; the per-message cost still names Slow
    report = Report.from_stats(stats, cpus=8)
    assert report.bottleneck == "Slow"
    assert "dropped" in report.verdict
    assert_clean()


@pytest.mark.timeout(60)
def test_stats_while_running_and_after_join():
    producer = SyntheticFrameProducer((64, 64, 3), count=40)
    source = producer
    slow = SlowProcessor(0.02, name="Slow")(source)
    sink = VoidConsumer(name="sink")(slow)
    flow = Flow([source], [sink], flow_type=BATCH)
    flow.run()
    deadline = time.monotonic() + 30
    live = flow.stats()
    while live.node("Slow").messages_in < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
        live = flow.stats()
    assert live.running and live.elapsed_s > 0
    assert live.node("Slow").fps > 0
    assert isinstance(live.node("Slow").inbox_queued, int)
    assert live.nodes[0].slots_in_use is not None and live.nodes[0].slots_in_use > 0
    assert flow.join(timeout=60)
    done = flow.stats()
    assert not done.running and done.errors == 0
    assert [n.messages_in for n in done.nodes] == [40, 40, 40]
    assert done.node("Slow").inbox_queued is None
    assert done.pool_slots_in_use == 0
    assert done.elapsed_s >= live.elapsed_s
    assert flow.stats().elapsed_s == done.elapsed_s  # frozen once the flow has ended
    data = json.loads(json.dumps(done.to_dict()))
    assert data["nodes"][1]["name"] == "Slow" and data["nodes"][1]["tasks"][0]["busy"] > 0
    assert json.loads(json.dumps(flow.report().to_dict()))["bottleneck"] == "Slow"
    assert_clean()


@pytest.mark.timeout(60)
def test_report_on_an_empty_run():
    flow = run_chain(SlowProcessor(0.0, name="Idle"), producer=IntProducer(0, -1))
    report = flow.report()
    assert report.bottleneck is None
    assert "nothing flowed" in str(report)
    assert report.produced == report.delivered == 0
    assert_clean()


def test_report_of_stats_with_no_time():
    nodes = tuple(
        NodeStats(name, kind, 1, 0, 0, 0, 0.0, 0.0, 0.0, ())
        for name, kind in (("src", "producer"), ("sink", "consumer"))
    )
    stats = FlowStats(nodes, produced=0, delivered=0, dropped=0, running=False)
    report = Report.from_stats(stats)
    assert report.bottleneck is None
    text = str(report)
    assert "src" in text and "sink" in text and "nothing flowed" in text
    assert stats.to_dict()["fps"] == 0.0


# -- logs ------------------------------------------------------------------------------------------
class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.timeout(60)
def test_task_log_records_reach_the_owner_with_node_and_task():
    logger = logging.getLogger(LOGGER)
    handler = _Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        run_chain(Talker(nb_tasks=2, name="Talker"), producer=IntProducer(0, 9))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    values = [r for r in handler.records if r.getMessage().startswith("value ")]
    assert sorted(r.getMessage() for r in values) == sorted(f"value {i}" for i in range(10))
    assert all(r.node == "Talker" and r.task in (0, 1) for r in values)  # type: ignore[attr-defined]
    assert all(r.processName.startswith("videoflow:Talker[") for r in values)
    assert all(r.colour == "blue" and r.levelno == logging.WARNING for r in values)  # type: ignore[attr-defined]
    threaded = [r for r in handler.records if r.getMessage().startswith("from a thread")]
    assert len(threaded) == 2 and {r.task for r in threaded} == {0, 1}  # type: ignore[attr-defined]
    assert not [r for r in handler.records if r.levelno < logging.INFO]
    assert_clean()


def test_the_library_adds_no_handler():
    assert logging.getLogger().handlers == [] or all(
        not type(h).__module__.startswith("videoflow") for h in logging.getLogger().handlers
    )
    assert all(
        not type(h).__module__.startswith("videoflow")
        for name in ("videoflow", "videoflow.engine.runner", "videoflow.core.flow")
        for h in logging.getLogger(name).handlers
    )


# -- progress --------------------------------------------------------------------------------------
class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_off_unless_stderr_is_a_terminal():
    assert not progress.wanted(True, io.StringIO())
    assert progress.wanted(True, FakeTTY())
    assert not progress.wanted(False, FakeTTY())
    with progress.run_options(progress=False):
        assert not progress.wanted(True, FakeTTY())
    with progress.run_options(progress=True):
        assert progress.wanted(False, FakeTTY())
        assert not progress.wanted(True, io.StringIO())


def test_progress_line_with_and_without_a_total():
    nodes = (NodeStats("src", "producer", 1, 30, 30, 0, 0.0, 0.0, 0.0, (), elapsed_s=2.0),)
    stats = FlowStats(nodes, produced=30, delivered=25, dropped=5, running=True, elapsed_s=2.0)
    line = progress.render(stats, 60)
    assert "30/60" in line and "50%" in line and " 15.0 fps" in line
    assert "5 dropped" in line
    assert "30 messages" in progress.render(stats, None)


@pytest.mark.timeout(60)
def test_progress_draws_on_a_terminal_and_not_when_asked(monkeypatch):
    tty = FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    flow = run_chain(SlowProcessor(0.01, name="Slow"), producer=IntProducer(0, 39))
    assert "40/40 100%" in tty.getvalue() and tty.getvalue().endswith("\n")

    tty = FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    flow = run_chain(SlowProcessor(0.0, name="Slow"), options={"progress": False})
    monkeypatch.setenv("VIDEOFLOW_PROGRESS", "0")
    flow = run_chain(SlowProcessor(0.0, name="Slow"))
    assert tty.getvalue() == ""
    assert flow.stats().delivered == 40
    assert_clean()


@pytest.mark.timeout(60)
def test_progress_is_off_under_pytest():
    flow = run_chain(SlowProcessor(0.0, name="Quiet"))
    assert flow._progress is None  # stderr is captured here, not a terminal
    assert_clean()


# -- the command -------------------------------------------------------------------------------
SCRIPT = """
from videoflow.consumers import VoidConsumer
from videoflow.core import BATCH, Flow
from videoflow.processors import IdentityProcessor
from videoflow.producers import IntProducer

if __name__ == "__main__":
    a = IntProducer(0, 19)
    b = IdentityProcessor(name="Pass")(a)
    c = VoidConsumer()(b)
    flow = Flow([a], [c], flow_type=BATCH)
    flow.run()
    flow.join()
    print("script says hi")
"""


@pytest.mark.timeout(60)
def test_videoflow_run_prints_each_flows_report(tmp_path, capsys):
    script = tmp_path / "myflow.py"
    script.write_text(SCRIPT)
    assert cli.main(["run", str(script)]) == 0
    out, err = capsys.readouterr()
    assert "script says hi" in out and "videoflow report" not in out
    assert "videoflow report" in err and "Pass" in err and "20 delivered" in err
    assert cli.main(["run", "--no-report", str(script)]) == 0
    assert "videoflow report" not in capsys.readouterr().err
    assert progress.current_run_options() is None
    assert_clean()
