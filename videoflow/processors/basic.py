"""General-purpose processors: pass-through and joining, optionally paced."""

from __future__ import annotations

import time
from typing import Any

from videoflow.core.constants import CPU
from videoflow.core.node import ProcessorNode


class _Paced(ProcessorNode):
    """A processor that can sleep ``1 / fps`` seconds per call, to simulate work."""

    def __init__(
        self,
        fps: float = -1,
        nb_tasks: int = 1,
        device_type: str = CPU,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(nb_tasks=nb_tasks, device_type=device_type, name=name, **kwargs)
        self._wait = 1.0 / fps if fps > 0 else 0.0

    def _pace(self) -> None:
        if self._wait:
            time.sleep(self._wait)


class IdentityProcessor(_Paced):
    """Returns its input unchanged (a frame passes through without any copy).

    fps: when above 0, each call first sleeps ``1 / fps`` seconds (per task), to stand in for
         a slow node; 0 or below: no delay.
    """

    def process(self, *inputs: Any) -> Any:
        if len(inputs) != 1:
            raise TypeError(f"IdentityProcessor takes one parent, got {len(inputs)} inputs")
        self._pace()
        return inputs[0]


class JoinerProcessor(_Paced):
    """Joins the values of its parents into one tuple, in the order of ``__call__``.

    fps: as for IdentityProcessor, an optional delay of ``1 / fps`` seconds per call.
    """

    def process(self, *inputs: Any) -> tuple[Any, ...]:
        self._pace()
        return tuple(inputs)
