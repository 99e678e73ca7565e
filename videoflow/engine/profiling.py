"""The ``profile`` flow option: each task of the flow runs under cProfile.

With ``flow_options={"profile": DIR}`` (or ``VIDEOFLOW_PROFILE=DIR``) every task writes its
statistics to ``DIR/<node>.<worker>.prof`` when it ends, whatever the ending; read them with
``pstats``. The clock is the process's CPU time, so time a task spends asleep in a queue costs
nothing and the figures add up to the CPU the task used. Profiling slows Python code down
(about 2x for call-heavy loops): read the split between functions, not the absolute figures.
"""

from __future__ import annotations

import cProfile
import os
import time
from collections.abc import Callable


def profile_path(directory: str, node: str, worker: int) -> str:
    """Where the task ``worker`` of ``node`` writes its statistics."""
    return os.path.join(directory, f"{node.replace(os.sep, '_')}.{worker}.prof")


def run_profiled(directory: str, node: str, worker: int, call: Callable[[], None]) -> None:
    """``call()`` under cProfile (CPU clock); the statistics go to ``profile_path`` even when
    it raises."""
    os.makedirs(directory, exist_ok=True)
    profiler = cProfile.Profile(time.process_time)
    try:
        profiler.runcall(call)
    finally:
        profiler.dump_stats(profile_path(directory, node, worker))
