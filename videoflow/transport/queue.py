"""Control queues: small, bounded queues of small messages between task processes.

Two implementations behind one interface, chosen once at import (see ``videoflow.transport``):

- ``MessageQueue``: a POSIX message queue (posix_ipc), the pure-Python reference. A send or
  receive is one system call (about 1.2 us measured here), blocking with a timeout, several
  processes may send to or receive from one queue. Kernel limits apply: at most
  ``/proc/sys/fs/mqueue/msg_max`` messages per queue (10 on a stock kernel) and the per-user
  byte budget RLIMIT_MSGQUEUE, which is why messages are kept small.
- ``RingQueue``: the native one, a bounded MPMC ring of fixed-size records in a POSIX
  shared-memory segment (native/ring.c): the same semantics (bounded, several senders and
  receivers, timeouts on both sides) with no system call at all unless a side has to sleep.
  It lives in /dev/shm under the flow's prefix, so the owner's cleanup and the dead-owner
  sweep find it like any pool.

``ControlQueue(...)`` builds whichever is in use; both are subclasses of it.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import resource
from typing import Any

import posix_ipc

from videoflow.transport import native
from videoflow.transport.shm import reserve

_MSG_MAX_PATH = "/proc/sys/fs/mqueue/msg_max"


def kernel_msg_max() -> int:
    """The largest POSIX message queue depth an unprivileged process may ask for."""
    try:
        with open(_MSG_MAX_PATH) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 10


class ControlQueue:
    """A control queue, created by the flow's owner (``create=True``) and opened by name."""

    __slots__ = ("name",)

    def __new__(cls, *args: Any, **kwargs: Any) -> ControlQueue:
        if cls is ControlQueue:
            cls = RingQueue if native is not None else MessageQueue
        return object.__new__(cls)

    def __init__(
        self, name: str, *, create: bool = False, depth: int = 4, message_size: int = 4096
    ) -> None:
        self.name = name

    def put(self, data: bytes, timeout: float) -> bool:
        """Send ``data``; False when the queue stayed full for ``timeout`` s (0: do not wait)."""
        raise NotImplementedError

    def get(self, timeout: float) -> bytes | None:
        """Receive one message; None when none came within ``timeout`` seconds."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def max_message_size(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the queue in this process (idempotent)."""

    def set_doorbell(self, bell: Any) -> None:
        """Ring ``bell`` (transport/doorbell.py) after every put from this process: the queue
        is an inbox of a receiver that watches several queues (a JOIN stage)."""
        raise NotImplementedError

    def unlink(self) -> None:
        """Remove the name; processes that opened the queue keep using it."""


class MessageQueue(ControlQueue):
    """A POSIX message queue (/dev/mqueue/<name>)."""

    __slots__ = ("_bell", "_mq")

    def __init__(
        self, name: str, *, create: bool = False, depth: int = 4, message_size: int = 4096
    ) -> None:
        super().__init__(name)
        self._bell: Any = None
        if create:
            depth = min(depth, kernel_msg_max())
            try:
                self._mq = posix_ipc.MessageQueue(
                    "/" + name, posix_ipc.O_CREX, max_messages=depth,
                    max_message_size=message_size,
                )
            except OSError as exc:
                raise _explain_emfile(exc, name, depth, message_size) from exc
        else:
            self._mq = posix_ipc.MessageQueue("/" + name)

    def put(self, data: bytes, timeout: float) -> bool:
        try:
            self._mq.send(data, timeout)
        except posix_ipc.BusyError:
            return False
        if self._bell is not None:
            self._bell.ring()
        return True

    def get(self, timeout: float) -> bytes | None:
        try:
            return self._mq.receive(timeout)[0]
        except posix_ipc.BusyError:
            return None

    def __len__(self) -> int:
        return int(self._mq.current_messages)

    @property
    def max_message_size(self) -> int:
        return int(self._mq.max_message_size)

    def set_doorbell(self, bell: Any) -> None:
        self._bell = bell

    def close(self) -> None:
        with contextlib.suppress(posix_ipc.ExistentialError):
            self._mq.close()

    def unlink(self) -> None:
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_message_queue("/" + self.name)


def _explain_emfile(exc: OSError, name: str, depth: int, message_size: int) -> OSError:
    """mq_open reports both the descriptor limit and RLIMIT_MSGQUEUE (the bytes of message
    queues one user may have) as EMFILE, which posix_ipc words as "maximum number of files
    open": tell which one it is, and the fix."""
    if "files open" not in str(exc):
        return exc
    soft_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    try:
        open_files = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_files = 0
    if soft_files != resource.RLIM_INFINITY and open_files >= soft_files - 1:
        return exc  # really out of descriptors
    limit = resource.getrlimit(resource.RLIMIT_MSGQUEUE)[0]
    return OSError(
        errno.EMFILE,
        f"cannot create the control queue {name!r}: RLIMIT_MSGQUEUE, the bytes of POSIX "
        f"message queues one user may have ({limit} bytes), is used up (each queue of this "
        f"flow takes about queue_depth x message_size = {depth} x {message_size} bytes). "
        "Raise it (ulimit -q, prlimit --msgqueue, resource.setrlimit), lower the flow "
        "options queue_depth or message_size, or use the native extension, which has no such "
        "limit (videoflow info says whether it is built)",
    )


class RingQueue(ControlQueue):
    """A native futex ring in a shared-memory segment (/dev/shm/<name>)."""

    __slots__ = ("_mm", "_ring", "get", "put")

    def __init__(
        self, name: str, *, create: bool = False, depth: int = 4, message_size: int = 4096
    ) -> None:
        super().__init__(name)
        if native is None:
            raise RuntimeError("the native extension is not in use")
        if create:
            size = native.ring_size(depth, message_size)
            shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, size=0)
            try:
                os.ftruncate(shm.fd, size)
                reserve(shm.fd, 0, size, name, "the control queue")
                self._mm = mmap.mmap(shm.fd, size)
            except BaseException:
                shm.unlink()
                raise
            finally:
                shm.close_fd()
            self._ring = native.Ring(self._mm, depth, message_size, create=True)
        else:
            shm = posix_ipc.SharedMemory("/" + name)
            try:
                self._mm = mmap.mmap(shm.fd, shm.size)
            finally:
                shm.close_fd()
            self._ring = native.Ring(self._mm)
        # Bound C methods: the task loop calls them without a Python frame in between.
        self.put = self._ring.put  # type: ignore[method-assign]
        self.get = self._ring.get  # type: ignore[method-assign]

    def __len__(self) -> int:
        return len(self._ring)

    @property
    def max_message_size(self) -> int:
        return int(self._ring.record_size)

    def set_doorbell(self, bell: Any) -> None:
        self._ring.set_doorbell(bell.handle)  # rung inside the ring's own put, in C

    def close(self) -> None:
        self._ring.close()
        with contextlib.suppress(BufferError):
            self._mm.close()

    def unlink(self) -> None:
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory("/" + self.name)
