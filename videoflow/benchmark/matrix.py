"""The standard benchmark matrix: handoff, scaling, realtime, file and join sections.

Each section returns rows for videoflow and for the baselines measured in the same run on the
same frames; ``run_matrix`` runs the sections asked for and fills the ratios. The file section
lives in ``filebench.py``; what a run measures, in ``options.py``.
"""

from __future__ import annotations

from typing import Any

from videoflow.benchmark import baselines as bl
from videoflow.benchmark.filebench import file_section
from videoflow.benchmark.flows import Measurement, StageFactory, measure, percentile
from videoflow.benchmark.joinbench import join_section
from videoflow.benchmark.nodes import Blur, PassThrough, Sleep
from videoflow.benchmark.options import (
    SECTIONS,
    SIZES,
    VIDEOFLOW,
    Options,
    Progress,
    best_of,
    core_counts,
    size_name,
)
from videoflow.benchmark.result import BenchResult, Row, add_ratios, machine_info
from videoflow.core import REALTIME, Node


def _flow_options(opts: Options) -> dict[str, Any] | None:
    options: dict[str, Any] = {"start_method": opts.start_method} if opts.start_method else {}
    if opts.engine != "process":
        options["engine"] = opts.engine
    return options or None


def _start_method(opts: Options) -> str:
    return machine_info(opts.start_method)["start_method"]


def pass_through(i: int) -> Node:
    return PassThrough(name=f"stage{i}")


def blur_stage(nb_tasks: int, cv2_threads: int | None) -> StageFactory:
    def make(i: int) -> Node:
        return Blur(cv2_threads=cv2_threads, nb_tasks=nb_tasks, name=f"stage{i}")

    return make


def _mb_s(fps: float, shape: tuple[int, ...]) -> float:
    n = 1
    for s in shape:
        n *= s
    return fps * n / 1e6


def _flow_row(section: str, params: dict[str, Any], m: Measurement, shape: tuple[int, ...],
              hop_cpu: bool = False) -> Row:
    lat = [v / 1e6 for v in m.latency_ns]
    hop_cpu_us = None
    if hop_cpu and m.stage_frames:
        hop_cpu_us = sum(m.stage_cpu_us(i) for i in range(len(m.stage_frames))) / len(
            m.stage_frames
        )
    return Row(
        section=section, impl=VIDEOFLOW, params=params, frames=m.frames, seconds=m.seconds,
        fps=m.fps, mb_s=_mb_s(m.fps, shape), hop_cpu_us=hop_cpu_us,
        latency_p50_ms=percentile(lat, 0.5), latency_p99_ms=percentile(lat, 0.99),
        drop_rate=m.drop_rate,
        extra={"producer_cpu_us": 1e6 * m.producer_cpu_s / max(1, m.produced), **_ages(m)},
    )


def _ages(m: Measurement) -> dict[str, float]:
    """The consumer's frame age as the engine counts it (``NodeStats.frame_age``, warm-up
    frames included), beside the probe's own latency."""
    age = m.stats.nodes[-1].frame_age
    if age is None:
        return {}
    return {"frame_age_p50_ms": 1e3 * age.p50_s, "frame_age_p99_ms": 1e3 * age.p99_s}


def _timing_row(section: str, impl: str, params: dict[str, Any], t: bl.Timing,
                shape: tuple[int, ...]) -> Row:
    hop_cpu_us = None
    if t.relay_cpu_s and t.relay_frames:
        hop_cpu_us = 1e6 * sum(t.relay_cpu_s) / len(t.relay_cpu_s) / t.relay_frames
    return Row(section=section, impl=impl, params=params, frames=t.frames, seconds=t.seconds,
               fps=t.fps, mb_s=_mb_s(t.fps, shape), hop_cpu_us=hop_cpu_us)


# -- sections --------------------------------------------------------------------------------
def handoff(opts: Options, progress: Progress) -> list[Row]:
    """Pass-through chains: frames written in place by the producer, ``hops`` identity tasks."""
    rows: list[Row] = []
    method = _start_method(opts)
    for hw in opts.sizes:
        shape = (*hw, 3)
        size = size_name(hw)
        for hops in opts.hops:
            params = {"size": size, "hops": hops}
            progress(f"handoff {size} hops={hops}: videoflow")
            m = best_of(opts.repeat, measure,
                shape, [pass_through] * hops, duration=opts.duration,
                flow_options=_flow_options(opts))
            rows.append(_flow_row("handoff", params, m, shape, hop_cpu=True))
            for kind in ("queue", "pipe"):
                if kind in opts.baselines:
                    progress(f"handoff {size} hops={hops}: {bl.IMPLS[kind]}")
                    t = best_of(opts.repeat, bl.chain,
                        kind, shape, hops, "identity", opts.duration, start_method=method)
                    rows.append(_timing_row("handoff", bl.IMPLS[kind], params, t, shape))
        if "pool" in opts.baselines and 1 in opts.hops:
            progress(f"handoff {size}: {bl.POOL}")
            t = best_of(opts.repeat, bl.pool_imap,
                shape, 1, "identity", opts.duration, start_method=method)
            rows.append(_timing_row("handoff", bl.POOL, {"size": size, "hops": 1}, t, shape))
        if "single" in opts.baselines:
            t = bl.single(shape, "identity", min(opts.duration, 0.5))
            rows.append(_timing_row("handoff", bl.SINGLE, {"size": size}, t, shape))
        _marginal_hop_cost([r for r in rows if r.impl == VIDEOFLOW and r.params["size"] == size])
    return rows


def _marginal_hop_cost(rows: list[Row]) -> None:
    """``hop_wall_us``: what one more hop adds to the time per frame (from the fewest and the
    most hops measured), on however many cores there are."""
    if len(rows) < 2:
        return
    lo = min(rows, key=lambda r: r.params["hops"])
    hi = max(rows, key=lambda r: r.params["hops"])
    if hi.params["hops"] == lo.params["hops"]:
        return
    per_hop = (hi.us_per_frame - lo.us_per_frame) / (hi.params["hops"] - lo.params["hops"])
    for r in rows:
        r.extra["hop_wall_us"] = per_hop


def scaling(opts: Options, progress: Progress) -> list[Row]:
    """cv2.GaussianBlur 5x5 with nb_tasks = K, against Pool(K).imap and a single-process loop.

    With ``repeat`` > 1 the variants take turns, round after round, so that a burst of load
    from other processes does not fall on one of them only; each keeps its fastest run
    (``fps_worst`` in ``extra`` is its slowest).
    """
    method = _start_method(opts)
    hw = opts.scaling_size
    shape, size = (*hw, 3), size_name(hw)
    runs: dict[tuple[str, int], list[Any]] = {}
    ks = core_counts(opts)
    for round_ in range(max(1, opts.repeat)):
        tag = f" (round {round_ + 1})" if opts.repeat > 1 else ""
        if "single" in opts.baselines:
            progress(f"scaling {size}: {bl.SINGLE}{tag}")
            runs.setdefault((bl.SINGLE, 1), []).append(
                bl.single(shape, "blur", opts.duration, cv2_threads=opts.cv2_threads))
        for k in ks:
            progress(f"scaling {size} nb_tasks={k}: videoflow{tag}")
            runs.setdefault((VIDEOFLOW, k), []).append(measure(
                shape, [blur_stage(k, opts.cv2_threads)], duration=opts.duration,
                flow_options=_flow_options(opts)))
            if "pool" in opts.baselines:
                progress(f"scaling {size} nb_tasks={k}: {bl.POOL}{tag}")
                runs.setdefault((bl.POOL, k), []).append(bl.pool_imap(
                    shape, k, "blur", opts.duration, start_method=method,
                    cv2_threads=opts.cv2_threads))
    rows: list[Row] = []
    for (impl, k), results in runs.items():
        best = max(results, key=lambda r: r.fps)
        params: dict[str, Any] = {"size": size, "work": "blur5x5"}
        if impl == VIDEOFLOW:
            row = _flow_row("scaling", {**params, "nb_tasks": k}, best, shape)
            row.extra["blur_cpu_us"] = best.stage_cpu_us(0)
            # Cores the K workers had between them: under K, other processes took the rest.
            row.extra["blur_cores"] = best.stage_cpu_us(0) * best.fps / 1e6
        elif impl == bl.POOL:
            row = _timing_row("scaling", impl, {**params, "nb_tasks": k}, best, shape)
        else:
            row = _timing_row("scaling", impl, params, best, shape)
        if len(results) > 1:
            row.extra["fps_worst"] = min(r.fps for r in results)
        rows.append(row)
    ours = [r for r in rows if r.impl == VIDEOFLOW]
    if ours:
        base = ours[0].fps
        for r in ours:
            r.extra["speedup_vs_k1"] = r.fps / base if base else 0.0
    return rows


def realtime(opts: Options, progress: Progress) -> list[Row]:
    """Latency at a fixed producer rate (hops 1 and 3); then behind a slow node, the frames'
    age and the drops, with either drop policy (``realtime_drop``: oldest, the default, and
    newest, the engine's policy before freshest-frame realtime)."""
    rows: list[Row] = []
    hw = opts.realtime_size
    shape, size = (*hw, 3), size_name(hw)
    p50: dict[int, float] = {}
    for hops in opts.hops:
        params = {"size": size, "rate": opts.rate, "hops": hops}
        progress(f"realtime {size} {opts.rate:g} fps hops={hops}")
        m = measure(shape, [pass_through] * hops, duration=max(opts.duration, 20 / opts.rate),
                    fps=opts.rate, flow_type=REALTIME, flow_options=_flow_options(opts))
        row = _flow_row("realtime", params, m, shape, hop_cpu=True)
        rows.append(row)
        if row.latency_p50_ms is not None:
            p50[hops] = row.latency_p50_ms
    if len(p50) >= 2:
        lo, hi = min(p50), max(p50)
        per_hop_us = 1e3 * (p50[hi] - p50[lo]) / (hi - lo)
        for r in rows:
            r.extra["hop_latency_us"] = per_hop_us
    slow = 1.5 / opts.rate

    def sleeper(i: int) -> Node:
        return Sleep(slow, name=f"stage{i}")

    notes = {
        "oldest": "a node slower than the producer: the oldest queued frame is dropped, the "
                  "node takes the freshest",
        "newest": "the same, dropping the new frame instead: the queued ones grow stale",
    }  # fmt: skip
    for drop, note in notes.items():
        params = {"size": size, "rate": opts.rate, "slow_node_ms": round(slow * 1e3, 3),
                  "drop": drop}  # fmt: skip
        progress(f"realtime {size} {opts.rate:g} fps, a node taking {slow * 1e3:.1f} ms, "
                 f"drop {drop}")  # fmt: skip
        options = {**(_flow_options(opts) or {}), "realtime_drop": drop}
        m = measure(shape, [sleeper], duration=max(opts.duration, 30 / opts.rate), fps=opts.rate,
                    flow_type=REALTIME, flow_options=options)
        row = _flow_row("realtime", params, m, shape)
        row.note = note
        rows.append(row)
    return rows


def run_matrix(
    options: Options | None = None, progress: Progress | None = None, **overrides: Any
) -> BenchResult:
    """Run the sections of ``options`` (or of ``Options(**overrides)``) and return the result."""
    opts = options or Options(**overrides)
    unknown = [s for s in opts.sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    say = progress or (lambda _msg: None)
    rows: list[Row] = []
    skipped: list[str] = []
    for section in opts.sections:
        if section == "handoff":
            rows += handoff(opts, say)
        elif section == "scaling":
            rows += scaling(opts, say)
        elif section == "realtime":
            rows += realtime(opts, say)
        elif section == "file":
            new, why = file_section(opts, say)
            rows += new
            if why:
                skipped.append(f"file: {why}")
        elif section == "join":
            hw = SIZES["1080p"] if SIZES["1080p"] in opts.sizes or not opts.sizes else opts.sizes[0]
            rows += join_section(hw, opts.duration, opts.repeat, _flow_options(opts), say,
                                 size_name(hw))
    if opts.engine != "process":
        for row in rows:
            if row.impl == VIDEOFLOW:
                row.params["engine"] = opts.engine
    add_ratios(rows, VIDEOFLOW)
    return BenchResult(rows=rows, machine=machine_info(opts.start_method),
                       options=opts.to_dict(), skipped=skipped)

