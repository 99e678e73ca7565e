"""Measuring videoflow itself: a probe producer, the nodes under test, a probe consumer.

``measure`` builds producer -> stages -> consumer, runs it, and returns what it saw:
steady-state throughput and latency per frame (timed by the probe consumer, from the frame after
the warm-up to the last, so process start-up is not counted), and, from ``Flow.stats()``,
drops and the CPU time and messages of every stage.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from videoflow.benchmark.nodes import BenchProducer, ProbeConsumer, read_reports
from videoflow.core import BATCH, Flow, FlowStats, Node

# A stage factory gets the stage's index and returns an unwired node named ``stage<index>``.
StageFactory = Callable[[int], Node]

MIN_TIMED = 20  # frames timed at the least, however short the duration


@dataclasses.dataclass
class Measurement:
    frames: int
    seconds: float
    produced: int
    delivered: int
    dropped: int
    latency_ns: list[int]
    stage_cpu_s: list[float]  # CPU seconds per stage, summed over its tasks (NodeStats.cpu_s)
    stage_frames: list[int]  # messages each stage received, summed over its tasks
    producer_cpu_s: float
    stats: FlowStats

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def drop_rate(self) -> float:
        return self.dropped / self.produced if self.produced else 0.0

    def stage_cpu_us(self, index: int) -> float:
        n = self.stage_frames[index]
        return 1e6 * self.stage_cpu_s[index] / n if n else 0.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))])


def measure(
    shape: tuple[int, ...],
    stages: Sequence[StageFactory],
    duration: float | None = 1.0,
    count: int | None = None,
    fps: float | None = None,
    flow_type: str = BATCH,
    flow_options: Mapping[str, Any] | None = None,
    warmup: int = 3,
    timeout: float = 120.0,
) -> Measurement:
    """Run producer -> stages -> consumer once and collect what the probe consumer and
    ``Flow.stats()`` saw."""
    with tempfile.TemporaryDirectory(prefix="videoflow-bench-") as reports:
        producer = BenchProducer(shape, duration=duration, count=count, fps=fps,
                                 min_frames=warmup + MIN_TIMED, name="producer")
        node: Node = producer
        for i, make in enumerate(stages):
            node = make(i)(node)
        consumer = ProbeConsumer(report_dir=reports, warmup=warmup, name="consumer")(node)
        flow = Flow([producer], [consumer], flow_type=flow_type, flow_options=flow_options)
        run_bounded(flow, timeout)
        stats = flow.stats()
        (sink,) = read_reports(reports, "consumer")
    stage_stats = [stats.node(f"stage{i}") for i in range(len(stages))]
    return Measurement(
        frames=sink["timed_frames"],
        seconds=max(0, sink["last_ns"] - sink["first_ns"]) / 1e9,
        produced=stats.produced,
        delivered=stats.delivered,
        dropped=stats.dropped,
        latency_ns=sink["latency_ns"],
        stage_cpu_s=[n.cpu_s for n in stage_stats],
        stage_frames=[n.messages_in for n in stage_stats],
        producer_cpu_s=stats.node("producer").cpu_s,
        stats=stats,
    )


def run_bounded(flow: Flow, timeout: float) -> None:
    """Run ``flow`` to its end; abort it (and raise TimeoutError) past ``timeout`` seconds or
    on any exception while waiting, so a benchmark never leaves a flow behind."""
    flow.run()
    try:
        finished = flow.join(timeout)
    except BaseException:
        flow.abort()
        flow.join()
        raise
    if not finished:
        flow.abort()
        flow.join()
        raise TimeoutError(f"the benchmark flow did not end within {timeout} s")
