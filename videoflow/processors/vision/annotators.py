"""The original videoflow's annotators: they draw detections, tracks or masks on a copy of
the image. The label maps they name (``coco``, ``oidv4``, ``pascal``, ``kitti``, ``faces``)
ship in this package (``labels/``), so nothing is downloaded.

Box layouts are the original's: ``ymin, xmin, ymax, xmax, class_index, score`` for
detections, ``ymin, xmin, ymax, xmax, track_id`` for tracks. This project's own annotator,
BoxAnnotator (videoflow.processors.annotate), reads the x1, y1, x2, y2 layout of its
detectors and KalmanTracker instead.
"""

from __future__ import annotations

import os
import re
from typing import Any

import cv2
import numpy as np

from videoflow.core.node import ProcessorNode

LABELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "labels")
LABEL_DATASETS = ("coco", "oidv4", "pascal", "kitti", "faces")

_ITEM = re.compile(r"item\s*\{(.*?)\}", re.S)
_ID = re.compile(r"\bid\s*:\s*(-?\d+)")
_NAME = re.compile(r"\b(display_name|name)\s*:\s*([\"'])(.*?)\2")


def label_map_path(dataset: str) -> str:
    """The shipped label map of ``dataset`` (one of LABEL_DATASETS)."""
    if dataset not in LABEL_DATASETS:
        raise ValueError(
            f"dataset {dataset!r} is not one of the shipped label maps: {', '.join(LABEL_DATASETS)}"
        )
    return os.path.join(LABELS_DIR, f"labels_{dataset}.pbtxt")


def parse_label_map(path_to_labels: str) -> dict[int, str]:
    """``{id: name}`` from a label map in the TensorFlow Object Detection API's text format
    (``item { id: 1 display_name: "person" }``; ``name`` when an item has no display_name)."""
    with open(path_to_labels, encoding="utf-8") as f:
        text = f.read()
    labels: dict[int, str] = {}
    for block in _ITEM.findall(text):
        found_id = _ID.search(block)
        names = {key: value for key, _, value in _NAME.findall(block)}
        name = names.get("display_name", names.get("name"))
        if found_id is None or name is None:
            raise ValueError(f"{path_to_labels}: an item without id or name: {block.strip()!r}")
        labels[int(found_id.group(1))] = name
    if not labels:
        raise ValueError(f"{path_to_labels} holds no label map items")
    return labels


def _labels(path: str | None, dataset: str | None, supported: tuple[str, ...]) -> dict[int, str]:
    if path is not None:
        return parse_label_map(path)
    if dataset is None:
        raise ValueError("If class_labels_path is None, then class_labels_dataset cannot be None")
    if dataset not in supported:
        raise ValueError(f"dataset is not one of supported datasets: {', '.join(supported)}")
    return parse_label_map(label_map_path(dataset))


def _rows(boxes: Any) -> np.ndarray:
    """``boxes`` as a 2-D array of rows (an empty list or array: no rows)."""
    rows = np.asarray(boxes, dtype=np.float64)
    return rows.reshape(-1, rows.shape[-1]) if rows.size else rows.reshape(0, 1)


def _label_row(ymin: int, ymax: int) -> int:
    """Where a box's label goes: above the box when there is room, else inside it."""
    return ymin - 15 if ymin - 15 > 15 else min(ymin + 15, ymax)


class ImageAnnotator(ProcessorNode):
    """Interface of the original's annotators: ``process(im, annotations)`` copies ``im`` into
    its output frame and returns ``_annotate(copy, annotations)``, which subclasses implement
    and which may draw on the copy in place."""

    def __init__(self, nb_tasks: int = 1, **kwargs: Any) -> None:
        super().__init__(nb_tasks=nb_tasks, **kwargs)

    def _annotate(self, im: np.ndarray, annotations: Any) -> np.ndarray:
        raise NotImplementedError(
            f"{type(self).__name__} must implement _annotate(im, annotations)"
        )

    def process(self, im: np.ndarray, annotations: Any) -> np.ndarray:
        out = self.allocate(im.shape, im.dtype)
        np.copyto(out, im)
        return self._annotate(out, annotations)


class BoundingBoxAnnotator(ImageAnnotator):
    """Draws detections with their class name and score: ``BoundingBoxAnnotator()(im, dets)``,
    ``dets`` an (nb_boxes, 6) array of ``ymin, xmin, ymax, xmax, class_index, score``.

    class_labels_path:    a label map file (.pbtxt); or
    class_labels_dataset: one of the shipped label maps (coco, oidv4, pascal, kitti, faces).
    box_color, box_thickness, text_color: as given to OpenCV (the image's channel order).
    A class missing from the label map is labelled with its number.
    """

    supported_datasets = list(LABEL_DATASETS)

    def __init__(
        self,
        class_labels_path: str | None = None,
        class_labels_dataset: str | None = "coco",
        box_color: tuple[int, int, int] = (255, 225, 0),
        box_thickness: int = 2,
        text_color: tuple[int, int, int] = (255, 255, 0),
        nb_tasks: int = 1,
        **kwargs: Any,
    ) -> None:
        self._box_color = box_color
        self._text_color = text_color
        self._box_thickness = box_thickness
        self._index_label_d = _labels(
            class_labels_path, class_labels_dataset, tuple(self.supported_datasets)
        )
        super().__init__(nb_tasks=nb_tasks, **kwargs)

    def _annotate(self, im: np.ndarray, boxes: Any) -> np.ndarray:
        for row in _rows(boxes):
            ymin, xmin, ymax, xmax = (int(v) for v in row[:4])
            klass = int(row[4])
            label = f"{self._index_label_d.get(klass, str(klass))}: {float(row[5]) * 100:.2f}%"
            cv2.rectangle(im, (xmin, ymin), (xmax, ymax), self._box_color, self._box_thickness)
            cv2.putText(
                im, label, (xmin, _label_row(ymin, ymax)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                self._text_color, lineType=cv2.LINE_AA,
            )
        return im


class TrackerAnnotator(ImageAnnotator):
    """Draws tracks with their id: ``TrackerAnnotator()(im, tracks)``, ``tracks`` an
    (nb_tracks, 5) array of ``ymin, xmin, ymax, xmax, track_id``."""

    def __init__(
        self,
        box_color: tuple[int, int, int] = (255, 225, 0),
        box_thickness: int = 2,
        text_color: tuple[int, int, int] = (255, 255, 255),
        nb_tasks: int = 1,
        **kwargs: Any,
    ) -> None:
        self._box_color = box_color
        self._text_color = text_color
        self._box_thickness = box_thickness
        super().__init__(nb_tasks=nb_tasks, **kwargs)

    def _annotate(self, im: np.ndarray, boxes: Any) -> np.ndarray:
        for row in _rows(boxes):
            ymin, xmin, ymax, xmax = (int(v) for v in row[:4])
            cv2.rectangle(im, (xmin, ymin), (xmax, ymax), self._box_color, self._box_thickness)
            cv2.putText(
                im, str(int(row[4])), (xmin, _label_row(ymin, ymax)), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, self._text_color, lineType=cv2.LINE_AA,
            )
        return im


class SegmenterAnnotator(ImageAnnotator):
    """Blends segmentation masks over the image, one colour per class:
    ``SegmenterAnnotator()(im, (masks, classes, scores))`` with ``masks`` (nb_masks, h, w) of
    0 and 1 and ``classes`` (nb_masks,).

    class_labels_path / class_labels_dataset: as for BoundingBoxAnnotator (not faces).
    transparency: how much of the colour covers a masked pixel, between 0 and 1.
    """

    supported_datasets = ["coco", "oidv4", "pascal", "kitti"]
    colors = [
        (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
        (255, 127.5, 0), (255, 0, 127.5), (127.5, 255, 0), (0, 255, 127.5), (127.5, 0, 255),
        (0, 127.5, 255),
    ]

    def __init__(
        self,
        class_labels_path: str | None = None,
        class_labels_dataset: str | None = "coco",
        transparency: float = 0.5,
        nb_tasks: int = 1,
        **kwargs: Any,
    ) -> None:
        self._index_label_d = _labels(
            class_labels_path, class_labels_dataset, tuple(self.supported_datasets)
        )
        self._transparency = transparency
        super().__init__(nb_tasks=nb_tasks, **kwargs)

    def _annotate(self, im: np.ndarray, annotations: Any) -> np.ndarray:
        masks, classes = annotations[0], annotations[1]
        blended = im.astype(np.float64)
        for mask, klass in zip(masks, classes, strict=False):
            alpha = np.asarray(mask, dtype=np.float64)
            alpha = np.where(alpha == 1.0, self._transparency, alpha)[..., None]
            color = np.asarray(self.colors[int(klass) % len(self.colors)], dtype=np.float64)
            blended = alpha * color + (1.0 - alpha) * blended
        np.copyto(im, blended, casting="unsafe")
        return im
