"""Measuring videoflow itself: a probe producer, the nodes under test, a probe consumer.

``measure`` builds producer -> stages -> consumer, runs it, and returns what the probes saw:
steady-state throughput (timed at the consumer, from the frame after the warm-up to the last,
so process start-up is not counted), latency per frame, drops, and CPU time per stage task.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from videoflow.benchmark.nodes import BenchProducer, ProbeConsumer, read_reports
from videoflow.core import Flow
from videoflow.core.constants import BATCH
from videoflow.core.node import Node
from videoflow.engine.stats import FlowStats

# A stage factory gets the report directory and the stage's index and returns an unwired node.
StageFactory = Callable[[str, int], Node]

MIN_TIMED = 20  # frames timed at the least, however short the duration


@dataclasses.dataclass
class Measurement:
    frames: int
    seconds: float
    produced: int
    delivered: int
    dropped: int
    latency_ns: list[int]
    stage_cpu_s: list[float]  # CPU seconds per stage, summed over its tasks
    stage_frames: list[int]  # frames each stage handled, summed over its tasks
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
    """Run producer -> stages -> consumer once and collect the probes' reports."""
    with tempfile.TemporaryDirectory(prefix="videoflow-bench-") as reports:
        producer = BenchProducer(shape, duration=duration, count=count, fps=fps,
                                 min_frames=warmup + MIN_TIMED, report_dir=reports,
                                 name="producer")
        node: Node = producer
        for i, make in enumerate(stages):
            node = make(reports, i)(node)
        consumer = ProbeConsumer(report_dir=reports, warmup=warmup, name="consumer")(node)
        flow = Flow([producer], [consumer], flow_type=flow_type, flow_options=flow_options)
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
        stats = flow.stats()
        (sink,) = read_reports(reports, "consumer")
        produced = read_reports(reports, "producer")
        stage_cpu, stage_frames = [], []
        for i in range(len(stages)):
            parts = read_reports(reports, f"stage{i}")
            stage_cpu.append(sum(p["cpu_s"] for p in parts))
            stage_frames.append(sum(p["frames"] for p in parts))
    return Measurement(
        frames=sink["timed_frames"],
        seconds=max(0, sink["last_ns"] - sink["first_ns"]) / 1e9,
        produced=stats.produced,
        delivered=stats.delivered,
        dropped=stats.dropped,
        latency_ns=sink["latency_ns"],
        stage_cpu_s=stage_cpu,
        stage_frames=stage_frames,
        producer_cpu_s=produced[0]["cpu_s"] if produced else 0.0,
        stats=stats,
    )
