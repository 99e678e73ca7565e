"""Consumers that print or discard what they receive (and, at the original videoflow's import
path, the webhook and file appender consumers)."""

from __future__ import annotations

from typing import Any

from videoflow.consumers.files import FileAppenderConsumer
from videoflow.consumers.webhook import WebhookConsumer
from videoflow.core.node import ConsumerNode


class CommandlineConsumer(ConsumerNode):
    """Prints each value to standard output, followed by ``end`` (several parents: separated
    by ``sep``), and flushes, so that lines from a flow appear as they are consumed."""

    def __init__(
        self, sep: str = " ", end: str = "\n", name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        self._sep = sep
        self._end = end

    def consume(self, *inputs: Any) -> None:
        print(*inputs, sep=self._sep, end=self._end, flush=True)


class VoidConsumer(ConsumerNode):
    """Discards everything: the end of a pipeline that is measured, not watched."""

    def consume(self, *inputs: Any) -> None:
        pass


__all__ = ["CommandlineConsumer", "FileAppenderConsumer", "VoidConsumer", "WebhookConsumer"]
