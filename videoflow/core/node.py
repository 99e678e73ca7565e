"""Node classes: what a user subclasses to build a flow.

A node is created by ``__init__`` and wired by ``__call__(*parents)``. Its ``open()`` and
``close()`` run inside the node's own task process, around the per-message calls: ``next()`` for
producers, ``process(*inputs)`` for processors, ``consume(*inputs)`` for consumers.
"""

from __future__ import annotations

import graphlib
import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from videoflow.config import check_realtime_drop
from videoflow.core.constants import CPU, DEVICE_TYPES, GPU
from videoflow.core.join import Join, check_join
from videoflow.engine.base import NodeContext

_ids = itertools.count(1)

# What Node.__init__ sets up; reading one of them fails only when it was never called.
_NODE_ATTRIBUTES = frozenset(
    (
        "_id", "_name", "_parents", "_children", "_nb_tasks", "_device_type", "_vf_context",
        "_join", "_items", "_realtime_drop", "_every", "_skip_when_busy",
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

    ``transient`` names the attributes a class makes in ``open()`` (files, sockets, models,
    threads): they belong to one task's process, so the copy of the node sent to a task has
    them set to None. Each class lists its own; those of its bases are added.
    """

    kind: ClassVar[str] = "node"
    transient: ClassVar[tuple[str, ...]] = ()

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
        self._realtime_drop: str | None = None
        self._every = 1
        self._skip_when_busy = False
        self._vf_module: TaskModuleNode | None = None  # the module that runs this node, if any

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
        for node in (self, *nodes):
            module = getattr(node, "_vf_module", None)
            if module is not None:
                raise RuntimeError(
                    f"node {node.name!r} runs inside {module.name!r}: wire the "
                    "TaskModuleNode instead of the nodes it wraps"
                )
        self._items = tuple(p.index if isinstance(p, OutputItem) else None for p in parents)
        self._parents = nodes
        for parent in nodes:
            parent._children.append(self)  # once per edge: a parent given twice is listed twice
        return self

    def add_child(self, child: Node) -> None:
        """Record ``child`` as depending on this node, once (``__call__`` does it for you)."""
        if not any(c is child for c in self._children):
            self._children.append(child)

    def remove_child(self, child: Node) -> None:
        """Forget ``child`` (every edge to it); ValueError if it is not a child of this node."""
        kept = [c for c in self._children if c is not child]
        if len(kept) == len(self._children):
            raise ValueError(f"{child!r} is not a child of {self!r}")
        self._children = kept

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

    @property
    def realtime_drop(self) -> str | None:
        """What a full queue in front of this node drops in a REALTIME flow: "oldest",
        "newest", or None for the flow's ``realtime_drop`` option."""
        return self._realtime_drop

    @property
    def every(self) -> int:
        """The node runs on one message in ``every`` (1: on all of them)."""
        return self._every

    @property
    def skip_when_busy(self) -> bool:
        """In a REALTIME flow, the node skips the messages that waited while it was busy."""
        return self._skip_when_busy

    def _set_realtime_drop(self, realtime_drop: str | None) -> None:
        if realtime_drop is not None:
            check_realtime_drop(realtime_drop, f"realtime_drop of {self!r}")
        self._realtime_drop = realtime_drop

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

    def make_writable(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` itself when this node may write into it, else a writable copy of it.

        A node may draw on an input frame when it is that frame's last reader (no later node
        reads the same frame): the engine then hands the frame over writable and this returns
        it as it is, at no cost. When a later node reads the frame too, it arrives read-only,
        so that nothing this node writes can change what that node sees: this makes one copy,
        into shared memory (``allocate``), so that returning the copy costs nothing more.
        (GStreamer's ``gst_buffer_make_writable``: the same memory when nothing else reads it,
        one copy otherwise.) Outside a flow, a writable array is returned as it is too.
        """
        if not isinstance(frame, np.ndarray):
            raise TypeError(
                f"make_writable takes a numpy array, got {type(frame).__name__}; "
                "copy other values yourself (copy.deepcopy)"
            )
        if frame.flags.writeable:
            return frame
        if frame.dtype.hasobject:  # objects cannot live in shared memory
            return frame.copy()
        out = self.allocate(frame.shape, frame.dtype)
        np.copyto(out, frame, casting="no")
        return out

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
        for cls in type(self).__mro__:
            for name in cls.__dict__.get("transient", ()):
                if name in state:
                    state[name] = None
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
    every:       run on one message in ``every``; for the others the node's last output is
                 passed on, and ``meta["skipped"]`` says so (one task only).
    skip_when_busy: in a REALTIME flow, a message that arrives while the node is busy with
                 another one is not queued for it: it is passed on with the node's last output,
                 marked in ``meta["skipped"]``, and the node runs on the newest message once it
                 is free (one task only). BATCH flows run the node on every message.
    realtime_drop: what a full queue in front of this node drops in a REALTIME flow:
                 "oldest" (the node gets the freshest frame) or "newest" (frames already
                 queued go first); None: the flow's ``realtime_drop`` option ("oldest").
    """

    kind = "processor"

    def __init__(
        self,
        nb_tasks: int = 1,
        device_type: str = CPU,
        name: str | None = None,
        join: Join | None = None,
        every: int = 1,
        skip_when_busy: bool = False,
        realtime_drop: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self._join = check_join(join, repr(self))
        self._set_realtime_drop(realtime_drop)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(
                f"every of {self!r} must be an integer >= 1 (run on one message in every), "
                f"got {every!r}"
            )
        if not isinstance(skip_when_busy, bool):
            raise ValueError(
                f"skip_when_busy of {self!r} must be True or False, got {skip_when_busy!r}"
            )
        if (every > 1 or skip_when_busy) and nb_tasks != 1:
            what = f"every={every}" if every > 1 else "skip_when_busy=True"
            raise ValueError(
                f"{self!r} has {what} and nb_tasks={nb_tasks!r}: a node that skips messages "
                "passes its last output on, which lives in one task; use nb_tasks=1"
            )
        self._every = every
        self._skip_when_busy = skip_when_busy
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
    """A stateful processor: always one task, whatever nb_tasks says.

    device_type comes first, as in the original videoflow; nb_tasks is accepted and ignored.
    """

    def __init__(
        self,
        device_type: str = CPU,
        *,
        nb_tasks: int = 1,
        name: str | None = None,
        join: Join | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(nb_tasks=1, device_type=device_type, name=name, join=join, **kwargs)


class FunctionProcessorNode(ProcessorNode):
    """A processor made from a function: ``process(*inputs)`` returns ``fn(*inputs)``.

    processor_function: the function. It travels to the task processes by pickling, under
                        every start method (``fork`` included): define it at module level,
                        not as a lambda or inside another function. A function that needs a
                        lock, a file or a model should be a node class that creates it in
                        ``open()``.
    nb_proc, device:    the original videoflow's names for ``nb_tasks`` and ``device_type``;
                        either spelling works (keywords ``nb_tasks=``/``device_type=`` too).
    name:               defaults to the function's name.
    join:               as for every processor (see ``Join``).
    """

    def __init__(
        self,
        processor_function: Callable[..., Any],
        nb_proc: int = 1,
        device: str = CPU,
        *,
        nb_tasks: int | None = None,
        device_type: str | None = None,
        name: str | None = None,
        join: Join | None = None,
        **kwargs: Any,
    ) -> None:
        if not callable(processor_function):
            raise TypeError(
                "FunctionProcessorNode needs a callable, got "
                f"{type(processor_function).__name__}"
            )
        super().__init__(
            nb_tasks=_one_of("nb_proc", nb_proc, 1, "nb_tasks", nb_tasks),
            device_type=_one_of("device", device, CPU, "device_type", device_type),
            name=name if name is not None else getattr(processor_function, "__name__", None),
            join=join,
            **kwargs,
        )
        self._fn = processor_function

    def process(self, *inputs: Any) -> Any:
        return self._fn(*inputs)


def _one_of(old: str, old_value: Any, default: Any, new: str, new_value: Any) -> Any:
    """The value of a setting that has an original name and a name of this project."""
    if new_value is None:
        return old_value
    if old_value != default and old_value != new_value:
        raise ValueError(f"{old}={old_value!r} and {new}={new_value!r} disagree: give one of them")
    return new_value


class Leaf(Node):
    """A node that ends a branch: it has no children (a Flow rejects a Leaf used as a parent)."""


class ConsumerNode(Leaf):
    """Ends a branch of the flow: ``consume(*inputs)`` returns nothing.

    metadata: when True, a flow calls ``consume`` with the metadata of the message instead of
              the values: one dict per parent (a copy of ``self.meta``: ``index``, plus what
              earlier nodes set, such as ``timestamp_ms``). Direct calls to an unbound node
              are not changed.
    join:     how to pair the messages of different producers when the consumer is where
              their streams first meet (see ``Join``); the flow type's default when None.
    realtime_drop: what a full queue in front of this consumer drops in a REALTIME flow,
              "oldest" or "newest" (None: the flow's ``realtime_drop`` option).
    """

    kind = "consumer"

    def __init__(
        self,
        metadata: bool = False,
        name: str | None = None,
        join: Join | None = None,
        realtime_drop: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self._join = check_join(join, repr(self))
        self._set_realtime_drop(realtime_drop)
        self._metadata = bool(metadata)

    @property
    def metadata(self) -> bool:
        """True when the flow hands this consumer the metadata of its inputs, not the inputs."""
        return self._metadata

    def consume(self, *inputs: Any) -> None:
        raise NotImplementedError

    def _consume_metadata(self, *inputs: Any) -> None:
        type(self).consume(self, *(dict(self.meta) for _ in inputs))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("consume", None)
        return state

    def bind(self, context: NodeContext | None) -> None:
        # Bound to an engine, which calls consume(*values): a metadata consumer gets the
        # message's metadata in their place, through an instance attribute that shadows the
        # class's consume for this object only (and goes when the node is unbound).
        super().bind(context)
        self.__dict__.pop("consume", None)
        if context is not None and self._metadata:
            self.consume = self._consume_metadata  # type: ignore[method-assign]


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


def _subgraph(entry: Node, exit: Node, what: str) -> list[Node]:
    """The nodes reachable from ``entry`` without going past ``exit``, topologically sorted
    (``entry`` first, ``exit`` last). ValueError for a cycle or an ``exit`` out of reach."""
    inside: dict[int, Node] = {}
    stack = [entry]
    while stack:
        node = stack.pop()
        if node.id in inside:
            continue
        inside[node.id] = node
        if node is not exit:
            stack.extend(node.children)
    if exit.id not in inside:
        raise ValueError(f"{what}: {exit.name!r} is not a descendant of {entry.name!r}")
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for node in inside.values():
        sorter.add(node.id, *(p.id for p in node.parents if p.id in inside and node is not entry))
    try:
        order = [inside[i] for i in sorter.static_order()]
    except graphlib.CycleError as exc:
        raise ValueError(f"{what}: the graph from {entry.name!r} has a cycle") from exc
    return order


class TaskModuleNode(ProcessorNode):
    """Runs a sub-graph of processors as one node: one task per worker for all of them.

    entry_node: the sub-graph's first processor; the module takes over its parents (now or
                when the module is called).
    exit_node:  its last processor; the module's output is ``exit_node``'s, and the nodes wired
                to ``exit_node`` are wired to the module instead.
    nb_tasks:   worker processes for the whole module.

    The module wraps every node reachable from ``entry_node`` up to ``exit_node``. Intermediate
    values never leave the process: each worker calls the processors in topological order and
    hands their outputs over in memory. ``open()`` and ``close()`` of every wrapped processor
    run in the module's task. ValueError when a wrapped node is not a processor, is a
    TaskModuleNode, reads a node outside the module (only the entry may), leads nowhere but to
    the exit, runs on a GPU, or is a OneTaskProcessorNode while ``nb_tasks > 1``.
    """

    def __init__(
        self,
        entry_node: ProcessorNode,
        exit_node: ProcessorNode,
        nb_tasks: int = 1,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(nb_tasks=nb_tasks, device_type=CPU, name=name, **kwargs)
        what = "TaskModuleNode"
        for end in (entry_node, exit_node):
            if not isinstance(end, Node):
                raise TypeError(f"{what} wraps nodes, got {type(end).__name__}")
        order = _subgraph(entry_node, exit_node, what)
        ids = {n.id: i for i, n in enumerate(order)}
        for node in order:
            if not isinstance(node, ProcessorNode):
                raise ValueError(
                    f"{what}: {node.name!r} is not a processor (a module wraps every node "
                    f"reachable from {entry_node.name!r} up to {exit_node.name!r})"
                )
            if isinstance(node, TaskModuleNode):
                raise ValueError(f"{what}: {node.name!r} is a TaskModuleNode; they do not nest")
            if node._vf_module is not None:
                raise ValueError(f"{what}: {node.name!r} is already in {node._vf_module.name!r}")
            if node.device_type == GPU:
                raise ValueError(f"{what}: {node.name!r} runs on a GPU; modules run on the CPU")
            if node.every > 1 or node.skip_when_busy:
                raise ValueError(
                    f"{what}: {node.name!r} skips messages (every=, skip_when_busy), which a "
                    "node inside a module cannot do; give them to the module instead"
                )
            if isinstance(node, OneTaskProcessorNode) and nb_tasks > 1:
                raise ValueError(
                    f"{what}: {node.name!r} is a OneTaskProcessorNode, so the module cannot "
                    f"have nb_tasks={nb_tasks}"
                )
            if node is not entry_node:
                for parent in node.parents:
                    if parent.id not in ids:
                        raise ValueError(
                            f"{what}: {node.name!r} reads {parent.name!r}, which is outside "
                            f"the module; only {entry_node.name!r} may have parents outside"
                        )
            if node is not exit_node and not node.children:
                raise ValueError(
                    f"{what}: the output of {node.name!r} goes nowhere; every wrapped "
                    f"node must lead to {exit_node.name!r}"
                )
        assert exit_node is order[-1]  # the only node without children inside: the last
        self._entry_node = entry_node
        self._exit_node = exit_node
        self._tsort: list[ProcessorNode] = order  # type: ignore[assignment]
        # Where each wrapped node (after the entry) reads its inputs: (index into _tsort,
        # item of that node's output or None for all of it), one per parent.
        self._reads = [
            tuple(
                (ids[p.id], item)
                for p, item in zip(node.parents, node.parent_items, strict=True)
            )
            for node in order[1:]
        ]

        # Take the entry's place under its parents and the exit's place above its children.
        if entry_node._parents is not None:
            self._parents = entry_node._parents
            self._items = entry_node._items
            entry_node._parents, entry_node._items = None, ()
            for parent in set(self._parents):
                parent._children = [self if c is entry_node else c for c in parent._children]
        self._children, exit_node._children = exit_node._children, []
        for child in set(self._children):
            assert child._parents is not None
            child._parents = [self if p is exit_node else p for p in child._parents]
        if self._join is None:
            self._join = entry_node._join  # where streams meet, the entry's rule is the module's
        for node in order:
            node._vf_module = self

    @property
    def nodes(self) -> list[ProcessorNode]:
        """The wrapped processors in the order they run."""
        return list(self._tsort)

    def bind(self, context: NodeContext | None) -> None:
        # The wrapped nodes allocate and see the message's metadata through the module's context.
        super().bind(context)
        for node in self._tsort:
            node.bind(context)

    def open(self) -> None:
        for node in self._tsort:
            node.open()

    def close(self) -> None:
        errors = []
        for node in reversed(self._tsort):
            try:
                node.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def process(self, *inputs: Any) -> Any:
        nodes = self._tsort
        results = [nodes[0].process(*inputs)]
        for node, reads in zip(nodes[1:], self._reads, strict=True):
            args = (results[i] if item is None else results[i][item] for i, item in reads)
            results.append(node.process(*args))
        return results[-1]


class ModuleNode(Node):
    """Names a sub-graph of processors (and other ModuleNodes) from ``entry_node`` to
    ``exit_node``, as the original videoflow did; ``nodes`` lists them in order.

    It is not a node of a flow: wire its processors as usual, or wrap them in a
    :class:`TaskModuleNode` to run them in one task. ValueError for a cycle, an ``exit_node``
    out of reach, or a node that is neither a processor nor a ModuleNode.
    """

    def __init__(self, entry_node: Node, exit_node: Node, *args: Any, **kwargs: Any) -> None:
        order = _subgraph(entry_node, exit_node, "ModuleNode")
        nodes: list[Node] = []
        for node in order:
            if isinstance(node, ModuleNode):
                nodes.extend(node.nodes)
            elif isinstance(node, ProcessorNode):
                nodes.append(node)
            else:
                raise ValueError(f"ModuleNode: {node.name!r} is neither a processor nor a module")
        self._entry_node = entry_node
        self._exit_node = exit_node
        self._tsort = nodes
        super().__init__(*args, **kwargs)

    def __call__(self, *parents: Node | OutputItem) -> Node:
        raise TypeError(
            f"ModuleNode {self.name!r} cannot be wired into a flow: call its entry node, or "
            "wrap the sub-graph in TaskModuleNode(entry, exit) to run it in one task"
        )

    @property
    def nodes(self) -> list[Node]:
        return list(self._tsort)
