"""Processors: the nodes that transform values between producer and consumers."""

from videoflow.core.node import FunctionProcessorNode
from videoflow.processors.aggregators import (
    CountAggregator,
    MaxAggregator,
    MinAggregator,
    MultiplicationAggregator,
    SumAggregator,
)
from videoflow.processors.annotate import BoxAnnotator, TextAnnotator
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
    "BoxAnnotator",
    "CountAggregator",
    "Crop",
    "CvtColor",
    "FunctionProcessorNode",
    "GaussianBlur",
    "HaarFaceDetector",
    "HogPeopleDetector",
    "IdentityProcessor",
    "JoinerProcessor",
    "KalmanTracker",
    "Mask",
    "MaxAggregator",
    "MinAggregator",
    "MotionDetector",
    "MultiplicationAggregator",
    "Resize",
    "SortTracker",
    "SumAggregator",
    "TextAnnotator",
]
