"""Node classes: what a user subclasses to build a flow.

A node is created by ``__init__`` and wired by ``__call__(*parents)``. Its ``open()`` and
``close()`` run inside the node's own task process, around the per-message calls: ``next()`` for
producers, ``process(*inputs)`` for processors, ``consume(*inputs)`` for consumers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from videoflow.core.constants import CPU, DEVICE_TYPES

_ids = itertools.count(1)

Allocator = Callable[[tuple[int, ...], Any], np.ndarray]


class Node:
    """Base of every node. Holds identity, wiring and the per-task hooks.

    name:        shown in errors, logs and statistics; defaults to the class name plus a number.
    """

    kind: ClassVar[str] = "node"

    def __init__(self, name: str | None = None) -> None:
        self._id = next(_ids)
        self._name = name if name is not None else f"{type(self).__name__}_{self._id}"
        self._parents: list[Node] | None = None
        self._children: list[Node] = []
        self._nb_tasks = 1
        self._device_type = CPU
        self._vf_allocator: Allocator | None = None
        self._vf_meta: dict[str, Any] = {}

    # -- wiring ------------------------------------------------------------------------------
    def __call__(self, *parents: Node) -> Node:
        """Connect this node to its parents; returns the node so that calls chain."""
        if self._parents is not None:
            raise RuntimeError(f"node {self._name!r} was already called: a node is wired only once")
        if not parents:
            raise ValueError(f"node {self._name!r} must be called with at least one parent")
        for parent in parents:
            if not isinstance(parent, Node):
                raise TypeError(
                    f"parents of {self._name!r} must be nodes, got {type(parent).__name__}"
                )
        self._parents = list(parents)
        for parent in parents:
            parent._children.append(self)
        return self

    @property
    def id(self) -> int:
        return self._id

    @property
    def name(self) -> str:
        return self._name

    @property
    def parents(self) -> list[Node]:
        """The nodes given to ``__call__``, in order (empty before the call)."""
        return list(self._parents or [])

    @property
    def children(self) -> list[Node]:
        return list(self._children)

    @property
    def nb_tasks(self) -> int:
        return self._nb_tasks

    @property
    def device_type(self) -> str:
        return self._device_type

    # -- hooks run in the task process --------------------------------------------------------
    def open(self) -> None:
        """Acquire resources (files, models, devices). Called once per task, in its process."""

    def close(self) -> None:
        """Release what ``open()`` acquired. Called once per task, also after errors."""

    def change_device(self, device_type: str) -> None:
        """Switch the device this node runs on; called in a worker when no GPU is left for it."""
        if device_type not in DEVICE_TYPES:
            raise ValueError(f"device_type must be one of {DEVICE_TYPES}, got {device_type!r}")
        self._device_type = device_type

    def allocate(self, shape: int | Sequence[int], dtype: Any = np.uint8) -> np.ndarray:
        """A writable array for this call's output, living in shared memory when in a flow.

        Fill it and return it (or a view of it): the frame then travels downstream without
        any copy. Outside a flow (unit tests) it is an ordinary ``np.empty`` array.
        """
        shape_t = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        if self._vf_allocator is None:
            return np.empty(shape_t, dtype=dtype)
        return self._vf_allocator(shape_t, dtype)

    @property
    def meta(self) -> dict[str, Any]:
        """Metadata of the message being handled (``index``, plus what producers add, such as
        ``timestamp_ms``). Keys set here travel downstream with the message."""
        return self._vf_meta

    # -- pickling to task processes: the graph stays behind in the parent ---------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_parents"] = None
        state["_children"] = []
        state["_vf_allocator"] = None
        state["_vf_meta"] = {}
        return state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}>"


class ProducerNode(Node):
    """Produces the messages of a flow: ``next()`` returns one value, StopIteration ends it."""

    kind = "producer"

    def __call__(self, *parents: Node) -> Node:
        raise RuntimeError(f"producer {self._name!r} takes no parents")

    def next(self) -> Any:
        raise NotImplementedError

    def expected_count(self) -> int | None:
        """How many values ``next()`` will return before StopIteration, when known in advance
        (a file's frame count, a counter's range); None when unknown or endless. Called in the
        flow's owner, before the run, to draw a progress bar; override it in your producer."""
        return None


class ProcessorNode(Node):
    """Transforms its parents' values: ``process(*inputs)`` returns the output.

    nb_tasks:    number of worker processes; messages are spread over them and put back in
                 order before the next node.
    device_type: CPU or GPU; with GPU each worker gets its own GPU when there are enough.
    """

    kind = "processor"

    def __init__(
        self, nb_tasks: int = 1, device_type: str = CPU, name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        if isinstance(nb_tasks, bool) or not isinstance(nb_tasks, int) or nb_tasks < 1:
            raise ValueError(f"nb_tasks must be a positive integer, got {nb_tasks!r}")
        if device_type not in DEVICE_TYPES:
            raise ValueError(f"device_type must be one of {DEVICE_TYPES}, got {device_type!r}")
        self._nb_tasks = nb_tasks
        self._device_type = device_type

    def process(self, *inputs: Any) -> Any:
        raise NotImplementedError


class OneTaskProcessorNode(ProcessorNode):
    """A stateful processor: always one task, whatever nb_tasks says."""

    def __init__(
        self, nb_tasks: int = 1, device_type: str = CPU, name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(nb_tasks=1, device_type=device_type, name=name, **kwargs)


class FunctionProcessorNode(ProcessorNode):
    """A processor made from a function: ``process(*inputs)`` returns ``fn(*inputs)``.

    The function travels to the task processes by pickling, under every start method (``fork``
    included): define it at module level, not as a lambda or inside another function. A function
    that needs a lock, a file or a model should be a node class that creates it in ``open()``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        nb_tasks: int = 1,
        device_type: str = CPU,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"FunctionProcessorNode needs a callable, got {type(fn).__name__}")
        super().__init__(
            nb_tasks=nb_tasks,
            device_type=device_type,
            name=name if name is not None else getattr(fn, "__name__", None),
        )
        self._fn = fn

    def process(self, *inputs: Any) -> Any:
        return self._fn(*inputs)


class ConsumerNode(Node):
    """Ends a branch of the flow: ``consume(*inputs)`` returns nothing."""

    kind = "consumer"

    def consume(self, *inputs: Any) -> None:
        raise NotImplementedError

