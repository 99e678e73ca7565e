"""Consumers that print or discard what they receive."""

from __future__ import annotations

from typing import Any

from videoflow.core.node import ConsumerNode


class CommandlineConsumer(ConsumerNode):
    """Prints each value on its own line to standard output (several parents: one line each)."""

    def consume(self, *inputs: Any) -> None:
        print(*inputs, flush=True)


class VoidConsumer(ConsumerNode):
    """Discards everything: the end of a pipeline that is measured, not watched."""

    def consume(self, *inputs: Any) -> None:
        pass

