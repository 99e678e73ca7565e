"""Where a hop's time goes: cProfile inside every task of a pass-through flow.

The flow runs with the ``profile`` flow option (``FlowConfig.profile``): each task writes its
cProfile statistics, on a CPU clock, to ``<dir>/<node>.<worker>.prof``, and this module prints
the most expensive functions of each per frame. Profiling slows Python code down (about 2x for
call-heavy loops): read the split between functions, not the absolute figures.
"""

from __future__ import annotations

import os
import pstats
import tempfile
from typing import Any

from videoflow.benchmark.flows import measure
from videoflow.benchmark.matrix import pass_through


def profile_handoff(
    shape: tuple[int, ...] = (1080, 1920, 3), hops: int = 1, duration: float = 2.0,
    top: int = 12,
) -> str:
    """Profile every task of producer -> ``hops`` pass-throughs -> consumer; a text report
    of each task's most expensive functions in microseconds per frame."""
    with tempfile.TemporaryDirectory(prefix="videoflow-profile-") as where:
        m = measure(shape, [pass_through] * hops, duration=duration,
                    flow_options={"profile": where})
        frames = max(1, m.produced)
        lines = [f"{hops} hop(s), {shape}, {m.produced} frames; profiled run: {m.fps:.0f} fps"]
        for name in sorted(os.listdir(where)):
            stats = pstats.Stats(os.path.join(where, name))
            table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
            total = sum(v[2] for v in table.values())
            lines.append(f"\n== {name[:-5]}: {1e6 * total / frames:.1f} us CPU/frame (profiled)")
            rows = sorted(table.items(), key=lambda kv: kv[1][2], reverse=True)
            for (file, line, func), (_cc, nc, tt, ct, _callers) in rows[:top]:
                at = f"{os.path.basename(file)}:{line}({func})"
                lines.append(f"  {1e6 * tt / frames:8.2f} us  {nc / frames:6.2f} calls/frame  "
                             f"cum {1e6 * ct / frames:8.2f} us  {at}")
    return "\n".join(lines)
