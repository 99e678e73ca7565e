"""Turning node outputs into small, picklable descriptions and back.

An encoded value is a tuple whose first item says its form:

    ("o", obj)                                 a small scalar or string, carried as is
    ("a", ref, offset, shape, strides, dtype)  an ndarray living in a slot (no pickle at all)
    ("p", data, bufs)                          pickle protocol 5 bytes, small enough to ride inline,
                                               with out-of-band buffers ``bufs`` in slots
    ("b", ref, nbytes, bufs)                   the same, but the pickle bytes are in a slot too

``bufs`` is a list of ``(ref, offset, nbytes)``. An array (or buffer) that already lives in a
slot held by the message being processed is referenced where it is: a pass-through node or a
crop costs no copy. Anything else costs exactly one copy into a slot of the encoding task.
"""

from __future__ import annotations

import gc
import pickle
import weakref
from typing import Any

import numpy as np

from videoflow.transport.shm import PoolRegistry, SlotAllocator, SlotRef

Encoded = tuple[Any, ...]
_SCALARS = (int, float, bool, type(None), complex)


def _plain_dtype(dtype: np.dtype) -> bool:
    """True when ``dtype.str`` rebuilds the dtype exactly (no fields, sub-arrays or objects)."""
    return dtype.fields is None and dtype.subdtype is None and not dtype.hasobject


def _extent(arr: np.ndarray) -> tuple[int, int, int]:
    """(address of element 0, offset of the lowest byte, bytes spanned) of ``arr``'s memory.

    np.byte_bounds does the same at twice the cost; this is on the per-frame path.
    """
    address = arr.__array_interface__["data"][0]
    if arr.flags.c_contiguous:
        return address, 0, arr.nbytes
    low = high = 0
    for n, stride in zip(arr.shape, arr.strides, strict=True):
        if stride < 0:
            low += stride * (n - 1)
        else:
            high += stride * (n - 1)
    return address, low, high - low + arr.itemsize


def value_refs(enc: Encoded) -> list[SlotRef]:
    """The slots an encoded value keeps alive."""
    form = enc[0]
    if form == "o":
        return []
    if form == "a":
        return [enc[1]]
    refs = [b[0] for b in enc[-1]]
    if form == "b":
        refs.append(enc[1])
    return refs


class Codec:
    """Encodes outputs into slots of this task and decodes inputs from any task's slots."""

    def __init__(
        self,
        registry: PoolRegistry,
        allocator: SlotAllocator | None,
        inline_max: int = 1024,
        oob_min: int = 4096,
    ) -> None:
        self.registry = registry
        self.allocator = allocator
        self.inline_max = inline_max
        self.oob_min = oob_min
        self.handed_out: list[tuple[weakref.ref[Any], SlotRef]] = []  # debug mode only

    # -- encode ----------------------------------------------------------------------------
    def _place(self, address: int, nbytes: int, held: set[SlotRef]) -> tuple[SlotRef, int] | None:
        """Where ``[address, address + nbytes)`` already lives in a slot this message holds."""
        found = self.registry.locate(address, nbytes)
        if found is None:
            return None
        pool, slot, offset = found
        ref = SlotRef(pool.name, slot, int(pool.gens[slot]))
        return (ref, offset) if ref in held else None

    def _allocator(self) -> SlotAllocator:
        if self.allocator is None:
            raise RuntimeError("this task has no slot allocator")
        return self.allocator

    def encode(self, value: Any, held: set[SlotRef]) -> Encoded:
        """Describe ``value``; ``held`` are the slots the message (and this call) hold now."""
        if isinstance(value, _SCALARS) or (
            isinstance(value, (str, bytes)) and len(value) <= self.inline_max
        ):
            return ("o", value)
        if type(value) is np.ndarray and value.nbytes and _plain_dtype(value.dtype):
            return self._encode_array(value, held)
        return self._encode_pickle(value, held)

    def _encode_array(self, arr: np.ndarray, held: set[SlotRef]) -> Encoded:
        address, low, span = _extent(arr)
        placed = self._place(address + low, span, held)
        if placed is not None:
            ref, offset = placed
            return ("a", ref, offset - low, arr.shape, arr.strides, arr.dtype.str)
        out = self._allocator().array(arr.shape, arr.dtype)
        np.copyto(out, arr, casting="no")
        return ("a", self._allocator().fresh[-1], 0, out.shape, out.strides, out.dtype.str)

    def _encode_pickle(self, value: Any, held: set[SlotRef]) -> Encoded:
        bufs: list[tuple[SlotRef, int, int]] = []

        def out_of_band(pb: pickle.PickleBuffer) -> bool:
            raw = pb.raw()
            if raw.nbytes < self.oob_min:
                return True
            address = np.frombuffer(raw, dtype=np.uint8).ctypes.data
            placed = self._place(address, raw.nbytes, held)
            if placed is None:
                ref, nbytes = self._allocator().write(raw)
                bufs.append((ref, 0, nbytes))
            else:
                bufs.append((placed[0], placed[1], raw.nbytes))
            return False

        data = pickle.dumps(value, protocol=5, buffer_callback=out_of_band)
        if len(data) <= self.inline_max:
            return ("p", data, bufs)
        ref, nbytes = self._allocator().write(data)
        return ("b", ref, nbytes, bufs)

    # -- decode ----------------------------------------------------------------------------
    def decode(self, enc: Encoded) -> Any:
        """The value described by ``enc``; arrays are read-only views onto their slots."""
        form = enc[0]
        if form == "o":
            return enc[1]
        if form == "a":
            arr = self.registry.array(enc[1], enc[2], enc[3], enc[4], enc[5])
            if self.registry.debug:
                self.handed_out.append((weakref.ref(arr), enc[1]))
            return arr
        view = self.registry.view
        buffers: list[Any] = [view(ref, offset, nbytes) for ref, offset, nbytes in enc[-1]]
        if self.registry.debug:  # ndarrays, unlike memoryviews, can be watched by weakref
            buffers = [np.frombuffer(b, dtype=np.uint8) for b in buffers]
            refs = [r[0] for r in enc[-1]]
            self.handed_out += [(weakref.ref(b), r) for b, r in zip(buffers, refs, strict=True)]
        data = enc[1] if form == "p" else view(enc[1], 0, enc[2])
        return pickle.loads(data, buffers=buffers)

    def still_referenced(self) -> list[SlotRef]:
        """(Debug mode) The slots of the values decoded since the last call that something
        still references: called once a node's call is over and its output encoded, a slot
        listed here is one the node kept a view of, to read after it is released."""
        watched, self.handed_out = self.handed_out, []
        kept = [ref for alive, ref in watched if alive() is not None]
        if kept:  # a reference cycle can hold a view until the next collection
            gc.collect()
            kept = [ref for alive, ref in watched if alive() is not None]
        return kept
