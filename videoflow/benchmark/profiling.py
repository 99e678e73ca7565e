"""Where a hop's time goes: cProfile inside every task of a pass-through flow.

The engine is not touched: for the duration of one run, the task entry point the engine starts
(``videoflow.engine.runner.task_main``) is swapped for ``profiled_task_main``, a module-level
function (so every start method can import it) that runs the real one under cProfile and
saves its statistics next to the flow's owner. Profiling slows Python code down (about 2x for
call-heavy loops): read the split between functions, not the absolute figures.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import shutil
import tempfile
import time
from typing import Any

from videoflow.benchmark.flows import measure
from videoflow.benchmark.matrix import pass_through


def profile_dir(owner_pid: int) -> str:
    return os.path.join(tempfile.gettempdir(), f"videoflow-profile-{owner_pid}")


def profiled_task_main(spec: Any, *args: Any, **kwargs: Any) -> None:
    """``task_main`` under cProfile; stats go to ``profile_dir(owner)/<node>.<worker>.prof``."""
    from videoflow.engine import task

    owner = int(str(spec.pool_prefix).split(".")[1])
    out = os.path.join(profile_dir(owner), f"{spec.stage.spec.name}.{spec.worker}.prof")
    profiler = cProfile.Profile(time.process_time)  # CPU time: waits that sleep cost nothing
    try:
        profiler.runcall(task.task_main, spec, *args, **kwargs)
    finally:
        profiler.dump_stats(out)


def profile_handoff(
    shape: tuple[int, ...] = (1080, 1920, 3), hops: int = 1, duration: float = 2.0,
    top: int = 12,
) -> str:
    """Profile every task of producer -> ``hops`` pass-throughs -> consumer; a text report
    of each task's most expensive functions in microseconds per frame."""
    from videoflow.engine import runner

    where = profile_dir(os.getpid())
    shutil.rmtree(where, ignore_errors=True)
    os.makedirs(where)
    real = runner.task_main
    runner.task_main = profiled_task_main
    try:
        m = measure(shape, [pass_through] * hops, duration=duration)
    finally:
        runner.task_main = real
    frames = max(1, m.produced)
    lines = [f"{hops} hop(s), {shape}, {m.produced} frames; profiled run: {m.fps:.0f} fps"]
    try:
        for name in sorted(os.listdir(where)):
            stats = pstats.Stats(os.path.join(where, name))
            table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
            total = sum(v[2] for v in table.values())
            lines.append(f"\n== {name[:-5]}: {1e6 * total / frames:.1f} us CPU/frame (profiled)")
            rows = sorted(table.items(),
                          key=lambda kv: kv[1][2], reverse=True)
            for (file, line, func), (_cc, nc, tt, ct, _callers) in rows[:top]:
                where_ = f"{os.path.basename(file)}:{line}({func})"
                lines.append(f"  {1e6 * tt / frames:8.2f} us  {nc / frames:6.2f} calls/frame  "
                             f"cum {1e6 * ct / frames:8.2f} us  {where_}")
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return "\n".join(lines)

