"""The JOIN's matching rule alone: CPU per joined message of engine/align.py's Aligner.

    python bench/test_align.py                        # the table (figures in the report)
    pytest bench/test_align.py --benchmark-only -s    # the same, under pytest-benchmark

The JOIN task's budget is 60 us of CPU per joined message (two 1080p producers joined at
2,000 messages/s on 2 cores); the rest of it goes to receiving, decoding and forwarding. Here
each input offers one message per set, in turn, with a poll after every offer, as the JOIN loop
does: what is timed is ``offer`` + ``poll`` for every input of a set, in one process.
"""

from __future__ import annotations

import time
from typing import Any

from videoflow.core import Join
from videoflow.engine.align import Aligner

BUDGET_US = 60.0  # CPU per joined message in the JOIN task (issue 15)
CASES = [
    ("seq", Join.seq()),
    ("time", Join.time(tolerance_ms=5)),
    ("time+timeout", Join.time(tolerance_ms=5, missing="none", timeout_ms=40)),
    ("latest", Join.latest(timeout_ms=40)),
]


def aligner_cost(join: Join, inputs: int, sets: int = 100_000, repeat: int = 3) -> float:
    """CPU microseconds per joined message (best of ``repeat``)."""
    best = float("inf")
    message: Any = (0, 0, {"index": 0, "timestamp_ms": 0.0}, {1: ("a", None)})
    for _ in range(repeat):
        aligner = Aligner(join, inputs, 6)
        offer, poll = aligner.offer, aligner.poll
        ts = 0.0
        t0 = time.process_time()
        for _ in range(sets):
            ts += 33.3
            for i in range(inputs):
                offer(i, message, ts + i)
                poll()
        best = min(best, time.process_time() - t0)
        # sets complete at once; a preempted run may time out (partial sets), never lose one
        assert aligner.groups >= sets, (join, aligner.groups)
    return 1e6 * best / sets


def table() -> list[tuple[str, int, float]]:
    return [(name, n, aligner_cost(join, n)) for name, join in CASES for n in (2, 4)]


def test_aligner_cost(benchmark: Any) -> None:
    rows = benchmark.pedantic(table, rounds=1, iterations=1)
    benchmark.extra_info["aligner_us_per_joined_message"] = {f"{p}/{n}": c for p, n, c in rows}
    for policy, n, cost in rows:
        print(f"{policy:>13} {n} inputs: {cost:6.2f} us CPU per joined message")
        if n == 2:  # a small share of the JOIN's budget
            assert cost / BUDGET_US < 0.25, (policy, cost)


if __name__ == "__main__":
    print("policy        inputs  us CPU per joined message  share of the 60 us budget")
    for policy, n, cost in table():
        print(f"{policy:<13} {n:>6}  {cost:>25.2f}  {cost / BUDGET_US:>24.1%}")
