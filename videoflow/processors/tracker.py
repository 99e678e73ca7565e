"""A SORT-style multi-object tracker: a Kalman filter per track, IoU matching, stable ids.

Numpy only. Each track's state is (cx, cy, area, aspect, vcx, vcy, varea) with a constant
velocity model, as in SORT (Bewley et al., 2016). Detections are matched to the predicted
track boxes greedily by descending IoU, which on the sparse scenes SORT targets picks the
same pairs as an optimal assignment almost always, without scipy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from videoflow.core.node import OneTaskProcessorNode
from videoflow.processors.vision.detectors import iou_matrix

# Constant-velocity model on (cx, cy, s, r): s and r are area and aspect ratio, r is constant.
_F = np.eye(7)
_F[0, 4] = _F[1, 5] = _F[2, 6] = 1.0
_H = np.eye(4, 7)
_R = np.diag([1.0, 1.0, 10.0, 10.0])
_Q = np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 0.0001])
_P0 = np.diag([10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4])


def box_to_z(box: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> measurement (cx, cy, area, aspect)."""
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([box[0] + w / 2, box[1] + h / 2, w * h, w / max(h, 1e-6)])


def x_to_box(x: np.ndarray) -> np.ndarray:
    """Kalman state -> (x1, y1, x2, y2)."""
    area, aspect = max(float(x[2]), 0.0), max(float(x[3]), 1e-6)
    w = np.sqrt(area * aspect)
    h = area / w if w > 0 else 0.0
    return np.array([x[0] - w / 2, x[1] - h / 2, x[0] + w / 2, x[1] + h / 2])


class KalmanBoxTrack:
    """One tracked object: its Kalman filter, id, and hit/miss counters."""

    def __init__(self, detection: np.ndarray, track_id: int) -> None:
        self.x = np.zeros(7)
        self.x[:4] = box_to_z(detection)
        self.P = _P0.copy()
        self.id = track_id
        self.detection = np.asarray(detection, dtype=np.float64).copy()
        self.hits = 1
        self.streak = 1
        self.age = 0
        self.misses = 0

    def predict(self) -> np.ndarray:
        if self.x[2] + self.x[6] <= 0:
            self.x[6] = 0.0
        self.x = _F @ self.x
        self.P = _F @ self.P @ _F.T + _Q
        self.age += 1
        if self.misses > 0:
            self.streak = 0
        self.misses += 1
        return x_to_box(self.x)

    def update(self, detection: np.ndarray) -> None:
        z = box_to_z(detection)
        y = z - _H @ self.x
        s = _H @ self.P @ _H.T + _R
        k = self.P @ _H.T @ np.linalg.inv(s)
        self.x = self.x + k @ y
        self.P = (np.eye(7) - k @ _H) @ self.P
        self.detection = np.asarray(detection, dtype=np.float64).copy()
        self.hits += 1
        self.streak += 1
        self.misses = 0

    @property
    def box(self) -> np.ndarray:
        return x_to_box(self.x)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col) taken in order of decreasing IoU, each row and col at most once."""
    if iou.size == 0:
        return []
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


class SortTracker:
    """The tracking state machine, usable without a flow.

    max_age:        frames a track survives without a matching detection.
    min_hits:       consecutive matches before a track is reported (except in the first frames).
    iou_threshold:  least IoU between a prediction and a detection to match them.
    ``update(detections)`` takes N x 6 (x1, y1, x2, y2, score, class) and returns M x 7 float32
    rows (x1, y1, x2, y2, score, class, track_id) of the tracks matched in this frame.
    """

    def __init__(self, max_age: int = 5, min_hits: int = 3, iou_threshold: float = 0.3) -> None:
        if max_age < 0 or min_hits < 0 or not 0.0 <= iou_threshold <= 1.0:
            raise ValueError("max_age and min_hits must be >= 0, iou_threshold in [0, 1]")
        self.max_age, self.min_hits, self.iou_threshold = max_age, min_hits, iou_threshold
        self.reset()

    def reset(self) -> None:
        self.tracks: list[KalmanBoxTrack] = []
        self.frame_count = 0
        self.next_id = 1

    def update(self, detections: Any) -> np.ndarray:
        dets = np.asarray(detections, dtype=np.float64).reshape(-1, 6)
        self.frame_count += 1
        predicted = np.array([t.predict() for t in self.tracks]).reshape(-1, 4)
        ok = np.all(np.isfinite(predicted), axis=1)
        self.tracks = [t for t, good in zip(self.tracks, ok, strict=True) if good]
        predicted = predicted[ok]
        pairs = greedy_match(iou_matrix(dets, predicted), self.iou_threshold)
        matched = set()
        for d, k in pairs:
            self.tracks[k].update(dets[d])
            matched.add(d)
        for d in range(len(dets)):
            if d not in matched:
                self.tracks.append(KalmanBoxTrack(dets[d], self.next_id))
                self.next_id += 1
        rows = []
        for t in self.tracks:
            if t.misses == 0 and (t.streak >= self.min_hits or self.frame_count <= self.min_hits):
                rows.append((*t.box, t.detection[4], t.detection[5], t.id))
        self.tracks = [t for t in self.tracks if t.misses <= self.max_age]
        if not rows:
            return np.zeros((0, 7), dtype=np.float32)
        return np.asarray(rows, dtype=np.float32)


class KalmanTracker(OneTaskProcessorNode):
    """Tracks detections across frames (SORT: Kalman filter + IoU matching); one task.

    Input: N x 6 detections (x1, y1, x2, y2, score, class). Output: M x 7 float32 rows
    (x1, y1, x2, y2, score, class, track_id); ids start at 1 and stay with their object.
    """

    def __init__(
        self, max_age: int = 5, min_hits: int = 3, iou_threshold: float = 0.3, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self._sort = SortTracker(max_age, min_hits, iou_threshold)

    def open(self) -> None:
        self._sort.reset()

    def process(self, detections: np.ndarray) -> np.ndarray:
        return self._sort.update(detections)
