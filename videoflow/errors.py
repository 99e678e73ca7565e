"""The exception hierarchy of videoflow, in one place.

    VideoflowError
    ├── FlowError             a task of a running flow failed: its node raised, or its process died
    ├── UnpicklableNodeError  (also a ValueError) run() cannot send a node to its task processes
    ├── UnsupportedPlatformError  run() on another system than Linux
    ├── PoolExhaustedError    a shared-memory pool could not be created or grown
    └── StaleSlotError        (debug mode) a node read a slot that had already been reused
"""

from __future__ import annotations

import re


class VideoflowError(Exception):
    """Base class of every error videoflow raises on its own behalf."""


class FlowError(VideoflowError):
    """A task of a flow failed; raised by ``Flow.join()``.

    ``node`` names the node, ``task`` is the worker index within a multi-task node (0 otherwise),
    ``remote_traceback`` is the traceback text from the task process (empty when the process
    was killed), ``exitcode`` is the process exit code when it died (negative: killed by a signal).
    """

    def __init__(
        self,
        message: str,
        *,
        node: str,
        task: int = 0,
        remote_traceback: str = "",
        exitcode: int | None = None,
    ) -> None:
        text = message
        if remote_traceback:
            text = f"{message}\n\nTraceback in the task process:\n{remote_traceback.rstrip()}"
        super().__init__(text)
        self.node = node
        self.task = task
        self.remote_traceback = remote_traceback
        self.exitcode = exitcode

    def __reduce__(self):  # keep attributes across pickling and copy.copy
        return (
            _rebuild_flow_error,
            (self.args[0], self.node, self.task, self.exitcode, self.remote_traceback,
             type(self)),
        )


def _rebuild_flow_error(
    text: str, node: str, task: int, exitcode: int | None, remote_traceback: str = "",
    cls: type[FlowError] | None = None,
) -> FlowError:
    err = (cls or FlowError).__new__(cls or FlowError)
    VideoflowError.__init__(err, text)
    err.node, err.task, err.exitcode = node, task, exitcode
    err.remote_traceback = remote_traceback
    return err


class UnpicklableNodeError(VideoflowError, ValueError):
    """A node cannot be pickled, so ``Flow.run()`` cannot send it to its task processes; the
    message names the attribute (or the class) that does not pickle and what helps."""


class UnsupportedPlatformError(VideoflowError):
    """A flow was started on a system other than Linux (no /dev/shm, futexes or POSIX message
    queues of the kind videoflow uses); the message says what to do instead."""


_READ_ONLY = re.compile(r"\bread-only\b|marked as readonly")  # numpy's words; OpenCV's


def read_only_write(message: str) -> str | None:
    """When a node's error ``message`` says it wrote into a read-only array (numpy's
    "assignment destination is read-only", OpenCV's "Bad argument ... marked as readonly"),
    what the user needs to know instead; None otherwise. The one place that says what inputs
    allow."""
    if not _READ_ONLY.search(message):
        return None
    return (
        "an input frame is read-only when a later node reads the same frame, so that nothing "
        "this node writes changes what that node sees; draw on frame = "
        "self.make_writable(frame) (one copy, or none when this node is the frame's last "
        "reader) or fill an array from self.allocate(shape, dtype), and return it"
    )


class PoolExhaustedError(VideoflowError):
    """Shared memory for frames could not be reserved (for example /dev/shm is too small)."""


class StaleSlotError(VideoflowError):
    """A node read a shared-memory slot after it was released and reused (debug mode only)."""
