"""Processors: the nodes that transform values between producer and consumers."""

from videoflow.core.node import FunctionProcessorNode
from videoflow.processors.aggregators import (
    CountAggregator,
    MaxAggregator,
    MinAggregator,
    MultiplicationAggregator,
    SumAggregator,
)
from videoflow.processors.basic import IdentityProcessor, JoinerProcessor

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
