"""videoflow: video pipelines over several OS processes, with frames in shared memory.

Public paths: ``videoflow.core`` (Flow, nodes, constants, FlowStats, NodeStats, TaskStats,
Report), ``videoflow.producers``, ``videoflow.processors``, ``videoflow.consumers``,
``videoflow.config`` (FlowConfig, available_cpus), ``videoflow.errors`` and
``videoflow.benchmark``. ``videoflow.engine`` and ``videoflow.transport`` are internal.
"""

from videoflow.errors import FlowError, VideoflowError

__version__ = "0.1.0"
__all__ = ["FlowError", "VideoflowError", "__version__", "native_status"]


def native_status() -> str:
    """Which implementation of the transport's hot path this process uses (the native
    extension or the pure-Python fallback), and why; ``videoflow info`` prints it too."""
    from videoflow.transport import native_status as status

    return status()
