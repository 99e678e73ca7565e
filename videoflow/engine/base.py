"""The contract between a Flow and whatever runs it: the Engine protocol and the node binding.

A Flow validates its graph, turns its nodes into ``StageSpec``s (engine/plan.py) and hands them
to an engine. Every engine (the process engine of this package, the optional Ray engine) keeps
the same semantics: BATCH loses nothing and keeps order, REALTIME drops and counts, ``stop()``
drains, ``abort()`` drops what is in flight, ``kill()`` ends every task now, ``errors`` holds the
FlowErrors that ended the run, ``stats()`` is a FlowStats snapshot while running and after.

Nodes learn about the engine through one hook: before ``open()`` the engine calls
``node.bind(context)`` with an object that satisfies ``NodeContext``; ``Node.allocate()`` and
``Node.meta`` read from it. An engine never assigns other attributes on a node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from videoflow.config import FlowConfig
    from videoflow.engine.plan import StageSpec
    from videoflow.engine.stats import FlowStats
    from videoflow.errors import FlowError


class NodeContext(Protocol):
    """What a running node sees of its engine (bound with ``Node.bind``)."""

    @property
    def meta(self) -> dict[str, Any]:
        """Metadata of the message in hand; keys a node sets travel downstream."""
        ...

    def allocate(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A writable array for the current call's output (shared memory where the engine
        has it); returning it, or a view of it, sends it on without a copy."""
        ...


@runtime_checkable
class Engine(Protocol):
    """Runs one flow once. ``Flow.run()`` calls ``start``; the rest may be called from any
    thread of the flow's owner, any number of times, before or after the end."""

    name: str  # "process", "ray", ...

    def start(self, stages: Sequence[StageSpec], realtime: bool, config: FlowConfig) -> None:
        """Start the flow and return at once; raise if it cannot start (nothing left behind)."""
        ...

    def stop(self) -> None:
        """Graceful end: producers stop, what they produced drains (BATCH: all of it)."""
        ...

    def abort(self) -> None:
        """Immediate end: tasks leave at their next check; stragglers are killed later."""
        ...

    def kill(self) -> None:
        """End every task now (a second Ctrl-C)."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the end and its cleanup; False when ``timeout`` elapsed first."""
        ...

    @property
    def running(self) -> bool: ...

    @property
    def errors(self) -> list[FlowError]:
        """The failures that ended the run, first cause first (empty after a clean end)."""
        ...

    def stats(self) -> FlowStats:
        """A snapshot of the counters, while running and after the end."""
        ...


__all__ = ["Engine", "NodeContext"]
