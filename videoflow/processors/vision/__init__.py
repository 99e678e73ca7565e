"""Computer-vision processors, in the original videoflow's modules: ``annotators``,
``transformers``, ``detectors``, ``trackers`` and ``segmentation``.

Each module holds the original's base classes (ImageAnnotator, ObjectDetector, ...), which
keep its box layout ``ymin, xmin, ymax, xmax``, and this project's nodes on OpenCV, which use
OpenCV's ``x1, y1, x2, y2``. This package re-exports this project's nodes and helpers.
"""

from videoflow.processors.vision.detectors import (
    CLASS_NAMES,
    FACE,
    OBJECT,
    PERSON,
    HaarFaceDetector,
    HogPeopleDetector,
    MotionDetector,
    empty_boxes,
    haar_available,
    hog_available,
    iou_matrix,
    non_max_suppression,
)
from videoflow.processors.vision.transformers import Crop, CvtColor, GaussianBlur, Mask, Resize

__all__ = [
    "CLASS_NAMES",
    "FACE",
    "OBJECT",
    "PERSON",
    "Crop",
    "CvtColor",
    "GaussianBlur",
    "HaarFaceDetector",
    "HogPeopleDetector",
    "Mask",
    "MotionDetector",
    "Resize",
    "empty_boxes",
    "haar_available",
    "hog_available",
    "iou_matrix",
    "non_max_suppression",
]
