"""The public API: nodes, Flow, and what a run reports (no processes start on import).

``Flow.stats()`` returns a :class:`FlowStats` (one :class:`NodeStats` per node, one
:class:`TaskStats` per task, a :class:`JoinStats` with :class:`JoinInputStats` per JOIN, a
:class:`FrameAge` per consumer of a REALTIME flow) and ``Flow.report()`` a :class:`Report`;
they are importable from here, the one public path to them (their modules under
``videoflow.engine`` are internal).
"""

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
from videoflow.engine.report import Report, ReportRow
from videoflow.engine.stats import (
    FlowStats,
    FrameAge,
    JoinInputStats,
    JoinStats,
    NodeStats,
    TaskStats,
)

__all__ = [
    "BATCH",
    "CPU",
    "GPU",
    "REALTIME",
    "ConsumerNode",
    "Flow",
    "FlowStats",
    "FrameAge",
    "FunctionProcessorNode",
    "Join",
    "JoinInputStats",
    "JoinStats",
    "Node",
    "NodeStats",
    "OneTaskProcessorNode",
    "ProcessorNode",
    "ProducerNode",
    "Report",
    "ReportRow",
    "TaskStats",
]
