"""Doorbells: how a task that receives from several control queues (a JOIN stage) sleeps until
any of them has a message, without polling them in turn.

Every sender into one of those queues rings the receiver's doorbell after each put; the
receiver reads the bell (``value``), tries its queues without waiting, and when they had
nothing sleeps until the bell moves from the value it read (``wait``), a deadline, or a
timeout that lets it check the flow's abort flag. A put after the read ends the wait at once,
so no wake-up is lost. Two implementations, chosen with the control queues (transport/__init__):

- native: ``videoflow._native.Doorbell``, a 32-bit counter and a waiter count in 8 bytes of
  the flow's control block. The ring of each inbox rings it inside its own ``put``
  (``Ring.set_doorbell``): no extra call on the sender's side, a FUTEX_WAKE only while the
  receiver sleeps, and a receiver that finds messages makes no system call at all.
- fallback: a pipe the flow's owner creates (and keeps open, so a write never meets a closed
  reader). After each put the sender writes one byte, non-blocking (a full pipe already means
  "wake up"); the receiver waits for the pipe to be readable and empties it.

Neither leaves anything in /dev/shm.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
from multiprocessing.connection import Connection
from typing import Any

from videoflow.transport import native


@dataclasses.dataclass(frozen=True)
class DoorbellSpec:
    """How a task opens a doorbell (picklable; sent to it at start): ``index`` is the entry of
    the control block that holds the bell (native path); ``reader``/``writer`` are the pipe's
    ends on the fallback path (the receiver gets the reader, a sender the writer)."""

    index: int
    reader: Connection | None = None
    writer: Connection | None = None

    def open(self, control: Any) -> Doorbell:
        """The doorbell in this process; ``control`` is the flow's control block."""
        if native is not None:
            return NativeDoorbell(control, self.index)
        return PipeDoorbell(self.reader, self.writer)


class Doorbell:
    """The interface both implementations share."""

    handle: Any = None  # what a native ring rings itself (None on the fallback path)

    def value(self) -> int:
        """The bell now: read it before trying the queues, give it to ``wait``."""
        raise NotImplementedError

    def ring(self) -> None:
        """Tell the receiver that a queue it watches got a message."""
        raise NotImplementedError

    def wait(self, seen: int, timeout: float) -> bool:
        """Sleep until the bell moved from ``seen`` (True; it may also be spurious) or
        ``timeout`` seconds passed (False)."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of it in this process."""


class NativeDoorbell(Doorbell):
    """A futex counter in 8 bytes of the control block (entry ``index``)."""

    def __init__(self, control: Any, index: int) -> None:
        assert native is not None
        self.handle = native.Doorbell(control, index * 8)
        self.value = self.handle.value  # type: ignore[method-assign]
        self.ring = self.handle.ring  # type: ignore[method-assign]
        self.wait = self.handle.wait  # type: ignore[method-assign]


class PipeDoorbell(Doorbell):
    """A pipe: one byte per put, the receiver waits for it to be readable."""

    def __init__(self, reader: Connection | None, writer: Connection | None) -> None:
        self.reader = reader
        self.writer = writer
        self.rfd = reader.fileno() if reader is not None else -1
        self.wfd = writer.fileno() if writer is not None else -1
        for fd in (self.rfd, self.wfd):
            if fd >= 0:
                os.set_blocking(fd, False)

    def value(self) -> int:
        return 0  # the bytes stay in the pipe until wait() reads them: nothing to compare

    def ring(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: the receiver has plenty to read
            os.write(self.wfd, b"\x01")

    def wait(self, seen: int, timeout: float) -> bool:
        if not select.select([self.rfd], [], [], max(0.0, timeout))[0]:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self.rfd, 4096):
                pass
        return True

    def close(self) -> None:
        for conn in (self.reader, self.writer):
            if conn is not None:
                conn.close()


def new_doorbell(ctx: Any, index: int) -> tuple[DoorbellSpec, DoorbellSpec, list[Connection]]:
    """A doorbell at control block entry ``index``: the receiver's spec, the senders' spec,
    and what the owner must close once the flow has ended (the pipe on the fallback path)."""
    if native is not None:
        spec = DoorbellSpec(index)
        return spec, spec, []
    reader, writer = ctx.Pipe(duplex=False)
    return DoorbellSpec(index, reader=reader), DoorbellSpec(index, writer=writer), [reader, writer]
