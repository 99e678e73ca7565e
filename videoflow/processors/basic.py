"""General-purpose processors: pass-through and joining."""

from __future__ import annotations

from typing import Any

from videoflow.core.node import ProcessorNode


class IdentityProcessor(ProcessorNode):
    """Returns its input unchanged (a frame passes through without any copy)."""

    def process(self, *inputs: Any) -> Any:
        if len(inputs) != 1:
            raise TypeError(f"IdentityProcessor takes one parent, got {len(inputs)} inputs")
        return inputs[0]


class JoinerProcessor(ProcessorNode):
    """Joins the values of its parents into one tuple, in the order of ``__call__``."""

    def process(self, *inputs: Any) -> tuple[Any, ...]:
        return tuple(inputs)
