"""The ``file`` section: decode -> GaussianBlur -> encode on a generated clip.

videoflow's own video nodes (VideoReader, GaussianBlur with nb_tasks = K, VideoWriter)
against one process doing the same in a loop (OpenCV decodes and blurs; the frames are written
with the same encoder as the flow's writer), once per writer codec in ``CODECS``: OpenCV's mp4v
and PyAV's H.264 (libx264, frame-threaded). Both are timed end to end, start-up
included (that is what a user waits for). The loop keeps OpenCV's default threads; each task of
the flow gets its share of the CPUs (FlowConfig.opencv_threads). Both runs also count their CPU
time, which bounds what any pipeline could do on the machine (``ceiling``), and the flow reports
how well it used the machine (``efficiency``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from videoflow.benchmark.baselines import SINGLE
from videoflow.benchmark.nodes import set_cv2_threads
from videoflow.benchmark.options import Options, Progress, best_of, core_counts
from videoflow.benchmark.result import Row

FOURCC = "mp4v"
CODECS = ("mp4v", "h264")
KSIZE = 5
CLIP_FPS = 25.0


@dataclasses.dataclass(frozen=True)
class FileRun:
    """One timed decode -> blur -> encode run.

    seconds: end to end, process start-up included (what a user waits for).
    cpu_s:   CPU seconds the work used: the loop's process (all its threads), or the flow's
             tasks from start to end (``FlowStats.cpu_s``).
    run_s:   seconds the work ran: the flow's ``elapsed_s`` (start-up excluded); the loop's
             ``seconds``.
    busiest: the busy fraction of the flow's busiest node (``NodeStats.busy``); the loop: 1.0.
    """

    frames: int
    seconds: float
    cpu_s: float
    run_s: float
    busiest: float = 1.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def cores(self) -> float:
        """CPUs the work kept busy on average while it ran."""
        return self.cpu_s / self.run_s if self.run_s > 0 else 0.0


def efficiency(flow: FileRun, cpus: int) -> float:
    """How well the flow used the machine while it ran, 0..1: the share of the CPUs it kept
    busy, or the busy fraction of its bottleneck node when that node (a single encoder, say)
    is what limits it, whichever is higher. Low only when the engine itself stalls the work."""
    return max(flow.cores / max(1, cpus), flow.busiest)


def ceiling(loop: FileRun, flow: FileRun, cpus: int) -> float:
    """The speedup over ``loop`` that a flow costing ``flow.cpu_s`` could reach on ``cpus`` CPUs
    with perfect scheduling and no start-up: it cannot end before that CPU time, spread over
    every CPU, has been spent. A loop whose OpenCV already keeps several cores busy leaves less
    to win."""
    fastest = flow.cpu_s / max(1, cpus)
    return loop.seconds / fastest if fastest > 0 else math.inf


def opencv_loop(
    src: str, dst: str, width: int, height: int, ksize: int = KSIZE, codec: str = FOURCC
) -> int:
    """The baseline: one process reads, blurs and writes every frame (``codec`` as VideoWriter
    takes it, written by the same encoder)."""
    import cv2

    from videoflow.consumers import encoders

    choice = encoders.choose_codec(codec, dst)
    settings = encoders.check_settings(choice.codec, None, None, None, None)
    cap = cv2.VideoCapture(src)
    writer = encoders.open_encoder(dst, choice, settings, CLIP_FPS, width, height)
    count = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            writer.write(cv2.GaussianBlur(frame, (ksize, ksize), 0))
            count += 1
    finally:
        cap.release()
        writer.close()
    return count


def run_loop(
    src: str, dst: str, width: int, height: int, ksize: int = KSIZE, threads: int | None = None,
    codec: str = FOURCC,
) -> FileRun:
    """``opencv_loop`` timed; ``threads`` pins OpenCV's pool for the run (None: its default)."""
    import cv2

    before = cv2.getNumThreads()
    set_cv2_threads(threads)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        frames = opencv_loop(src, dst, width, height, ksize, codec)
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        return FileRun(frames, seconds, cpu_s, seconds, cpu_s)
    finally:
        cv2.setNumThreads(before)


def run_videoflow(
    src: str, dst: str, nb_tasks: int, ksize: int = KSIZE, codec: str = FOURCC
) -> FileRun:
    """videoflow's own nodes: VideoReader -> GaussianBlur(nb_tasks) -> VideoWriter(codec)."""
    from videoflow.consumers import VideoWriter
    from videoflow.core import BATCH, Flow
    from videoflow.processors import GaussianBlur
    from videoflow.producers import VideoReader

    t0 = time.perf_counter()
    reader = VideoReader(src)
    blur = GaussianBlur(ksize, nb_tasks=nb_tasks)(reader)
    writer = VideoWriter(dst, fps=CLIP_FPS, codec=codec)(blur)
    flow = Flow([reader], [writer], flow_type=BATCH, flow_options={"progress": False})
    flow.run()
    flow.join()
    seconds = time.perf_counter() - t0
    stats = flow.stats()
    busiest = max(n.busy for n in stats.nodes)
    return FileRun(stats.delivered, seconds, stats.cpu_s, stats.elapsed_s, busiest)


def _row(impl: str, params: dict[str, Any], run: FileRun, nbytes: int) -> Row:
    return Row(section="file", impl=impl, params=dict(params), frames=run.frames,
               seconds=run.seconds, fps=run.fps, mb_s=run.fps * nbytes / 1e6,
               extra={"cpu_ms_per_frame": 1e3 * run.cpu_s / max(1, run.frames),
                      "cores_busy": run.cores},
               note="end to end, process start-up included")


def file_section(opts: Options, say: Progress) -> tuple[list[Row], str | None]:
    """Rows of the file section, or no rows and the reason it was skipped."""
    try:
        from videoflow.consumers import VideoWriter  # noqa: F401
        from videoflow.processors import GaussianBlur  # noqa: F401
        from videoflow.producers import (
            VideoReader,  # noqa: F401
            write_test_clip,
        )
    except ImportError as exc:
        return [], f"videoflow's video nodes are not available ({exc})"
    height, width = opts.realtime_size
    nb_frames = max(20, int(opts.duration * 150))  # start-up (~0.3 s) should not dominate
    nbytes = height * width * 3
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="videoflow-bench-file-") as tmp:
        src = os.path.join(tmp, "clip.mp4")
        say(f"file: writing a {width}x{height} clip of {nb_frames} frames")
        try:
            write_test_clip(src, width, height, nb_frames, CLIP_FPS, FOURCC)
        except RuntimeError as exc:
            return [], f"cannot write a test clip with OpenCV ({exc})"
        for codec in CODECS:
            base = {"size": f"{width}x{height}", "frames": nb_frames,
                    "work": f"blur{KSIZE}x{KSIZE}", "codec": codec}
            if "single" in opts.baselines:
                say(f"file: single-process loop, {codec}")
                rows.append(best_of(opts.repeat, _timed, SINGLE, base, nbytes, run_loop, src,
                                    os.path.join(tmp, "loop.mp4"), width, height, KSIZE, None,
                                    codec))
            for k in core_counts(opts):
                say(f"file: videoflow, blur nb_tasks={k}, {codec}")
                rows.append(best_of(opts.repeat, _timed, "videoflow", {**base, "nb_tasks": k},
                                    nbytes, run_videoflow, src, os.path.join(tmp, f"flow{k}.mp4"),
                                    k, KSIZE, codec))
    return rows, None


def _timed(
    impl: str, params: dict[str, Any], nbytes: int, fn: Callable[..., FileRun], *args: Any
) -> Row:
    return _row(impl, params, fn(*args), nbytes)
