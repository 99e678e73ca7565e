"""What videoflow is measured against, on the same frames and the same work, in the same run.

- ``queue``:  frames pickled through ``multiprocessing.Queue`` (what the 2020 videoflow did),
  one process per stage, bounded queues;
- ``pipe``:   raw frame bytes through ``multiprocessing.Pipe`` (``send_bytes`` /
  ``recv_bytes_into`` a preallocated buffer: no pickle, but two copies through the kernel);
- ``pool``:   ``multiprocessing.Pool(K).imap`` (ordered), frames pickled to and from workers;
- ``single``: one process, one loop, no transport at all (an upper bound for the hand-off,
  the reference for CPU-bound work).

Stages are module-level functions so every start method can run them.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from videoflow.benchmark.nodes import set_cv2_threads

_now = time.perf_counter_ns

QUEUE, PIPE, POOL, SINGLE = "mp.Queue+pickle", "Pipe bytes", "Pool.imap", "single process"
IMPLS = {"queue": QUEUE, "pipe": PIPE, "pool": POOL, "single": SINGLE}


@dataclasses.dataclass
class Timing:
    """Frames timed after warm-up, their span, and CPU seconds per relay stage."""

    frames: int
    seconds: float
    relay_cpu_s: list[float] = dataclasses.field(default_factory=list)
    relay_frames: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# -- work ------------------------------------------------------------------------------------
def identity(frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return frame


def blur(frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(frame, (5, 5), 0, dst=out)


WORK: dict[str, Callable[[np.ndarray, np.ndarray | None], np.ndarray]] = {
    "identity": identity,
    "blur": blur,
}

_WORK1: dict[str, Callable[[np.ndarray], np.ndarray]] = {"identity": identity, "blur": blur}


ROTATE_BYTES = 64 << 20  # more than the last-level cache of the machines we measure on


def rotation(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Distinct frames (zeros) adding up to about ``ROTATE_BYTES``: cycling through them, work
    reads memory that is not in cache, as it does in a pipeline whose frames rotate through
    slots, instead of re-reading one hot frame."""
    nbytes = int(np.prod(shape))
    count = min(32, max(2, -(-ROTATE_BYTES // max(1, nbytes))))
    return [np.zeros(shape, np.uint8) for _ in range(count)]


def frames_for(
    shape: tuple[int, ...], duration: float | None, count: int | None, min_frames: int = 23
) -> Iterator[np.ndarray]:
    """Preallocated frames (see ``rotation``), each stamped with its index, yielded until
    ``count`` frames or ``duration`` seconds (counted from the first frame taken, never fewer
    than ``min_frames``)."""
    frames = rotation(shape)
    end = 0
    i = 0
    while count is None or i < count:
        if i == 1 and duration:
            end = _now() + int(duration * 1e9)
        elif end and i >= min_frames and _now() >= end:
            break
        frame = frames[i % len(frames)]
        frame.reshape(-1)[:8] = np.frombuffer(np.array(i, dtype="<u8").tobytes(), dtype=np.uint8)
        yield frame
        i += 1


class _Clock:
    """Times frames on arrival, skipping ``warmup`` of them."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.n = 0
        self.first = self.last = 0

    def tick(self) -> None:
        now = _now()
        self.n += 1
        if self.n == self.warmup + 1:
            self.first = now
        self.last = now

    def timing(self) -> Timing:
        return Timing(max(0, self.n - self.warmup - 1), max(0, self.last - self.first) / 1e9)


# -- channels: one interface over a Queue and a Pipe -----------------------------------------
class _Channel:
    def __init__(self, kind: str, end: Any, shape: tuple[int, ...]) -> None:
        self.kind, self.end = kind, end
        self.buf = np.empty(shape, np.uint8) if kind == "pipe" else None

    def send(self, frame: np.ndarray | None) -> None:
        if self.kind == "queue":
            self.end.put(frame)
        elif frame is None:
            self.end.send_bytes(b"")
        else:
            self.end.send_bytes(frame.reshape(-1).data)

    def recv(self) -> np.ndarray | None:
        if self.kind == "queue":
            frame: np.ndarray | None = self.end.get()
            return frame
        assert self.buf is not None
        n = self.end.recv_bytes_into(self.buf.reshape(-1).data)
        return None if n == 0 else self.buf


def _source(kind: str, end: Any, shape: tuple[int, ...], duration: float | None,
            count: int | None) -> None:
    ch = _Channel(kind, end, shape)
    for frame in frames_for(shape, duration, count):
        ch.send(frame)
    ch.send(None)


def _relay(kind: str, inp: Any, out: Any, shape: tuple[int, ...], work: str,
           threads: int | None, results: Any) -> None:
    set_cv2_threads(threads)
    fn = WORK[work]
    src, dst = _Channel(kind, inp, shape), _Channel(kind, out, shape)
    buf = np.empty(shape, np.uint8) if kind == "pipe" else None
    n, cpu0 = 0, 0.0
    while (frame := src.recv()) is not None:
        if n == 0:
            cpu0 = time.process_time()
        n += 1
        dst.send(fn(frame, buf))
    dst.send(None)
    results.put(("relay", n, time.process_time() - cpu0 if n else 0.0))


def _sink(kind: str, end: Any, shape: tuple[int, ...], warmup: int, results: Any) -> None:
    ch, clock = _Channel(kind, end, shape), _Clock(warmup)
    while ch.recv() is not None:
        clock.tick()
    t = clock.timing()
    results.put(("sink", t.frames, t.seconds))


def _result(results: Any, procs: list[Any], deadline: float) -> Any:
    """The next stage report; raise if a stage died first or the deadline passed."""
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=0.2)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                p = dead[0]
                raise RuntimeError(f"baseline stage {p.name} died (exit {p.exitcode})") from None
    raise TimeoutError("the baseline did not end in time")


def chain(
    kind: str,
    shape: tuple[int, ...],
    hops: int = 1,
    work: str = "identity",
    duration: float | None = 1.0,
    count: int | None = None,
    start_method: str = "forkserver",
    queue_depth: int = 4,
    cv2_threads: int | None = 1,
    warmup: int = 3,
    timeout: float = 120.0,
) -> Timing:
    """Producer -> ``hops`` relay processes doing ``work`` -> consumer, over ``kind``
    (``"queue"``: pickled through multiprocessing.Queue; ``"pipe"``: raw bytes over Pipe)."""
    if kind not in ("queue", "pipe"):
        raise ValueError(f"kind must be 'queue' or 'pipe', got {kind!r}")
    ctx: Any = mp.get_context(start_method)
    results = ctx.Queue()
    links: list[tuple[Any, Any]] = []
    for _ in range(hops + 1):
        if kind == "queue":
            q = ctx.Queue(queue_depth)
            links.append((q, q))
        else:
            r, w = ctx.Pipe(duplex=False)
            links.append((r, w))
    procs = [ctx.Process(target=_source, args=(kind, links[0][1], shape, duration, count))]
    for i in range(hops):
        procs.append(ctx.Process(
            target=_relay,
            args=(kind, links[i][0], links[i + 1][1], shape, work, cv2_threads, results),
        ))
    procs.append(ctx.Process(target=_sink, args=(kind, links[-1][0], shape, warmup, results)))
    for p in procs:
        p.start()
    try:
        timing = Timing(0, 0.0)
        deadline = time.monotonic() + timeout
        for _ in range(hops + 1):
            what, n, value = _result(results, procs, deadline)
            if what == "sink":
                timing.frames, timing.seconds = n, value
            else:
                timing.relay_cpu_s.append(value)
                timing.relay_frames = n
        for p in procs:
            p.join(timeout)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        for a, b in links:
            for end in {id(a): a, id(b): b}.values():
                end.close()
        results.close()
        results.join_thread()
    return timing


def pool_imap(
    shape: tuple[int, ...],
    processes: int,
    work: str = "identity",
    duration: float | None = 1.0,
    count: int | None = None,
    start_method: str = "forkserver",
    cv2_threads: int | None = 1,
) -> Timing:
    """``Pool(processes).imap(work, frames)`` (ordered, chunksize 1), consumed in this process.

    Timed from the first frame handed to the pool (its workers already started) to the last
    result: results pile up in the pool while this process is not reading them, so timing
    their arrival alone would measure a burst, not the throughput.
    """
    ctx = mp.get_context(start_method)
    with ctx.Pool(processes, initializer=set_cv2_threads, initargs=(cv2_threads,)) as pool:
        pool.map(_noop, range(processes))  # workers started and imported
        t0 = _now()
        frames = sum(1 for _ in pool.imap(
            _WORK1[work], frames_for(shape, duration, count), chunksize=1))
        seconds = (_now() - t0) / 1e9
    return Timing(frames, seconds)


def _noop(x: int) -> int:
    return x


def single(
    shape: tuple[int, ...],
    work: str = "identity",
    duration: float | None = 1.0,
    count: int | None = None,
    cv2_threads: int | None = 1,
    warmup: int = 3,
) -> Timing:
    """Produce, work and consume in one loop of this process (cv2 threads as given); inputs and
    outputs rotate through distinct buffers, as frames rotate through slots in a flow."""
    import cv2

    before = cv2.getNumThreads()
    set_cv2_threads(cv2_threads)
    try:
        fn, clock = WORK[work], _Clock(warmup)
        outs = rotation(shape)
        for i, frame in enumerate(frames_for(shape, duration, count)):
            fn(frame, outs[i % len(outs)])
            clock.tick()
        return clock.timing()
    finally:
        cv2.setNumThreads(before)
