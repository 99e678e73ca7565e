"""videoflow: video pipelines over several OS processes, with frames in shared memory.

Public paths: ``videoflow.core`` (Flow, nodes, constants), ``videoflow.producers``,
``videoflow.processors``, ``videoflow.consumers`` and ``videoflow.errors``.
"""

from videoflow.errors import FlowError, VideoflowError

__version__ = "0.1.0"
__all__ = ["FlowError", "VideoflowError", "__version__"]
