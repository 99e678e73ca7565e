"""The one owner of a message's slots inside a task: what the node reads, what it may write
into, what it keeps, and which slots this task gives back.

Every slot is given back exactly once. While a message is in a task, the task's
``MessageSlots`` holds all the slots its values reference, and the slots taken while it is
handled (by ``Node.allocate`` and by encoding the output). After the node's call, ``settle``
drops the outputs this task is the last reader of and gives back every slot that nothing left
in the message references; the message then leaves with the rest (``sent``), or is dropped
with them (``drop``); a task torn down gives back everything it holds (``abandon``).

Writing: an input whose slots no later node reads (this task is its last reader) is handed
over writable: the node may draw on it, zero copies. Any other input is a read-only view.

Keeping: whatever the node still references after its call (an input, a slice of it, a dict
holding it, an array from ``allocate``) is detected by reference count, the cost of one
``sys.getrefcount`` per object handed out. Its slot is then not given back but kept
(``KeptSlots``) until the node's last reference to it goes. When the message still needs that
slot (a later node reads it too), the message goes on with a copy of it instead: the kept
slot must never change, and no other process may ever write into it.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from typing import Any

import numpy as np

from videoflow.engine.plan import Stage
from videoflow.errors import PoolExhaustedError
from videoflow.transport import message
from videoflow.transport.codec import Codec, Handed, plain_dtype
from videoflow.transport.message import Encoded, message_refs, value_refs
from videoflow.transport.shm import KEPT, MAX_POOLS, PoolRegistry, SlotAllocator, SlotRef


def _held_elsewhere(handed: list[Handed], alone: int) -> list[Handed] | None:
    """The handed objects that something besides ``handed`` still references, if any."""
    getrefcount = sys.getrefcount
    held = None
    for h in handed:
        if getrefcount(h[0]) > alone:
            if held is None:
                held = []
            held.append(h)
    return held


def _calibrate() -> int:
    """The reference count ``_held_elsewhere`` sees for an object nothing else holds (it
    depends on the interpreter: measured here rather than assumed)."""
    probe: list[Handed] = [(object(), SlotRef("", 0, 0), None)]
    alone = 0
    while _held_elsewhere(probe, alone):
        alone += 1
    extra = probe[0][0]
    if not _held_elsewhere(probe, alone):  # pragma: no cover (an interpreter we do not know)
        raise RuntimeError("reference counts cannot tell whether a node kept a frame")
    del extra
    return alone


_ALONE = _calibrate()
log = logging.getLogger(__name__)


def writer_of(pool: str) -> str:
    """The part of a pool's name that names the task writing it (``<prefix>.<stage>-<worker>``)."""
    return pool.rpartition(".")[0]


class KeptSlots:
    """Slots a node holds past its call; each goes back when the last object of the node's
    that holds its memory is gone (a weakref callback), or at the end of the task.

    Only this process holds a kept slot (its state byte says KEPT), so giving it back is one
    store, as for any slot. A node may keep at most ``(MAX_POOLS - 1) * nslots`` frames of
    any one writer: beyond that the writer could not have the slots its messages in flight
    need, and the node gets a PoolExhaustedError that says how many it holds.
    """

    def __init__(self, registry: PoolRegistry, node: str) -> None:
        self.registry = registry
        self.node = node
        self.holders: dict[SlotRef, int] = {}  # kept slot -> live objects holding it
        self.watches: dict[int, tuple[weakref.ref[Any], SlotRef]] = {}
        self.lock = threading.RLock()  # a node's thread may drop a kept frame

    def __len__(self) -> int:
        return len(self.holders)

    def check_room(self, refs: list[SlotRef]) -> None:
        """Raise PoolExhaustedError if keeping ``refs`` too leaves a writer short of slots."""
        with self.lock:  # a node's thread may let go of a kept frame meanwhile
            holding = list(self.holders)
        new: dict[str, int] = {}
        for ref in set(refs).difference(holding):
            new[writer_of(ref.pool)] = new.get(writer_of(ref.pool), 0) + 1
        for writer, more in new.items():
            held = sum(1 for r in holding if writer_of(r.pool) == writer) + more
            pool = self.registry.get(next(r.pool for r in refs if writer_of(r.pool) == writer))
            limit = (MAX_POOLS - 1) * pool.nslots
            if held > limit:
                raise PoolExhaustedError(
                    f"node {self.node!r} holds {held} frames past its calls (the most it may "
                    f"keep from one source is {limit}): the node that makes them would run "
                    "out of shared memory; keep copies of the frames you keep "
                    "(frame.copy()), or keep fewer"
                )

    def keep(self, obj: Any, ref: SlotRef) -> None:
        with self.lock:
            count = self.holders.get(ref, 0)
            if not count:
                self.registry.get(ref.pool).keep(ref.slot)
            self.holders[ref] = count + 1
            watch = weakref.ref(obj, self._gone)
            self.watches[id(watch)] = (watch, ref)

    def _gone(self, watch: weakref.ref[Any]) -> None:
        with self.lock:
            entry = self.watches.pop(id(watch), None)
            if entry is None:  # released at the end of the task already
                return
            ref = entry[1]
            count = self.holders[ref] - 1
            if count:
                self.holders[ref] = count
            else:
                del self.holders[ref]
                self.registry.release(ref)

    def check(self) -> None:
        """(Debug mode) every kept slot is still kept, at the generation it was kept at."""
        for ref in list(self.holders):
            self.registry.get(ref.pool).check(ref.slot, ref.gen, KEPT)

    def release_all(self) -> None:
        """Give every kept slot back (the task is ending: its node is closed)."""
        with self.lock:
            self.watches.clear()  # no callback fires after this
            holders, self.holders = self.holders, {}
        for ref in holders:
            self.registry.release(ref)


class MessageSlots:
    """The slots of the message in hand and of the call on it: one per task, reused for
    every message (``hold`` starts one), so the per-message path allocates nothing."""

    def __init__(
        self,
        stage: Stage,
        registry: PoolRegistry,
        allocator: SlotAllocator | None,
        codec: Codec,
        debug: bool = False,
    ) -> None:
        spec = stage.spec
        self.registry = registry
        self.allocator = allocator
        self.codec = codec
        self.debug = debug
        self.reads = spec.reads
        self.node_id = spec.node_id
        self.keep_output = stage.keep_output
        self.forwards = stage.outbox is not None  # the message goes on after this task
        # With no one to send to, this task is the last reader of everything it holds.
        self.drop_after = frozenset(stage.drop_after) if self.forwards else None
        self.drops = stage.drop_after
        self.read_last = [(nid, nid in stage.drop_after) for nid in spec.reads]
        self.any_last = any(last for _, last in self.read_last)
        self.values: dict[int, Encoded] = {}
        self.handed: list[Handed] = []  # objects given to the node, with their slot
        self.taken: list[SlotRef] = []  # slots taken since the last settle
        self.kept = KeptSlots(registry, spec.name)
        self.copied = False  # a kept frame was copied for the message (logged once)

    # -- one message -------------------------------------------------------------------------
    def hold(self, values: dict[int, Encoded]) -> None:
        """Take charge of a message's values (received, or ``{}`` for a producer's call)."""
        self.values = values

    def inputs(self) -> list[Any]:
        """The node's arguments, decoded; writable where this task is the frame's last reader."""
        values, handed, decode = self.values, self.handed, self.codec.decode
        drop = self.drop_after
        if drop is None:
            return [decode(values[nid], handed, True) for nid in self.reads]
        if not self.any_last:
            return [decode(values[nid], handed) for nid in self.reads]
        surviving: set[SlotRef] | None = None  # slots of the values a later node reads
        for nid, enc in values.items():
            if nid not in drop:
                if surviving is None:
                    surviving = set()
                surviving.update(value_refs(enc))
        if surviving is None:  # every value ends here: each last read is writable
            return [decode(values[nid], handed, last) for nid, last in self.read_last]
        return [
            decode(values[nid], handed, last and surviving.isdisjoint(value_refs(values[nid])))
            for nid, last in self.read_last
        ]

    def allocate(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """``Node.allocate`` in a task with a pool: a writable array in a new slot."""
        assert self.allocator is not None
        arr, ref = self.allocator.array(shape, dtype)
        self.taken.append(ref)
        enc = None
        if plain_dtype(arr.dtype):
            enc = message.array(ref, 0, arr.shape, arr.strides, arr.dtype.str)
        self.handed.append((arr, ref, enc))
        return arr

    def output(self, value: Any) -> None:
        """Encode the node's output into the message, when a later node reads it."""
        if not self.keep_output:
            return
        values = self.values
        if type(value) is np.ndarray:  # an input or an allocated array, as it is: no encoding
            for obj, _, enc in self.handed:
                if obj is value and enc is not None and message.describes(enc, value):
                    values[self.node_id] = enc
                    return
        held = set(self.taken)
        for enc in values.values():
            held.update(value_refs(enc))
        values[self.node_id] = self.codec.encode(value, held, self.taken)

    def settle(self) -> None:
        """After the call (the caller dropped its references to inputs and output): keep what
        the node kept, drop the outputs this task is the last reader of, give back the slots
        nothing in the message references any more."""
        values, taken = self.values, self.taken
        kept: set[SlotRef] | None = None
        if self.handed:
            holding = _held_elsewhere(self.handed, _ALONE)
            self.handed.clear()
            if holding:  # before anything leaves the message: abandon() still sees it all
                kept = self._keep(holding)
        freed = set(taken)
        if self.drop_after is None:
            for enc in values.values():
                freed.update(value_refs(enc))
            values.clear()
        else:
            for nid in self.drops:
                if nid in values:
                    freed.update(value_refs(values.pop(nid)))
        taken.clear()
        if freed:
            if values:
                freed.difference_update(message_refs(values))
            if kept:
                freed.difference_update(kept)
            release = self.registry.release
            for ref in freed:
                release(ref)
        if self.debug:
            for ref in message_refs(values):
                self.registry.get(ref.pool).check(ref.slot, ref.gen)
            self.kept.check()

    def _keep(self, holding: list[Handed]) -> set[SlotRef]:
        """The node still holds ``holding`` after its call: their slots become the node's;
        where the message still needs one after this task, the message gets a copy of it.
        Returns the slots kept."""
        self.kept.check_room([h[1] for h in holding])
        values, drop = self.values, self.drop_after
        needed: set[SlotRef] = set()
        if drop is not None:
            for nid, enc in values.items():
                if nid not in drop:
                    needed.update(value_refs(enc))
        for obj, ref, _ in holding:
            if ref in needed:
                self._copy_for_message(ref)
                needed.discard(ref)
            self.kept.keep(obj, ref)
        return {h[1] for h in holding}

    def _copy_for_message(self, ref: SlotRef) -> None:
        if not self.copied:
            self.copied = True
            log.debug(
                "node %r keeps a frame that a later node reads too: the message goes on with "
                "a copy of it (one copy per frame kept this way)", self.kept.node,
            )
        values = self.values
        nbytes = max(message.extent(enc, ref) for enc in values.values())
        if self.allocator is None:  # only a task that sends on gets here, and it has a pool
            raise RuntimeError("a kept frame needs a copy for a later node, but no pool")
        new = self.registry.copy(ref, nbytes, self.allocator)
        self.taken.append(new)  # the message's now; given back with it
        for nid, enc in values.items():
            values[nid] = message.moved(enc, ref, new)

    def sent(self) -> None:
        """The message left this task: its slots are the receiver's now."""
        self.values = {}

    def drop(self) -> None:
        """The message goes nowhere (realtime drop): give back its slots."""
        release = self.registry.release
        for ref in message_refs(self.values):
            release(ref)
        self.values = {}

    # -- teardown ---------------------------------------------------------------------------
    def abandon(self, pending: list[dict[int, Encoded]] | None = None) -> None:
        """After an error or an abort: give back the message in hand, the slots taken by the
        failed call and the values of ``pending`` messages (a merge's reorder buffer)."""
        refs = message_refs(self.values) | set(self.taken)
        for values in pending or ():
            refs |= message_refs(values)
        self.values = {}
        self.taken.clear()
        self.handed.clear()
        for ref in refs:
            try:
                self.registry.release(ref)
            except Exception:  # give back all the others
                continue

    def release_kept(self) -> None:
        """At the end of the task, once the node is closed: give back what it kept."""
        self.kept.release_all()
