"""Native extension vs pure-Python fallback: per-hop cost and 1080p pass-through, same run.

    python bench/test_native.py            # both modes, one table (the figures in bench/README.md)
    pytest bench/test_native.py --benchmark-only    # the hop in the mode of this process

A *hop* is what the transport does to move one control message from a task to the next, as the
engine does it (task.py Outbox/Inbox): encode the message (a 1080p frame handle plus meta),
put it on a control queue, get it, decode it. ``hop_inproc`` times it in one process (pure CPU
cost, no scheduler in the way); ``hop_stream`` runs sender and receiver in two processes and
times the stream (what a pipeline pays per message and per hop, wake-ups included).
``flow_fps`` runs SyntheticFrameProducer(1080p, pattern="stamp") -> IdentityProcessor ->
VoidConsumer in BATCH mode and times from GO to the end (start-up excluded). Each mode runs in
its own interpreter, since the choice between native and fallback is made once at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

SHAPE = (1080, 1920, 3)


def _message():
    from videoflow.transport.shm import SlotRef

    ref = SlotRef(f"vf.{os.getpid()}.bench.1-0.1", 2, 41)
    values = {1: ("a", ref, 0, SHAPE, (5760, 3, 1), "|u1")}
    return (0, 0, {"index": 41}, values)


def _queue(name: str, create: bool):
    from videoflow.transport.queue import ControlQueue

    return ControlQueue(name, create=create, depth=4, message_size=4096)


def hop_inproc(n: int = 200_000) -> float:
    """Microseconds per hop: dumps + put + get + loads, one process."""
    from videoflow.transport import message

    q = _queue(f"vf.{os.getpid()}.bench.q", True)
    try:
        msg = _message()
        dumps, loads, put, get = message.dumps, message.loads, q.put, q.get
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(n):
                put(dumps(msg), 0)
                loads(get(0))
            best = min(best, time.perf_counter() - t0)
        return 1e6 * best / n
    finally:
        q.unlink()
        q.close()


def _sender(name: str, n: int) -> None:
    from videoflow.transport import message

    q = _queue(name, False)
    msg = _message()
    dumps, put = message.dumps, q.put
    for _ in range(n):
        data = dumps(msg)
        while not put(data, 0.1):
            pass
    q.close()


def hop_stream(n: int = 100_000) -> float:
    """Microseconds per message through one hop between two processes (best of 5)."""
    import multiprocessing as mp

    from videoflow.transport import message

    name = f"vf.{os.getpid()}.bench.s"
    q = _queue(name, True)
    try:
        best = float("inf")
        for _ in range(5):
            p = mp.get_context("fork").Process(target=_sender, args=(name, n))
            t0 = time.perf_counter()
            p.start()
            loads, get = message.loads, q.get
            for _ in range(n):
                data = get(5.0)
                if data is None:
                    raise RuntimeError("sender stalled")
                loads(data)
            best = min(best, time.perf_counter() - t0)
            p.join()
        return 1e6 * best / n
    finally:
        q.unlink()
        q.close()


def flow_fps(frames: int = 5000, shape: tuple[int, ...] = SHAPE) -> float:
    """Frames per second of producer -> identity -> void, BATCH, excluding start-up."""
    from videoflow.consumers import VoidConsumer
    from videoflow.core import BATCH, Flow
    from videoflow.processors import IdentityProcessor
    from videoflow.producers import SyntheticFrameProducer

    best = 0.0
    for _ in range(3):
        a = SyntheticFrameProducer(shape, count=frames, pattern="stamp")
        b = IdentityProcessor()(a)
        c = VoidConsumer()(b)
        flow = Flow([a], [c], flow_type=BATCH)
        flow.run()
        flow.join()
        stats = flow.stats()
        best = max(best, frames / stats.elapsed_s)
    return best


def _measure() -> dict[str, object]:
    from videoflow.transport import native_status

    return {
        "status": native_status(),
        "hop_inproc_us": hop_inproc(),
        "hop_stream_us": hop_stream(),
        "fps_1080p": flow_fps(),
        "fps_8x8": flow_fps(shape=(8, 8)),
    }


def compare() -> dict[str, dict[str, object]]:
    """Run ``_measure`` in a fresh interpreter per mode; returns {"native": ..., "python": ...}."""
    out = {}
    for label, flag in (("native", "1"), ("python", "0")):
        env = {**os.environ, "VIDEOFLOW_NATIVE": flag}
        proc = subprocess.run(
            [sys.executable, __file__, "--measure"], env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def test_hop(benchmark):
    """pytest-benchmark: one in-process hop in this process's mode."""
    from videoflow.transport import message

    q = _queue(f"vf.{os.getpid()}.bench.b", True)
    msg = _message()

    def hop():
        q.put(message.dumps(msg), 0)
        message.loads(q.get(0))

    try:
        benchmark(hop)
    finally:
        q.unlink()
        q.close()


if __name__ == "__main__":
    if "--measure" in sys.argv:
        print(json.dumps(_measure()))
        sys.exit(0)
    res = compare()
    nat, py = res["native"], res["python"]
    print(f"native: {nat['status']}\nfallback: {py['status']}\n")
    print("| measure | native | fallback | ratio |")
    print("| --- | ---: | ---: | ---: |")
    rows = [
        ("hop, one process (us)", "hop_inproc_us", False),
        ("hop, two processes (us/msg)", "hop_stream_us", False),
        ("1080p pass-through (fps)", "fps_1080p", True),
        ("8x8 pass-through (fps)", "fps_8x8", True),
    ]
    for label, key, higher in rows:
        a, b = float(nat[key]), float(py[key])  # type: ignore[arg-type]
        ratio = a / b if higher else b / a
        print(f"| {label} | {a:,.2f} | {b:,.2f} | {ratio:.2f}x |")
