"""Synthetic video: moving shapes drawn in place, the clip generator of the demo, tests and bench.

Every frame is a pure function of its index and size (``render_frame``), so a test can recompute
the frame it expects, and the ground-truth boxes of the shapes (``shape_boxes``) can feed a
tracker test. ``write_test_clip`` writes such a clip with ``cv2.VideoWriter``.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from videoflow.core.node import ProducerNode
from videoflow.producers.basic import Pacer

# Shape kinds, their colours (BGR) and paths: start (fractions of the frame) and speed (px/frame).
_SHAPES = (
    ("circle", (40, 40, 220), (0.15, 0.25), (7.0, 3.0)),
    ("rectangle", (40, 200, 40), (0.60, 0.55), (-5.0, 4.0)),
    ("triangle", (220, 120, 30), (0.35, 0.70), (4.0, -6.0)),
)
# Person sprite: height in pixels relative to the frame height, and horizontal speed.
_PERSON_HEIGHT = 0.6
_PERSON_SPEED = 3.0


def _bounce(start: float, speed: float, index: int, span: float) -> float:
    """Position on [0, span] of a point moving at ``speed`` that bounces on both ends."""
    if span <= 0:
        return 0.0
    pos = (start + speed * index) % (2 * span)
    return pos if pos <= span else 2 * span - pos


def shape_size(width: int, height: int) -> int:
    """Side of the square that bounds each shape (a sixth of the short side, at least 8 px)."""
    return max(8, min(width, height) // 6)


def shape_boxes(index: int, width: int, height: int) -> np.ndarray:
    """Ground truth of frame ``index``: an N x 6 float32 array (x1, y1, x2, y2, 1, shape number)."""
    size = shape_size(width, height)
    boxes = np.zeros((len(_SHAPES), 6), dtype=np.float32)
    for k, (_, _, (fx, fy), (vx, vy)) in enumerate(_SHAPES):
        x = round(_bounce(fx * (width - size), vx, index, width - size))
        y = round(_bounce(fy * (height - size), vy, index, height - size))
        boxes[k] = (x, y, x + size, y + size, 1.0, k)
    return boxes


def person_box(index: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Bounding box (x1, y1, x2, y2) of the person sprite in frame ``index``."""
    h = int(height * _PERSON_HEIGHT)
    w = h // 2
    x = round(_bounce(0.1 * (width - w), _PERSON_SPEED, index, width - w))
    y = (height - h) // 2
    return x, y, x + w, y + h


def make_background(width: int, height: int) -> np.ndarray:
    """The static backdrop: a soft diagonal gradient, so codecs and blurs have texture to chew."""
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    bg = np.empty((height, width, 3), dtype=np.uint8)
    bg[:, :, 0] = (150 + 60 * xs + 0 * ys).astype(np.uint8)
    bg[:, :, 1] = (170 + 50 * ys + 0 * xs).astype(np.uint8)
    bg[:, :, 2] = (160 + 40 * (xs + ys) / 2).astype(np.uint8)
    return bg


def draw_person(frame: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Draw a dark, upright, person-like silhouette (head, torso, arms, legs) inside ``box``."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx = x1 + w // 2
    dark, cloth, legs = (40, 40, 40), (60, 50, 120), (50, 40, 30)
    t = max(1, w // 10)
    head_r = max(2, h // 16)
    head_cy = y1 + int(h * 0.1)
    cv2.circle(frame, (cx, head_cy), head_r, dark, -1, cv2.LINE_AA)
    neck = head_cy + head_r
    hip = y1 + int(h * 0.55)
    shoulder = max(2, int(w * 0.24))
    torso = np.array(
        [
            (cx - shoulder, neck + t),
            (cx + shoulder, neck + t),
            (cx + int(shoulder * 0.8), hip),
            (cx - int(shoulder * 0.8), hip),
        ],
        dtype=np.int32,
    )
    cv2.fillConvexPoly(frame, torso, cloth, cv2.LINE_AA)
    arm_end = y1 + int(h * 0.52)
    cv2.line(frame, (cx - shoulder, neck + t), (cx - shoulder - t, arm_end), cloth, t + 2)
    cv2.line(frame, (cx + shoulder, neck + t), (cx + shoulder + t, arm_end), cloth, t + 2)
    foot = y1 + int(h * 0.96)
    stride = int(w * 0.16)
    cv2.line(frame, (cx - t, hip), (cx - stride, foot), legs, t + 3)
    cv2.line(frame, (cx + t, hip), (cx + stride, foot), legs, t + 3)


def render_frame(
    index: int,
    width: int,
    height: int,
    out: np.ndarray | None = None,
    background: np.ndarray | None = None,
    with_person: bool = False,
) -> np.ndarray:
    """Frame ``index`` of the synthetic clip, drawn into ``out`` (allocated when None)."""
    if out is None:
        out = np.empty((height, width, 3), dtype=np.uint8)
    if background is None:
        background = make_background(width, height)
    np.copyto(out, background)
    if with_person:
        draw_person(out, person_box(index, width, height))
    size = shape_size(width, height)
    for (kind, colour, _, _), box in zip(_SHAPES, shape_boxes(index, width, height), strict=True):
        x, y = int(box[0]), int(box[1])
        if kind == "circle":
            cv2.circle(out, (x + size // 2, y + size // 2), size // 2, colour, -1)
        elif kind == "rectangle":
            cv2.rectangle(out, (x, y), (x + size - 1, y + size - 1), colour, -1)
        else:
            pts = np.array([(x + size // 2, y), (x + size - 1, y + size - 1), (x, y + size - 1)])
            cv2.fillConvexPoly(out, pts.astype(np.int32), colour)
    return out


class MovingShapesProducer(ProducerNode):
    """Produces ``count`` synthetic BGR frames of moving shapes, drawn in place in shared memory.

    count:        number of frames (None: until the flow is stopped).
    fps:          pace the frames at this rate (None: as fast as possible); also sets the
                  ``timestamp_ms`` metadata (index / fps, or 25 fps when None).
    with_person:  also draw a walking person-like sprite.
    """

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        count: int | None = 100,
        fps: float | None = None,
        with_person: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if width < 16 or height < 16:
            raise ValueError(f"frames must be at least 16x16, got {width}x{height}")
        self._pacer = Pacer(fps)
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0 or None, got {count}")
        self.width, self.height = int(width), int(height)
        self.count = count
        self.fps = fps
        self.with_person = with_person
        self._index = 0
        self._background: np.ndarray | None = None

    def expected_count(self) -> int | None:
        return self.count

    def open(self) -> None:
        self._index = 0
        self._pacer = Pacer(self.fps)
        self._background = make_background(self.width, self.height)

    def next(self) -> np.ndarray:
        i = self._index
        if self.count is not None and i >= self.count:
            raise StopIteration
        self._pacer.wait(i)
        frame = self.allocate((self.height, self.width, 3), np.uint8)
        render_frame(i, self.width, self.height, frame, self._background, self.with_person)
        self.meta["timestamp_ms"] = 1000.0 * i / (self.fps or 25.0)
        self._index = i + 1
        return frame


def write_test_clip(
    path: str,
    width: int = 320,
    height: int = 240,
    nb_frames: int = 30,
    fps: float = 25.0,
    fourcc: str = "mp4v",
    with_person: bool = False,
) -> str:
    """Write the synthetic clip to ``path`` with cv2.VideoWriter; returns ``path``.

    ``fourcc`` is a four-letter code such as ``"mp4v"`` (.mp4) or ``"MJPG"`` (.avi). Raises
    RuntimeError naming the path when OpenCV cannot open a writer for it.
    """
    if len(fourcc) != 4:
        raise ValueError(f"fourcc must have 4 characters, got {fourcc!r}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"cannot write {path!r}: folder {parent!r} does not exist")
    writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*fourcc), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path!r} with fourcc {fourcc!r}")
    try:
        background = make_background(width, height)
        frame = np.empty((height, width, 3), dtype=np.uint8)
        for i in range(nb_frames):
            writer.write(render_frame(i, width, height, frame, background, with_person))
    finally:
        writer.release()
    return path
