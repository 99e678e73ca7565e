"""The ``join`` section of ``videoflow bench``: two producers joined by a JOIN stage.

- throughput: two producers of frames (written in place, the cheapest producer) as fast as
  they go, ``Join.seq()`` in BATCH, into a probe consumer: joined messages per second, and the
  JOIN task's CPU time per joined message (its own counters). Targets on 2 cores at 1080p:
  at least 2,000 joined messages/s and at most 60 us of CPU per joined message.
- latency: a producer at ``rate`` fps and a second one at a tenth of it, ``Join.latest(
  timeout_ms)`` in REALTIME, so that most sets wait the whole timeout for the second input;
  what that adds to the latency of the same producer through one pass-through hop, measured in
  the same run. Target: ``timeout_ms`` + 0.5 ms at the median.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from videoflow.benchmark.flows import MIN_TIMED, measure, percentile, run_bounded
from videoflow.benchmark.nodes import BenchProducer, PassThrough, ProbeConsumer, read_reports
from videoflow.benchmark.result import Row
from videoflow.core import BATCH, REALTIME, Flow, Join, JoinStats, Node

TARGET_FPS = 2000.0  # joined messages per second, two 1080p producers, 2 cores
TARGET_JOIN_CPU_US = 60.0  # CPU of the JOIN task per joined message
LATENCY_SLACK_MS = 0.5  # what Join.latest may add beyond its timeout


@dataclasses.dataclass
class JoinMeasurement:
    frames: int  # joined messages timed at the consumer (warm-up excluded)
    seconds: float
    latency_ns: list[int]
    join: JoinStats

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def join_cpu_us(self) -> float:
        """CPU microseconds of the JOIN task per joined message."""
        return 1e6 * self.join.cpu_s / self.join.sets if self.join.sets else 0.0


def measure_join(
    shape: tuple[int, ...],
    join: Join,
    duration: float,
    fps: tuple[float | None, float | None] = (None, None),
    flow_type: str = BATCH,
    flow_options: Mapping[str, Any] | None = None,
    warmup: int = 3,
    timeout: float = 120.0,
) -> JoinMeasurement:
    """Run two producers -> JOIN -> probe consumer once; what the probe and the JOIN saw."""
    with tempfile.TemporaryDirectory(prefix="videoflow-bench-") as reports:
        first = BenchProducer(shape, duration=duration, fps=fps[0],
                              min_frames=warmup + MIN_TIMED, name="first")
        second = BenchProducer(shape, duration=duration, fps=fps[1], name="second")
        sink = ProbeConsumer(report_dir=reports, warmup=warmup, name="consumer", join=join)(
            first, second
        )
        flow = Flow([first, second], [sink], flow_type=flow_type, flow_options=flow_options)
        run_bounded(flow, timeout)
        (probe,) = read_reports(reports, "consumer")
    return JoinMeasurement(
        frames=probe["timed_frames"],
        seconds=max(0, probe["last_ns"] - probe["first_ns"]) / 1e9,
        latency_ns=probe["latency_ns"],
        join=flow.stats().join(),
    )


def _ms(values_ns: list[int], q: float) -> float | None:
    """The ``q`` quantile of ``values_ns`` in milliseconds (None: no value)."""
    return percentile([v / 1e6 for v in values_ns], q)


def join_section(
    size: tuple[int, int],
    duration: float,
    repeat: int,
    flow_options: Mapping[str, Any] | None,
    progress: Callable[[str], None],
    size_name: str,
    rate: float = 100.0,
    timeout_ms: float = 5.0,
) -> list[Row]:
    """The rows of the join section (see the module docstring)."""
    shape = (*size, 3)
    rows: list[Row] = []
    runs = []
    for round_ in range(max(1, repeat)):
        progress(f"join {size_name}: two producers, Join.seq() (round {round_ + 1})")
        runs.append(measure_join(shape, Join.seq(), duration, flow_options=flow_options))
    best = max(runs, key=lambda m: m.fps)
    cpu = min(m.join_cpu_us for m in runs)
    row = Row(
        section="join", impl="videoflow",
        params={"size": size_name, "inputs": 2, "policy": "seq"},
        frames=best.frames, seconds=best.seconds, fps=best.fps,
        mb_s=2 * best.fps * shape[0] * shape[1] * shape[2] / 1e6, hop_cpu_us=cpu,
        extra={
            "join_cpu_us": cpu, "target_fps": TARGET_FPS, "target_join_cpu_us":
            TARGET_JOIN_CPU_US, "met": float(best.fps >= TARGET_FPS and cpu <= TARGET_JOIN_CPU_US),
        },
    )
    row.note = (
        f"target >= {TARGET_FPS:.0f} joined/s and <= {TARGET_JOIN_CPU_US:.0f} us JOIN CPU: "
        + ("met" if row.extra["met"] else "missed")
    )
    rows.append(row)

    def hop(i: int) -> Node:
        return PassThrough(name=f"stage{i}")

    seconds = max(duration, 60 / rate)
    bases, lates = [], []
    for round_ in range(max(1, repeat)):  # taking turns, so that a burst of load hits both
        progress(f"join {size_name}: Join.latest(timeout_ms={timeout_ms:g}), {rate:g} fps, "
                 f"against one hop (round {round_ + 1})")
        bases.append(measure(shape, [hop], duration=seconds, fps=rate, flow_type=REALTIME,
                             flow_options=flow_options))
        lates.append(measure_join(shape, Join.latest(timeout_ms=timeout_ms), seconds,
                                  fps=(rate, rate / 10), flow_type=REALTIME,
                                  flow_options=flow_options))
    # The run with the lowest median of each: others' load only ever adds latency.
    base = min(bases, key=lambda m: _ms(m.latency_ns, 0.5) or float("inf"))
    late = min(lates, key=lambda m: _ms(m.latency_ns, 0.5) or float("inf"))
    base50, base99 = _ms(base.latency_ns, 0.5), _ms(base.latency_ns, 0.99)
    p50, p99 = _ms(late.latency_ns, 0.5), _ms(late.latency_ns, 0.99)
    added50 = p50 - base50 if p50 is not None and base50 is not None else None
    added99 = p99 - base99 if p99 is not None and base99 is not None else None
    limit = timeout_ms + LATENCY_SLACK_MS
    row = Row(
        section="join", impl="videoflow",
        params={"size": size_name, "inputs": 2, "policy": "latest", "timeout_ms": timeout_ms,
                "rate": rate},
        frames=late.frames, seconds=late.seconds, fps=late.fps,
        latency_p50_ms=p50, latency_p99_ms=p99,
        extra={
            "join_cpu_us": late.join_cpu_us,
            "hop_p50_ms": base50 if base50 is not None else -1.0,
            "added_p50_ms": added50 if added50 is not None else -1.0,
            "added_p99_ms": added99 if added99 is not None else -1.0,
            "limit_ms": limit,
            "met": float(added50 is not None and added50 <= limit),
        },
    )
    row.note = (
        f"Join.latest adds {added50:.2f} ms at the median (limit {limit:g} ms): "
        + ("met" if row.extra["met"] else "missed")
        + f"; p99 {p99:.2f} ms through the JOIN, {base99:.2f} ms through one hop"
        if added50 is not None and p99 is not None and base99 is not None
        else "no latency measured"
    )
    rows.append(row)
    return rows
