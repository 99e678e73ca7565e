"""Ray engine hand-off (issue 16): 1920x1080 frames through 3 pass-through hops on the Ray
engine, against the same chain of Ray actors written by hand (bench/ray_chain.py), on the same
frames in the same run.

Targets: at least 40 fps, and the engine at most 10 % slower than the hand-written chain and
at most 10 % more CPU time per frame (every actor, and the driver process with Ray's threads).
The two run back to back ``--bench-repeat`` times; the ratios are the medians of the turns'
ratios, which a burst of load from other processes skews least (single runs of either swing
by 10-15 % on a shared 2-core machine). The table keeps each one's fastest run. Needs the ray
extra.
"""

from __future__ import annotations

import statistics

import pytest

ray = pytest.importorskip("ray")

from ray_chain import RAY_CHAIN, process_cpu, ray_chain  # noqa: E402

from videoflow.benchmark.flows import measure  # noqa: E402
from videoflow.benchmark.matrix import SIZES, pass_through  # noqa: E402
from videoflow.benchmark.result import Row  # noqa: E402

TARGET_FPS = 40.0
MAX_OVERHEAD = 0.10
HOPS = 3


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _row(impl: str, fps: float, frames: int, seconds: float, cpu_ms: float) -> Row:
    h, w = SIZES["1080p"]
    return Row(section="handoff", impl=impl,
               params={"size": f"{w}x{h}", "hops": HOPS, "engine": "ray"},
               frames=frames, seconds=seconds, fps=fps, mb_s=fps * h * w * 3 / 1e6,
               extra={"cpu_ms_per_frame": cpu_ms})


@pytest.mark.timeout(900)
def test_ray_engine_1080p_3_hops_against_a_hand_written_chain(benchmark, duration, repeat, keep):
    shape = (*SIZES["1080p"], 3)

    def turns() -> list[Row]:
        ours: list[Row] = []
        hand: list[Row] = []
        for _ in range(max(1, repeat)):
            driver0 = process_cpu()
            m = measure(shape, [pass_through] * HOPS, duration=duration,
                        flow_options={"engine": "ray"})
            cpu_s = m.stats.cpu_s + process_cpu() - driver0
            ours.append(_row("videoflow", m.fps, m.frames, m.seconds,
                             1e3 * cpu_s / max(1, m.produced)))
            t = ray_chain(shape, HOPS, duration)
            hand.append(_row(RAY_CHAIN, t.fps, t.frames, t.seconds, t.cpu_ms_per_frame))
        # Each turn runs both back to back: their ratio is the least skewed by load that
        # comes and goes; the median of the turns is the figure.
        fps_ratio = statistics.median(o.fps / h.fps for o, h in zip(ours, hand, strict=True))
        cpu_ratio = statistics.median(o.extra["cpu_ms_per_frame"] / h.extra["cpu_ms_per_frame"]
                                      for o, h in zip(ours, hand, strict=True))
        best, base = max(ours, key=lambda r: r.fps), max(hand, key=lambda r: r.fps)
        best.ratios = {RAY_CHAIN: fps_ratio}
        best.extra["cpu_ratio"] = cpu_ratio
        for rows, chosen in ((ours, best), (hand, base)):
            chosen.extra["fps_worst"] = min(r.fps for r in rows)
            chosen.extra["cpu_ms_per_frame"] = statistics.median(
                r.extra["cpu_ms_per_frame"] for r in rows)
        return [best, base]

    rows = benchmark.pedantic(turns, rounds=1, iterations=1)
    by = keep(rows)
    ours, base = by["videoflow"], by[RAY_CHAIN]
    overhead, cpu_ratio = 1 - ours.ratios[RAY_CHAIN], ours.extra["cpu_ratio"]
    print(f"\n1080p, {HOPS} hops on Ray: engine {ours.fps:.1f} fps "
          f"(worst {ours.extra['fps_worst']:.1f}, {ours.extra['cpu_ms_per_frame']:.1f} ms CPU "
          f"a frame), hand-written chain {base.fps:.1f} fps "
          f"(worst {base.extra['fps_worst']:.1f}, {base.extra['cpu_ms_per_frame']:.1f} ms CPU "
          f"a frame); turn by turn (median): {overhead:+.1%} slower, {cpu_ratio:.2f}x the CPU")
    assert ours.fps / TARGET_FPS >= 1, f"{ours.fps:.1f} fps is under {TARGET_FPS:g}"
    assert overhead <= MAX_OVERHEAD, f"the engine is {overhead:.1%} slower than Ray by hand"
    assert cpu_ratio <= 1 + MAX_OVERHEAD, f"the engine takes {cpu_ratio:.2f}x the CPU per frame"
