"""The ``file`` section: decode -> GaussianBlur -> encode on a generated clip.

videoflow's own video nodes (VideofileReader, GaussianBlur with nb_tasks = K, VideofileWriter)
against one process doing the same with OpenCV in a loop. Both are timed end to end, start-up
included (that is what a user waits for); OpenCV keeps its default threads in both.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from videoflow.benchmark.baselines import SINGLE
from videoflow.benchmark.matrix import Options, Progress, best_of, core_counts
from videoflow.benchmark.result import Row

FOURCC = "mp4v"
KSIZE = 5
CLIP_FPS = 25.0


def opencv_loop(src: str, dst: str, width: int, height: int, ksize: int = KSIZE) -> int:
    """The baseline: one process reads, blurs and writes every frame."""
    import cv2

    cap = cv2.VideoCapture(src)
    writer = cv2.VideoWriter(dst, cv2.VideoWriter.fourcc(*FOURCC), CLIP_FPS, (width, height))
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
        writer.release()
    return count


def videoflow_file(src: str, dst: str, nb_tasks: int, ksize: int = KSIZE) -> int:
    from videoflow.consumers import VideofileWriter
    from videoflow.core import BATCH, Flow
    from videoflow.processors import GaussianBlur
    from videoflow.producers import VideofileReader

    reader = VideofileReader(src)
    blur = GaussianBlur(ksize, nb_tasks=nb_tasks)(reader)
    writer = VideofileWriter(dst, fps=CLIP_FPS, fourcc=FOURCC)(blur)
    flow = Flow([reader], [writer], flow_type=BATCH)
    flow.run()
    flow.join()
    return flow.stats().delivered


def _row(impl: str, params: dict[str, Any], frames: int, seconds: float,
         nbytes: int) -> Row:
    fps = frames / seconds if seconds > 0 else 0.0
    return Row(section="file", impl=impl, params=dict(params), frames=frames, seconds=seconds,
               fps=fps, mb_s=fps * nbytes / 1e6,
               note="end to end, process start-up included")


def file_section(opts: Options, say: Progress) -> tuple[list[Row], str | None]:
    """Rows of the file section, or no rows and the reason it was skipped."""
    try:
        from videoflow.consumers import VideofileWriter  # noqa: F401
        from videoflow.processors import GaussianBlur  # noqa: F401
        from videoflow.producers import (
            VideofileReader,  # noqa: F401
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
        base = {"size": f"{width}x{height}", "frames": nb_frames, "work": f"blur{KSIZE}x{KSIZE}"}
        if "single" in opts.baselines:
            say("file: single-process OpenCV loop")
            rows.append(best_of(opts.repeat, _timed, SINGLE, base, nbytes,
                                opencv_loop, src, os.path.join(tmp, "loop.mp4"), width, height))
        for k in core_counts(opts):
            say(f"file: videoflow, blur nb_tasks={k}")
            rows.append(best_of(opts.repeat, _timed, "videoflow", {**base, "nb_tasks": k}, nbytes,
                                videoflow_file, src, os.path.join(tmp, f"flow{k}.mp4"), k))
    return rows, None


def _timed(
    impl: str, params: dict[str, Any], nbytes: int, fn: Callable[..., int], *args: Any
) -> Row:
    t0 = time.perf_counter()
    frames = fn(*args)
    return _row(impl, params, int(frames), time.perf_counter() - t0, nbytes)
