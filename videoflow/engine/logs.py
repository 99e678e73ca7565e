"""Log records of task processes, forwarded to the flow owner's handlers.

A task process installs one handler, on its root logger, that sends each record over the task's
event pipe as ``("log", record_dict)``; the owner's monitor thread re-creates the record and hands
it to ``logging.getLogger(record.name).handle(record)``, so the owner's logging configuration
(handlers, formatters, propagation) applies to tasks exactly as to its own code. Every record
from a task carries ``node`` and ``task`` attributes (``%(node)s[%(task)s]`` in a format string).

The task's own logger levels are copied from the owner when the flow starts (``level_snapshot``):
a record below them is never built or sent. The library adds no handler of its own in the owner.
"""

from __future__ import annotations

import logging
import threading
from multiprocessing.connection import Connection
from typing import Any

from videoflow.transport import message

_PLAIN = (str, int, float, bool, type(None))


class EventSender:
    """A task's end of its event pipe; sends are serialised, since a node may log from any of
    its threads while the task's main thread reports its own events."""

    __slots__ = ("conn", "lock")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, event: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.send(event)

    def close(self) -> None:
        self.conn.close()


class TaskContext(logging.Filter):
    """Adds ``node`` and ``task`` attributes to every record (keeps them when already set)."""

    def __init__(self, node: str, task: int) -> None:
        super().__init__()
        self.node = node
        self.task = task

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "node"):
            record.node = self.node
        if not hasattr(record, "task"):
            record.task = self.task
        return True


def record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    """A picklable copy of ``record``: message formatted, exception rendered to text, extra
    attributes that are not plain values turned into their ``str``."""
    data = dict(record.__dict__)
    data["msg"] = record.getMessage()
    data["args"] = None
    if record.exc_info:
        data["exc_text"] = record.exc_text or logging.Formatter().formatException(record.exc_info)
    data["exc_info"] = None
    for key, value in data.items():
        if not isinstance(value, _PLAIN):
            data[key] = str(value)
    return data


class PipeHandler(logging.Handler):
    """Sends records over a task's event pipe as ``("log", record_dict)``."""

    def __init__(self, sender: EventSender) -> None:
        super().__init__()
        self.sender = sender

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sender.send(message.event(message.LOG, record_to_dict(record)))
        except (OSError, ValueError):  # the owner is gone, or the pipe is closed: drop it
            pass
        except Exception:
            self.handleError(record)


def level_snapshot() -> tuple[tuple[str, int], ...]:
    """The levels set in this process: the root's, then every named logger that has its own."""
    levels = [("", logging.getLogger().level)]
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels.append((name, logger.level))
    return tuple(levels)


def forward_to_owner(
    sender: EventSender, node: str, task: int, levels: tuple[tuple[str, int], ...]
) -> None:
    """In a task process: send every record to the owner, with ``node`` and ``task`` set.

    Handlers inherited from the owner (start method ``fork``) are removed, so that each record
    is handled once, by the owner.
    """
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            logger.handlers.clear()
            logger.propagate = True
    root = logging.getLogger()
    root.handlers.clear()
    for name, level in levels:
        logging.getLogger(name or None).setLevel(level)
    handler = PipeHandler(sender)
    handler.addFilter(TaskContext(node, task))
    root.addHandler(handler)


def handle_forwarded(data: dict[str, Any]) -> None:
    """In the owner: re-emit a record that a task forwarded, through the owner's handlers."""
    record = logging.makeLogRecord(data)
    logging.getLogger(record.name).handle(record)
