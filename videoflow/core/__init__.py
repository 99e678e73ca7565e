"""The graph API: nodes and Flow (no processes are started by this layer on import)."""

from videoflow.core.constants import BATCH, CPU, GPU, REALTIME
from videoflow.core.flow import Flow
from videoflow.core.join import Join
from videoflow.core.node import (
    ConsumerNode,
    FunctionProcessorNode,
    Node,
    OneTaskProcessorNode,
    ProcessorNode,
    ProducerNode,
)

__all__ = [
    "BATCH",
    "CPU",
    "GPU",
    "REALTIME",
    "ConsumerNode",
    "Flow",
    "FunctionProcessorNode",
    "Join",
    "Node",
    "OneTaskProcessorNode",
    "ProcessorNode",
    "ProducerNode",
]
