"""The original videoflow's interface of bounding-box trackers (a one-task, stateful node).

This project's own tracker is KalmanTracker (videoflow.processors.tracker), which reads and
writes the x1, y1, x2, y2 layout of this project's detectors.
"""

from __future__ import annotations

import numpy as np

from videoflow.core.node import OneTaskProcessorNode


class BoundingBoxTracker(OneTaskProcessorNode):
    """Subclass it and implement ``_track(dets)``; ``process(dets)`` returns its result.

    ``_track`` takes the (nb_boxes, 6) detections of one frame, rows ``ymin, xmin, ymax,
    xmax, class_index, score``, and returns (nb_tracks, 5) rows ``ymin, xmin, ymax, xmax,
    track_id``, the input of TrackerAnnotator. It keeps its state between frames, so it
    always runs in one task.
    """

    def _track(self, dets: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement _track(dets)")

    def process(self, dets: np.ndarray) -> np.ndarray:
        return self._track(dets)
