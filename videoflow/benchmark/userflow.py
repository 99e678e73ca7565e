"""Benchmarking a user's own flow: a script that builds and runs flows, or a flow factory.

Flows are timed from ``run()`` to the end of ``join()`` (process start-up included) and their
counters are taken from ``Flow.stats()``; nothing in the user's code changes.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from videoflow.benchmark.result import BenchResult, Row, machine_info
from videoflow.core import Flow, FlowStats


@contextlib.contextmanager
def _watching_flows(seen: list[tuple[Flow, float, float, FlowStats]]) -> Iterator[None]:
    """While active, every ``Flow.run()``/``join()`` in this process is timed."""
    started: dict[int, float] = {}
    real_run, real_join = Flow.run, Flow.join

    def run(self: Flow) -> None:
        started[id(self)] = time.perf_counter()
        real_run(self)

    def join(self: Flow, timeout: float | None = None) -> bool:
        done = real_join(self, timeout)
        if done and id(self) in started:
            seen.append((self, started.pop(id(self)), time.perf_counter(), self.stats()))
        return done

    Flow.run, Flow.join = run, join  # type: ignore[method-assign]
    try:
        yield
    finally:
        Flow.run, Flow.join = real_run, real_join  # type: ignore[method-assign]


def _row(label: str, index: int, t0: float, t1: float, stats: FlowStats) -> Row:
    seconds = t1 - t0
    delivered = stats.delivered
    busiest = max(stats.nodes, key=lambda n: n.busy_s / max(1, n.nb_tasks), default=None)
    extra: dict[str, float] = {}
    for node in stats.nodes:
        if node.messages_in:
            extra[f"busy_us/{node.name}"] = 1e6 * node.busy_s / node.messages_in
    note = "run() to join(), process start-up included"
    if busiest is not None:
        note += f"; busiest node per task: {busiest.name}"
    return Row(
        section="flow",
        impl="videoflow",
        params={"flow": label, "index": index},
        frames=delivered,
        seconds=seconds,
        fps=delivered / seconds if seconds > 0 else 0.0,
        drop_rate=stats.dropped / stats.produced if stats.produced else 0.0,
        extra=extra,
        note=note,
    )


def bench_flow(
    target: str | Callable[[], Flow], repeat: int = 1, argv: list[str] | None = None
) -> BenchResult:
    """Run a user's flow ``repeat`` times and time it.

    target: the path of a script (run as ``__main__``; every flow it runs and joins is
            measured) or a function returning a Flow that has not been started.
    """
    rows: list[Row] = []
    for _ in range(repeat):
        seen: list[tuple[Flow, float, float, FlowStats]] = []
        if isinstance(target, str):
            label = os.path.basename(target)
            saved = sys.argv
            sys.argv = [target, *(argv or [])]
            try:
                with _watching_flows(seen):
                    runpy.run_path(target, run_name="__main__")
            finally:
                sys.argv = saved
        else:
            label = getattr(target, "__name__", "flow")
            flow = target()
            t0 = time.perf_counter()
            flow.run()
            flow.join()
            seen.append((flow, t0, time.perf_counter(), flow.stats()))
        if not seen:
            raise RuntimeError(f"{label} ran no flow to its end (no Flow.run() + join())")
        rows += [_row(label, i, t0, t1, st) for i, (_f, t0, t1, st) in enumerate(seen)]
    options: dict[str, Any] = {"target": label, "repeat": repeat}
    return BenchResult(rows=rows, machine=machine_info(), options=options)
