"""Module-level nodes the benchmarks run (task processes import them by name).

The nodes under test count nothing themselves: CPU time and messages per node come from
``Flow.stats()``. The probe consumer measures what only the end of the chain sees (when each
frame arrived, how old it was) and writes it, as JSON, into ``report_dir`` when its task
closes. Times are ``time.perf_counter_ns()``, which is CLOCK_MONOTONIC on Linux and so
comparable between processes.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from videoflow.core import ConsumerNode, Join, ProcessorNode
from videoflow.producers import SyntheticFrameProducer

_now = time.perf_counter_ns


def set_cv2_threads(threads: int | None) -> None:
    """Pin OpenCV's own thread pool (None: leave OpenCV's default)."""
    if threads is None:
        return
    import cv2

    cv2.setNumThreads(threads)


def write_report(report_dir: str | None, name: str, data: dict[str, Any]) -> None:
    if report_dir is None:
        return
    path = os.path.join(report_dir, f"{name}.{os.getpid()}.json")
    with open(path, "w") as f:
        json.dump(data, f)


def read_reports(report_dir: str, name: str) -> list[dict[str, Any]]:
    """Every report a node called ``name`` wrote (one per task)."""
    out = []
    for entry in sorted(os.listdir(report_dir)):
        if entry.startswith(name + ".") and entry.endswith(".json"):
            with open(os.path.join(report_dir, entry)) as f:
                out.append(json.load(f))
    return out


class BenchProducer(SyntheticFrameProducer):
    """Synthetic frames (pattern ``stamp``: written in place, the cheapest producer) for
    ``duration`` seconds (counted from the first frame, so start-up does not eat it, and never
    fewer than ``min_frames``) or ``count`` frames, whichever ends first. Stamps
    ``meta["t_ns"]`` so consumers can measure end-to-end latency; with ``fps``, the pace also
    starts at the first frame."""

    def __init__(
        self,
        shape: tuple[int, ...],
        duration: float | None = None,
        count: int | None = None,
        fps: float | None = None,
        min_frames: int = 0,
        name: str | None = None,
    ) -> None:
        super().__init__(shape, np.uint8, count=count, fps=fps, pattern="stamp", name=name)
        self.duration = duration
        self.min_frames = min_frames
        self._end_ns = 0

    def open(self) -> None:
        super().open()
        self._end_ns = 0

    def next(self) -> np.ndarray:
        if self._index == 0:
            self._t0 = time.monotonic()  # pace from the first frame, not from open()
            self._end_ns = _now() + int(self.duration * 1e9) if self.duration else 0
        elif self._end_ns and self._index >= self.min_frames and _now() >= self._end_ns:
            raise StopIteration
        frame = super().next()
        self.meta["t_ns"] = _now()
        return frame


class PassThrough(ProcessorNode):
    """Returns its input (no copy: the frame stays in its slot)."""

    def process(self, frame: Any) -> Any:
        return frame


class Blur(ProcessorNode):
    """cv2.GaussianBlur(5x5) straight into an output array that lives in a slot (``dst=``)."""

    def __init__(
        self,
        ksize: int = 5,
        cv2_threads: int | None = 1,
        nb_tasks: int = 1,
        name: str | None = None,
    ) -> None:
        super().__init__(nb_tasks=nb_tasks, name=name)
        self.ksize = ksize
        self.cv2_threads = cv2_threads

    def open(self) -> None:
        set_cv2_threads(self.cv2_threads)

    def process(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        out = self.allocate(frame.shape, frame.dtype)
        cv2.GaussianBlur(frame, (self.ksize, self.ksize), 0, dst=out)
        return out


class Sleep(ProcessorNode):
    """Takes ``seconds`` per message: a node slower than its producer, for drop measurements."""

    def __init__(self, seconds: float, nb_tasks: int = 1, name: str | None = None) -> None:
        super().__init__(nb_tasks=nb_tasks, name=name)
        self.seconds = seconds

    def process(self, frame: Any) -> Any:
        time.sleep(self.seconds)
        return frame


class ProbeConsumer(ConsumerNode):
    """Records when frames arrive and how old they are (from the producer's ``t_ns``).

    With several parents (a JOIN in front of it, ``join``), the latency is that of the first
    input present in each set. The first ``warmup`` frames are not timed. Latencies are kept
    for at most ``max_samples`` frames (evenly thinned beyond that) so the report stays small.
    """

    def __init__(
        self, report_dir: str | None = None, warmup: int = 3, max_samples: int = 20000,
        name: str | None = None, join: Join | None = None,
    ) -> None:
        super().__init__(name=name, join=join)
        self.report_dir = report_dir
        self.warmup = warmup
        self.max_samples = max_samples

    def open(self) -> None:
        self._calls = 0
        self._first_ns = self._last_ns = 0
        self._lat: list[int] = []

    def consume(self, *inputs: Any) -> None:
        now = _now()
        self._calls += 1
        if self._calls == self.warmup + 1:
            self._first_ns = now
        self._last_ns = now
        t0 = self.meta.get("t_ns")
        if t0 is not None:
            self._lat.append(now - t0)
            if len(self._lat) >= 2 * self.max_samples:
                self._lat = self._lat[::2]

    def close(self) -> None:
        write_report(self.report_dir, self.name, {
            "timed_frames": max(0, self._calls - self.warmup - 1),
            "first_ns": self._first_ns,
            "last_ns": self._last_ns,
            "latency_ns": self._lat,
        })
