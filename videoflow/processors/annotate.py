"""This project's annotators: draw boxes, track ids, labels and text onto a copy of the frame.

BoxAnnotator reads the x1, y1, x2, y2 rows of this project's detectors and KalmanTracker; the
original videoflow's BoundingBoxAnnotator (ymin, xmin, ymax, xmax rows and label map files)
is in videoflow.processors.vision.annotators.

The input frame is a read-only view of shared memory; each annotator copies it once into its
output slot (``self.allocate``) and draws there with OpenCV.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from videoflow.core.node import ProcessorNode
from videoflow.processors.vision.detectors import CLASS_NAMES


def _colour(key: int) -> tuple[int, int, int]:
    """A stable, well-separated BGR colour for a class or track id."""
    hue = (int(key) * 47) % 180
    hsv = np.array([[[hue, 220, 255]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_label(frame: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    """``text`` on a filled background whose bottom-left corner is (x, y)."""
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    y = max(y, h + base)
    cv2.rectangle(frame, (x, y - h - base), (x + w, y), colour, -1)
    cv2.putText(frame, text, (x, y - base), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)


class _Annotator(ProcessorNode):
    def _copy(self, frame: np.ndarray) -> np.ndarray:
        out = self.allocate(frame.shape, frame.dtype)
        np.copyto(out, frame)
        return out


class BoxAnnotator(_Annotator):
    """Draws boxes on a copy of the frame; called with two parents: (frame, boxes).

    boxes:  N x 6 detections (x1, y1, x2, y2, score, class) are labelled ``class score``;
            N x 7 tracks (..., track_id) are labelled ``class #id`` and coloured by id.
    labels: class id -> name (default: person, face, object).
    """

    def __init__(
        self, labels: Mapping[int, str] | None = None, thickness: int = 2, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.labels = dict(CLASS_NAMES if labels is None else labels)
        self.thickness = int(thickness)

    def process(self, frame: np.ndarray, boxes: Any) -> np.ndarray:
        out = self._copy(frame)
        rows = np.asarray(boxes, dtype=np.float32)
        rows = rows.reshape(-1, rows.shape[-1] if rows.size else 6)
        for row in rows:
            x1, y1, x2, y2 = (round(float(v)) for v in row[:4])
            cls = int(row[5]) if len(row) > 5 else 0
            name = self.labels.get(cls, str(cls))
            if len(row) > 6:
                colour, text = _colour(int(row[6])), f"{name} #{int(row[6])}"
            else:
                score = float(row[4]) if len(row) > 4 else 0.0
                colour, text = _colour(cls), f"{name} {score:.2f}"
            cv2.rectangle(out, (x1, y1), (x2, y2), colour, self.thickness)
            draw_label(out, text, x1, y1, colour)
        return out


class TextAnnotator(_Annotator):
    """Writes text in the top-left corner of a copy of the frame.

    text:  a format string over the message metadata, e.g. ``"frame {index}"``; missing keys
           are shown as ``?``.
    """

    def __init__(self, text: str = "frame {index}", **kw: Any) -> None:
        super().__init__(**kw)
        self.text = text

    def process(self, frame: np.ndarray) -> np.ndarray:
        out = self._copy(frame)
        draw_label(out, self.text.format_map(_Lenient(self.meta)), 4, 4, (255, 255, 255))
        return out


class _Lenient(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"
