"""Several cameras, one batched model: the frames of four synthetic cameras are joined
(``Join.latest``), run through one model call per set, and each result goes back to its own
camera's branch (``model[k]``), which draws it and writes that camera's video.

    python samples/multi_camera.py OUTDIR [--cameras 4] [--frames 100] [--size 640x360]
                                          [--fps 25] [--timeout-ms 40] [--batch] [--measure]

Writes OUTDIR/cam0.avi ... (MJPG) and prints, per camera, how many of its frames joined a
set, then the JOIN's counters. REALTIME by default: when the model falls behind, sets are
dropped; ``--batch`` keeps every set (only frames replaced by a newer one before their set
went out are lost, as ``Join.latest`` does). ``--measure`` also times the model alone, on
batches of 1 and of 4 frames: its cost per frame falls with the batch, which is why the
cameras share one call.

The cameras render the project's moving-shapes clip (videoflow.producers.shapes), each with a
border of its own colour and its frame number drawn as a barcode, so that what each writer got
can be checked from its video alone (tests/test_samples.py does).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

# One BLAS thread per process, set before numpy loads OpenBLAS (tasks inherit it): a dozen
# processes on a few cores each running a pool of BLAS threads would fight for the same cores,
# and idle BLAS threads spin, which also blurs the CPU times --measure reports.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2
import numpy as np

from videoflow.consumers import VideoWriter
from videoflow.core import BATCH, REALTIME, Flow, Join, ProcessorNode
from videoflow.processors import BoxAnnotator
from videoflow.producers import MovingShapesProducer

COLOURS = ((255, 0, 0), (0, 200, 0), (0, 0, 255), (0, 220, 220), (220, 0, 220), (220, 220, 0))
BORDER = 6  # pixels of the camera's colour around its frames
BIT = 16  # the barcode: BITS squares of BIT x BIT pixels, white for 1, black for 0
BITS = 12
BAR_Y = 3 * BORDER
THUMB = 128  # the model's input: a THUMB x THUMB grey thumbnail of each frame


def draw_barcode(frame: np.ndarray, value: int) -> None:
    """Draw ``value`` (BITS bits) as a row of black and white squares in ``frame``."""
    for bit in range(BITS):
        x = BAR_Y + bit * BIT
        frame[BAR_Y : BAR_Y + BIT, x : x + BIT] = 255 if value >> bit & 1 else 0


def read_barcode(frame: np.ndarray) -> int:
    """The value ``draw_barcode`` drew (each square read by its mean: a box drawn across it
    or a lossy codec does not flip a bit)."""
    value = 0
    for bit in range(BITS):
        x = BAR_Y + bit * BIT
        if frame[BAR_Y + 3 : BAR_Y + BIT - 3, x + 3 : x + BIT - 3].mean() > 127:
            value |= 1 << bit
    return value


def camera_of(frame: np.ndarray, cameras: int) -> int:
    """Which camera's colour the border of ``frame`` has (nearest of COLOURS)."""
    border = np.median(frame[1 : BORDER - 1, BAR_Y:].reshape(-1, 3), axis=0)
    distance = [float(np.abs(border - np.array(c)).sum()) for c in COLOURS[:cameras]]
    return int(np.argmin(distance))


class Camera(MovingShapesProducer):
    """A synthetic camera: the moving-shapes clip with a border of its colour and its frame
    number as a barcode (``fps`` paces it, as a real camera would)."""

    def __init__(self, number: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.number = number

    def next(self) -> np.ndarray:
        index = self._index
        frame = super().next()
        colour = COLOURS[self.number % len(COLOURS)]
        frame[:BORDER], frame[-BORDER:] = colour, colour
        frame[:, :BORDER], frame[:, -BORDER:] = colour, colour
        draw_barcode(frame, index)
        return frame


class BatchedModel(ProcessorNode):
    """A stand-in for a detector network, run once per set on every camera's frame at once.

    Each frame is reduced to a 128x128 grey thumbnail; the batch of thumbnails goes through
    two fully connected layers with fixed weights (16384 -> 1024 -> 64, 67 MB of float32). The
    64 outputs score the cells of an 8x8 grid; the best cell is the frame's one "detection"
    (x1, y1, x2, y2, score, class). Like a real network it reads all its weights once per
    call whatever the batch, and they do not fit in a cache: one call on 4 frames costs much
    less than 4 calls on 1. Returns a
    tuple with one result per camera, None for a camera the set came without.
    """

    def open(self) -> None:
        rng = np.random.default_rng(2024)
        self.w1 = (rng.standard_normal((THUMB * THUMB, 1024), dtype=np.float32) / THUMB)
        self.w2 = (rng.standard_normal((1024, 64), dtype=np.float32) / 32).astype(np.float32)

    def infer(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """The detections of ``frames`` (one model call for all of them)."""
        thumbs = np.stack([
            cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (THUMB, THUMB),
                       interpolation=cv2.INTER_AREA)
            for f in frames
        ]).reshape(len(frames), THUMB * THUMB).astype(np.float32) / 255.0
        scores = np.maximum(thumbs @ self.w1, 0.0) @ self.w2  # (batch, 64)
        out = []
        for frame, row in zip(frames, scores, strict=True):
            cell = int(row.argmax())
            gy, gx = divmod(cell, 8)
            h, w = frame.shape[:2]
            score = 1.0 / (1.0 + np.exp(-float(row[cell])))
            box = (gx * w / 8, gy * h / 8, (gx + 1) * w / 8 - 1, (gy + 1) * h / 8 - 1, score, 2)
            out.append(np.array([box], dtype=np.float32))
        return out

    def process(self, *frames: np.ndarray | None) -> tuple[np.ndarray | None, ...]:
        present = [k for k, f in enumerate(frames) if f is not None]
        results: list[np.ndarray | None] = [None] * len(frames)
        for k, found in zip(present, self.infer([frames[k] for k in present]), strict=True):
            results[k] = found
        return tuple(results)


class CameraBoxes(BoxAnnotator):
    """Draws a camera's detections on its frame; a set without this camera gives None."""

    def process(self, frame: np.ndarray | None, boxes: Any) -> np.ndarray | None:
        if frame is None:
            return None
        return super().process(frame, boxes)


class CameraWriter(VideoWriter):
    """Writes a camera's annotated frames; skips the sets this camera was not in."""

    def consume(self, frame: Any) -> None:
        if frame is not None:
            super().consume(frame)


def measure_batching(
    width: int, height: int, batches: tuple[int, ...] = (1, 4)
) -> dict[int, float]:
    """CPU milliseconds per frame of one BatchedModel call on ``batch`` frames, per batch size
    (the best of several rounds: other processes' load only ever adds time)."""
    model = BatchedModel()
    model.open()
    frames = [np.full((height, width, 3), 40 * k, np.uint8) for k in range(max(batches))]
    cost = {batch: float("inf") for batch in batches}
    for _ in range(7):  # the batch sizes take turns, so that a burst of load hits them alike
        for batch in batches:
            calls = max(2, 16 // batch)
            t0 = time.process_time()
            for _ in range(calls):
                model.infer(frames[:batch])
            cost[batch] = min(cost[batch], 1e3 * (time.process_time() - t0) / (calls * batch))
    return cost


def build(
    outdir: str, cameras: int, frames: int, width: int, height: int, fps: float,
    timeout_ms: float, flow_type: str = REALTIME,
) -> Flow:
    """cameras -> Join.latest -> BatchedModel -> det[i] -> boxes -> writer, per camera."""
    cams = [
        Camera(k, width=width, height=height, count=frames, fps=fps, name=f"cam{k}")
        for k in range(cameras)
    ]
    model = BatchedModel(join=Join.latest(timeout_ms=timeout_ms), name="model")(*cams)
    writers = []
    for k, cam in enumerate(cams):
        boxes = CameraBoxes(name=f"boxes{k}")(cam, model[k])
        path = os.path.join(outdir, f"cam{k}.avi")
        writers.append(CameraWriter(path, fps=fps, fourcc="MJPG", name=f"writer{k}")(boxes))
    return Flow(cams, writers, flow_type=flow_type)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--frames", type=int, default=100, help="frames per camera")
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of every camera")
    parser.add_argument("--fps", type=float, default=25.0, help="each camera's frame rate")
    parser.add_argument("--timeout-ms", type=float, default=40.0,
                        help="how long a set waits for the cameras it lacks")
    parser.add_argument("--batch", action="store_true",
                        help="BATCH flow: no set is dropped when the model falls behind")
    parser.add_argument("--measure", action="store_true",
                        help="also time the model alone on batches of 1 and 4 frames")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if not 1 <= args.cameras <= len(COLOURS):
        parser.error(f"--cameras must be from 1 to {len(COLOURS)}")
    if width < BAR_Y + BITS * BIT + BORDER or height < 2 * BAR_Y + BIT:
        parser.error("--size is too small for the barcode: use at least 240x60")
    os.makedirs(args.outdir, exist_ok=True)

    flow = build(args.outdir, args.cameras, args.frames, width, height, args.fps,
                 args.timeout_ms, BATCH if args.batch else REALTIME)
    flow.run()
    flow.join()
    stats = flow.stats()
    join = stats.join()
    for k, inp in enumerate(join.inputs):
        print(f"cam{k}: {inp.used} of {inp.produced} frames joined a set ({inp.stale} "
              f"replaced by a newer one, {inp.dropped} dropped before the join); "
              f"writer{k} got {stats.node(f'writer{k}').messages_in} sets")
    made = join.sets + join.dropped
    per_set = sum(i.used for i in join.inputs) / made if made else 0.0
    print(f"model: {join.sets} calls; the JOIN made {made} sets of {per_set:.2f} frames on "
          f"average ({join.partial} lacked a camera, {join.dropped} dropped: the model was busy)")
    print(flow.report().join_table())
    if args.measure:
        cost = measure_batching(width, height)
        print(f"model cost per frame: batch 1 {cost[1]:.2f} ms, batch 4 {cost[4]:.2f} ms "
              f"(x{cost[4] / cost[1]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
