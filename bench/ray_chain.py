"""The Ray engine's baseline: a hand-written chain of classic Ray actors, driven by one loop.

What a Ray user writes without videoflow to move frames producer -> ``hops`` pass-through
actors -> consumer: a producer actor makes a frame the way ``SyntheticFrameProducer(pattern=
"stamp")`` does under the Ray engine (a fresh array, its index stamped in the first 8 bytes),
every hop returns its input, the consumer records when each frame arrives. The driver submits
``producer.next -> hop -> ... -> consumer`` per frame, passing refs, and keeps at most
``window`` frames in flight (it waits for the oldest before submitting more), which is what the
engine's driver does, minus the engine: no metadata travelling with the frame, no counters, no
stop or error protocol. bench/test_ray_handoff.py sets it against the engine on the same
frames in the same run (``videoflow bench --engine ray`` measures the engine alone).
"""

from __future__ import annotations

import collections
import dataclasses
import resource
import sys
import time
from typing import Any

import numpy as np

_now = time.perf_counter_ns
RAY_CHAIN = "Ray actors by hand"


class _Producer:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape, self.index = shape, 0

    def next(self) -> np.ndarray:
        frame = np.empty(self.shape, np.uint8)
        frame.reshape(-1)[:8] = np.frombuffer(np.array(self.index, "<u8").tobytes(), np.uint8)
        self.index += 1
        return frame

    def cpu(self) -> float:
        return time.process_time()


class _Hop:
    def call(self, frame: np.ndarray) -> np.ndarray:
        return frame

    def cpu(self) -> float:
        return time.process_time()


class _Consumer:
    def __init__(self) -> None:
        self.arrivals: list[int] = []

    def call(self, frame: np.ndarray) -> int:
        self.arrivals.append(_now())
        return len(self.arrivals)

    def times(self) -> list[int]:
        return self.arrivals

    def cpu(self) -> float:
        return time.process_time()


@dataclasses.dataclass
class ChainTiming:
    """Frames timed after warm-up and their span; CPU seconds of the actors and of the driver
    process (its Ray threads included) over the whole run, and the frames of the run."""

    frames: int
    seconds: float
    actors_cpu_s: float
    driver_cpu_s: float
    messages: int

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1e3 * (self.actors_cpu_s + self.driver_cpu_s) / max(1, self.messages)


def process_cpu() -> float:
    """CPU seconds of this process, every thread (Ray's own included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ray_chain(
    shape: tuple[int, ...], hops: int, duration: float, window: int | None = None,
    warmup: int = 3,
) -> ChainTiming:
    """Frames through ``hops`` pass-through actors for ``duration`` seconds; throughput timed
    at the consumer from the frame after ``warmup`` to the last. Connects to Ray (a local
    instance when not connected yet) and kills its actors before returning."""
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # bench/ is not on the workers
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    window = window or 2 * (hops + 2) + 4  # the engine's default for the same chain
    remote = ray.remote(num_cpus=0)
    producer = remote(_Producer).remote(shape)
    relays = [remote(_Hop).remote() for _ in range(hops)]
    consumer = remote(_Consumer).remote()
    actors: list[Any] = [producer, *relays, consumer]
    try:
        cpu0 = sum(ray.get([a.cpu.remote() for a in actors]))
        driver0 = process_cpu()
        inflight: collections.deque[Any] = collections.deque()
        messages = 0
        end = time.monotonic() + duration
        while time.monotonic() < end:
            while len(inflight) < window:
                ref = producer.next.remote()
                for relay in relays:
                    ref = relay.call.remote(ref)
                inflight.append(consumer.call.remote(ref))
                messages += 1
            ray.get(inflight.popleft())
        ray.get(list(inflight))
        driver_cpu = process_cpu() - driver0
        actors_cpu = sum(ray.get([a.cpu.remote() for a in actors])) - cpu0
        arrivals = ray.get(consumer.times.remote())[warmup:]
    finally:
        for actor in actors:
            ray.kill(actor)
    frames = max(0, len(arrivals) - 1)
    return ChainTiming(
        frames=frames, seconds=(arrivals[-1] - arrivals[0]) / 1e9 if frames else 0.0,
        actors_cpu_s=actors_cpu, driver_cpu_s=driver_cpu, messages=messages,
    )
