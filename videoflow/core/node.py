"""Node classes: what a user subclasses to build a flow.

A node is created by ``__init__`` and wired by ``__call__(*parents)``. Its ``open()`` and
``close()`` run inside the node's own task process, around the per-message calls: ``next()`` for
producers, ``process(*inputs)`` for processors, ``consume(*inputs)`` for consumers.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from videoflow.core.constants import CPU, DEVICE_TYPES
from videoflow.core.join import Join, check_join
from videoflow.engine.base import NodeContext

_ids = itertools.count(1)

# What Node.__init__ sets up; reading one of them fails only when it was never called.
_NODE_ATTRIBUTES = frozenset(
    (
        "_id", "_name", "_parents", "_children", "_nb_tasks", "_device_type", "_vf_context",
        "_join", "_items",
    )
)


def max_tasks() -> int:
    """The most task processes one node may have on this machine: 8 per CPU, at least 64."""
    return max(64, 8 * (os.cpu_count() or 1))


class LocalContext:
    """The context of a node outside a flow (unit tests, a notebook): ``allocate`` gives plain
    ``np.empty`` arrays and ``meta`` is a dict of the node's own, empty until set."""

    __slots__ = ("meta",)

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}

    def allocate(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype=dtype)


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
        self._vf_context: NodeContext = LocalContext()
        self._join: Join | None = None
        self._items: tuple[int | None, ...] = ()

    def __getattr__(self, name: str) -> Any:
        # Reached only when normal lookup fails: a subclass whose __init__ skipped Node's.
        if name in _NODE_ATTRIBUTES:
            raise TypeError(
                f"{type(self).__name__}.__init__ did not call super().__init__(): "
                f"call it first in {type(self).__name__}.__init__ so that the node is set up"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- wiring ------------------------------------------------------------------------------
    def __call__(self, *parents: Node | OutputItem) -> Node:
        """Connect this node to its parents; returns the node so that calls chain.

        A parent given as ``node[i]`` hands this node item ``i`` of that node's output."""
        if self._parents is not None:
            raise RuntimeError(f"node {self._name!r} was already called: a node is wired only once")
        if not parents:
            raise ValueError(f"node {self._name!r} must be called with at least one parent")
        for parent in parents:
            if not isinstance(parent, (Node, OutputItem)):
                raise TypeError(
                    f"parents of {self._name!r} must be nodes, got {type(parent).__name__}"
                )
        nodes = [p.node if isinstance(p, OutputItem) else p for p in parents]
        self._items = tuple(p.index if isinstance(p, OutputItem) else None for p in parents)
        self._parents = nodes
        for parent in nodes:
            parent._children.append(self)
        return self

    def __getitem__(self, index: int) -> OutputItem:
        """``node[i]``: item ``i`` of this node's output (a tuple or list), as a parent.

        ``Tracker()(cam1, det[0])`` gives the tracker the first item of what ``det`` returns:
        the way a batched result goes back to the branch of each camera. It is resolved when
        the flow is planned: no task, no copy."""
        if isinstance(self, ConsumerNode):
            raise TypeError(f"consumer {self._name!r} has no output to take item {index!r} of")
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(
                f"{self._name}[{index!r}]: an item of a node's output is chosen by an integer "
                "index (slices are not supported)"
            )
        if index < 0:
            raise ValueError(
                f"{self._name}[{index}]: the index must be >= 0 (the engine checks it against "
                "the length of each output)"
            )
        return OutputItem(self, index)

    def __iter__(self) -> Any:
        # With __getitem__ alone, Python would iterate a node as an endless sequence.
        raise TypeError(f"node {self._name!r} is not iterable; take one item with node[i]")

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
    def parent_items(self) -> tuple[int | None, ...]:
        """For each parent, the item of its output this node reads (None: the whole output)."""
        return self._items or tuple(None for _ in self.parents)

    @property
    def join_policy(self) -> Join | None:
        """The ``join=`` this node was given (None: the flow type's default where needed)."""
        return self._join

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

    # -- what the engine running this node provides -------------------------------------------
    def bind(self, context: NodeContext | None) -> None:
        """Attach the node to the engine that runs it; ``None`` detaches it.

        Engines call this once per task, before ``open()``, with an object that has ``meta``
        and ``allocate(shape, dtype)`` (see ``videoflow.engine.base.NodeContext``); the node's
        ``allocate()`` and ``meta`` then read from it. Unbound (outside a flow, or after a
        pickle), a node allocates ``np.empty`` arrays and has a metadata dict of its own.
        Nodes do not call this; an engine other than the built-in ones does.
        """
        self._vf_context = LocalContext() if context is None else context

    def allocate(self, shape: int | Sequence[int], dtype: Any = np.uint8) -> np.ndarray:
        """A writable array for this call's output, living in shared memory when in a flow.

        Fill it and return it (or a view of it): the frame then travels downstream without
        any copy. Outside a flow (unit tests) it is an ordinary ``np.empty`` array.
        """
        shape_t = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        return self._vf_context.allocate(shape_t, dtype)

    @property
    def meta(self) -> dict[str, Any]:
        """Metadata of the message being handled (``index``, plus what producers add, such as
        ``timestamp_ms``). Keys set here travel downstream with the message."""
        return self._vf_context.meta

    # -- pickling to task processes: the graph stays behind in the parent ---------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_parents"] = None
        state["_children"] = []
        state["_vf_context"] = LocalContext()  # a binding belongs to one process
        return state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}>"


class ProducerNode(Node):
    """Produces the messages of a flow: ``next()`` returns one value, StopIteration ends it."""

    kind = "producer"

    def __call__(self, *parents: Node | OutputItem) -> Node:
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
    join:        how to pair the messages of different producers, on the node where their
                 streams first meet (see ``Join``); the flow type's default when None.
    """

    kind = "processor"

    def __init__(
        self,
        nb_tasks: int = 1,
        device_type: str = CPU,
        name: str | None = None,
        join: Join | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self._join = check_join(join, repr(self))
        limit = max_tasks()
        valid = isinstance(nb_tasks, int) and not isinstance(nb_tasks, bool)
        if not valid or not 1 <= nb_tasks <= limit:
            raise ValueError(
                f"nb_tasks must be an integer from 1 to {limit} (each task is a process; the "
                f"limit is 8 per CPU, at least 64), got {nb_tasks!r}"
            )
        if device_type not in DEVICE_TYPES:
            raise ValueError(f"device_type must be one of {DEVICE_TYPES}, got {device_type!r}")
        self._nb_tasks = nb_tasks
        self._device_type = device_type

    def process(self, *inputs: Any) -> Any:
        raise NotImplementedError


class OneTaskProcessorNode(ProcessorNode):
    """A stateful processor: always one task, whatever nb_tasks says."""

    def __init__(
        self,
        nb_tasks: int = 1,
        device_type: str = CPU,
        name: str | None = None,
        join: Join | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(nb_tasks=1, device_type=device_type, name=name, join=join, **kwargs)


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
        join: Join | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"FunctionProcessorNode needs a callable, got {type(fn).__name__}")
        super().__init__(
            nb_tasks=nb_tasks,
            device_type=device_type,
            name=name if name is not None else getattr(fn, "__name__", None),
            join=join,
        )
        self._fn = fn

    def process(self, *inputs: Any) -> Any:
        return self._fn(*inputs)


class ConsumerNode(Node):
    """Ends a branch of the flow: ``consume(*inputs)`` returns nothing.

    join: how to pair the messages of different producers when the consumer is where their
          streams first meet (see ``Join``); the flow type's default when None.
    """

    kind = "consumer"

    def __init__(self, name: str | None = None, join: Join | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self._join = check_join(join, repr(self))

    def consume(self, *inputs: Any) -> None:
        raise NotImplementedError


class OutputItem:
    """``node[i]``: item ``i`` of ``node``'s output, given as a parent to another node.

    A graph-level selector: it is no node, runs no task and copies nothing; the child reads
    the item out of the parent's output where it lies."""

    __slots__ = ("index", "node")

    def __init__(self, node: Node, index: int) -> None:
        self.node = node
        self.index = index

    def __repr__(self) -> str:
        return f"{self.node.name}[{self.index}]"
