"""Processors: the nodes that transform values between producer and consumers."""

from videoflow.core.node import FunctionProcessorNode
from videoflow.processors.aggregators import (
    CountAggregator,
    MaxAggregator,
    MinAggregator,
    MultiplicationAggregator,
    SumAggregator,
)
from videoflow.processors.annotate import BoundingBoxAnnotator, TextAnnotator
from videoflow.processors.basic import IdentityProcessor, JoinerProcessor
from videoflow.processors.tracker import KalmanTracker, SortTracker
from videoflow.processors.vision import (
    Crop,
    CvtColor,
    GaussianBlur,
    HaarFaceDetector,
    HogPeopleDetector,
    Mask,
    MotionDetector,
    Resize,
)

__all__ = [
    "CountAggregator",
    "FunctionProcessorNode",
    "IdentityProcessor",
    "JoinerProcessor",
    "MaxAggregator",
    "MinAggregator",
    "MultiplicationAggregator",
    "SumAggregator",
]
__all__ += [
    "BoundingBoxAnnotator",
    "Crop",
    "CvtColor",
    "GaussianBlur",
    "HaarFaceDetector",
    "HogPeopleDetector",
    "KalmanTracker",
    "Mask",
    "MotionDetector",
    "Resize",
    "SortTracker",
    "TextAnnotator",
]
