"""Object detectors: the original videoflow's ObjectDetector interface, and this project's
detectors on OpenCV that need no model download.

Two box layouts meet here. ``ObjectDetector`` (the original's interface) returns rows of
``ymin, xmin, ymax, xmax, class_index, score``; this project's detectors (HogPeopleDetector,
HaarFaceDetector, MotionDetector) return N x 6 float32 rows of ``x1, y1, x2, y2, score,
class``, the layout of OpenCV's rectangles and of KalmanTracker and BoxAnnotator.
The HOG people detector and the Haar cascades ship with OpenCV 4.x wheels; OpenCV 5 moved
them out of the main module, and the detectors then raise a clear error when created.
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from videoflow.core.node import OneTaskProcessorNode, ProcessorNode

# The HOG and cascade APIs are absent from OpenCV 5 (and from its type stubs): reach them untyped.
_cv2: Any = cv2

PERSON, FACE, OBJECT = 0, 1, 2
CLASS_NAMES = {PERSON: "person", FACE: "face", OBJECT: "object"}


def empty_boxes() -> np.ndarray:
    """An empty detection result: a 0 x 6 float32 array."""
    return np.zeros((0, 6), dtype=np.float32)


class ObjectDetector(ProcessorNode):
    """The original videoflow's interface of object detectors: subclass it and implement
    ``_detect(im)``; ``process(im)`` returns its result.

    ``_detect`` takes an (h, w, 3) image and returns an (nb_boxes, 6) array of rows
    ``ymin, xmin, ymax, xmax, class_index, score`` in pixels of that image, the input of
    BoundingBoxAnnotator and BoundingBoxTracker.
    """

    def _detect(self, im: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement _detect(im)")

    def process(self, im: np.ndarray) -> np.ndarray:
        return self._detect(im)


# -- detection helpers ------------------------------------------------------------------------
def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N x 4+) with every box of ``b`` (M x 4+)."""
    a = np.asarray(a, dtype=np.float64)[:, None, :4]
    b = np.asarray(b, dtype=np.float64)[None, :, :4]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def non_max_suppression(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Rows of ``boxes`` (N x 6) kept by greedy NMS on score, highest score first."""
    if len(boxes) == 0:
        return boxes
    order = np.argsort(-boxes[:, 4], kind="stable")
    boxes = boxes[order]
    ious = iou_matrix(boxes, boxes)
    keep = np.ones(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if keep[i]:
            keep[i + 1 :] &= ious[i, i + 1 :] <= iou_threshold
    return boxes[keep]


def _rects_to_boxes(rects: Any, scores: Any, class_id: int) -> np.ndarray:
    rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    if len(rects) == 0:
        return empty_boxes()
    out = np.empty((len(rects), 6), dtype=np.float32)
    out[:, :2] = rects[:, :2]
    out[:, 2:4] = rects[:, :2] + rects[:, 2:4]
    out[:, 4] = np.asarray(scores, dtype=np.float32).reshape(-1)
    out[:, 5] = class_id
    return out


def _missing(feature: str) -> RuntimeError:
    return RuntimeError(
        f"{feature} is not in this OpenCV build ({cv2.__version__}): OpenCV 5 moved the HOG "
        "and cascade detectors out of the main module. Install opencv-python-headless<5 "
        "(4.x) for HogPeopleDetector and HaarFaceDetector, or use MotionDetector."
    )


def hog_available() -> bool:
    """True when this OpenCV has the HOG people detector."""
    return hasattr(_cv2, "HOGDescriptor")


def haar_available(cascade: str = "haarcascade_frontalface_default.xml") -> bool:
    """True when this OpenCV has CascadeClassifier and ships ``cascade``."""
    folder = getattr(getattr(_cv2, "data", None), "haarcascades", "")
    return hasattr(_cv2, "CascadeClassifier") and os.path.isfile(os.path.join(folder, cascade))


class HogPeopleDetector(ProcessorNode):
    """OpenCV's HOG + linear SVM pedestrian detector (cv2.HOGDescriptor_getDefaultPeopleDetector).

    Finds upright people at least 64 x 128 pixels tall (use Resize to upscale smaller frames).
    min_score:  drop detections whose SVM score is below this.
    Output: N x 6 float32 (x1, y1, x2, y2, score, class_id), after non-max suppression.
    """

    transient = ("_hog",)

    def __init__(
        self,
        win_stride: int = 8,
        padding: int = 8,
        scale: float = 1.05,
        min_score: float = 0.5,
        nms_threshold: float = 0.3,
        class_id: int = PERSON,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if not hog_available():
            raise _missing("cv2.HOGDescriptor")
        self.win_stride, self.padding, self.scale = int(win_stride), int(padding), float(scale)
        self.min_score, self.nms_threshold = float(min_score), float(nms_threshold)
        self.class_id = class_id
        self._hog: Any = None

    def open(self) -> None:
        self._hog = _cv2.HOGDescriptor()
        self._hog.setSVMDetector(_cv2.HOGDescriptor_getDefaultPeopleDetector())

    def process(self, frame: np.ndarray) -> np.ndarray:
        if self._hog is None:
            self.open()
        rects, weights = self._hog.detectMultiScale(
            frame,
            winStride=(self.win_stride, self.win_stride),
            padding=(self.padding, self.padding),
            scale=self.scale,
        )
        boxes = _rects_to_boxes(rects, weights, self.class_id)
        boxes = boxes[boxes[:, 4] >= self.min_score]
        return non_max_suppression(boxes, self.nms_threshold)


class HaarFaceDetector(ProcessorNode):
    """A Haar cascade from cv2.data.haarcascades (default: frontal faces).

    Score is the number of neighbouring detections that support each face (detectMultiScale2).
    Output: N x 6 float32 (x1, y1, x2, y2, score, class_id).
    """

    transient = ("_cascade",)

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
        class_id: int = FACE,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if not hasattr(_cv2, "CascadeClassifier"):
            raise _missing("cv2.CascadeClassifier")
        path = cascade
        if not os.path.isabs(cascade):
            path = os.path.join(_cv2.data.haarcascades, cascade)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Haar cascade {path!r} does not exist")
        self.path = path
        self.scale_factor, self.min_neighbors = float(scale_factor), int(min_neighbors)
        self.min_size, self.class_id = int(min_size), class_id
        self._cascade: Any = None

    def open(self) -> None:
        cascade = _cv2.CascadeClassifier(self.path)
        if cascade.empty():
            raise OSError(f"OpenCV cannot load Haar cascade {self.path!r}")
        self._cascade = cascade

    def process(self, frame: np.ndarray) -> np.ndarray:
        if self._cascade is None:
            self.open()
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        rects, neighbours = self._cascade.detectMultiScale2(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        return _rects_to_boxes(rects, neighbours, self.class_id)


class MotionDetector(OneTaskProcessorNode):
    """Boxes around what moves, by background subtraction (cv2.BackgroundSubtractorMOG2).

    Works with any OpenCV build and no model. Stateful (one task): it learns the background.
    min_area:  ignore blobs smaller than this many pixels.
    warmup:    frames that only feed the background model (nothing is reported for them).
    Output: N x 6 float32 (x1, y1, x2, y2, score, class_id); score is the blob's filled fraction
    of its box.
    """

    transient = ("_subtractor",)

    def __init__(
        self,
        min_area: int = 100,
        warmup: int = 2,
        history: int = 50,
        var_threshold: float = 25.0,
        class_id: int = OBJECT,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.min_area, self.history, self.var_threshold = int(min_area), history, var_threshold
        self.warmup = int(warmup)
        self._seen = 0
        self.class_id = class_id
        self._subtractor: Any = None
        self._kernel = np.ones((3, 3), dtype=np.uint8)

    def open(self) -> None:
        self._subtractor = cv2.createBackgroundSubtractorMOG2(
            history=self.history, varThreshold=self.var_threshold, detectShadows=False
        )
        self._seen = 0

    def process(self, frame: np.ndarray) -> np.ndarray:
        if self._subtractor is None:
            self.open()
        fg = self._subtractor.apply(frame)
        self._seen += 1
        if self._seen <= self.warmup:  # the first frames are all foreground to MOG2
            return empty_boxes()
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._kernel)
        count, _, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        rows = []
        for x, y, w, h, area in stats[1:count]:
            if area >= self.min_area:
                rows.append((x, y, x + w, y + h, area / float(w * h), self.class_id))
        if not rows:
            return empty_boxes()
        return np.asarray(rows, dtype=np.float32)
