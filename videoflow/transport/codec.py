"""Turning node outputs into small, picklable descriptions and back.

An encoded value is one of the forms transport/message.py lists (INLINE, ARRAY, PICKLED,
PICKLED_IN_SLOT): small scalars and strings ride inline; an ndarray is a handle onto a slot (no
pickle at all); anything else is pickled with protocol 5, its large buffers out of band in
slots, and the pickle bytes themselves in a slot when they are too large to ride inline.

An array (or buffer) that already lives in a slot held by the message being processed is
referenced where it is: a pass-through node or a crop costs no copy. Anything else costs exactly
one copy into a slot of the encoding task.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from videoflow.transport import message
from videoflow.transport.message import ARRAY, INLINE, Encoded
from videoflow.transport.shm import PoolRegistry, SlotAllocator, SlotRef

_SCALARS = (int, float, bool, type(None), complex)
# An object handed to a node that holds a slot's memory: (object, slot, the encoding when the
# object is a whole array that the encoding describes, else None).
Handed = tuple[Any, SlotRef, Encoded | None]


def plain_dtype(dtype: np.dtype) -> bool:
    """True when ``dtype.str`` rebuilds the dtype exactly (no fields, sub-arrays or objects)."""
    return dtype.fields is None and dtype.subdtype is None and not dtype.hasobject


def _extent(arr: np.ndarray) -> tuple[int, int, int]:
    """(address of element 0, offset of the lowest byte, bytes spanned) of ``arr``'s memory.

    np.byte_bounds does the same at twice the cost; this is on the per-frame path.
    """
    address = arr.__array_interface__["data"][0]
    if arr.flags.c_contiguous:
        return address, 0, arr.nbytes
    low, end = message.span(arr.shape, arr.strides, arr.itemsize)
    return address, low, end - low


class Codec:
    """Encodes outputs into slots of this task and decodes inputs from any task's slots.

    It owns no slot: every slot an encode takes is appended to the caller's ``taken`` list
    before anything else can fail, and every object a decode hands out that lives in a slot is
    appended to the caller's ``handed`` list as ``(object, slot, encoding)`` (the encoding
    when the object is the whole decoded array, else None; engine/slots.py uses both).
    """

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

    def encode(self, value: Any, held: set[SlotRef], taken: list[SlotRef]) -> Encoded:
        """Describe ``value``; ``held`` are the slots the message (and this call) hold now, and
        the slots this takes for copies are appended to ``taken``."""
        if isinstance(value, _SCALARS) or (
            isinstance(value, (str, bytes)) and len(value) <= self.inline_max
        ):
            return message.inline(value)
        if type(value) is np.ndarray and value.nbytes and plain_dtype(value.dtype):
            return self._encode_array(value, held, taken)
        return self._encode_pickle(value, held, taken)

    def _encode_array(self, arr: np.ndarray, held: set[SlotRef], taken: list[SlotRef]) -> Encoded:
        address, low, span = _extent(arr)
        placed = self._place(address + low, span, held)
        if placed is not None:
            ref, offset = placed
            return message.array(ref, offset - low, arr.shape, arr.strides, arr.dtype.str)
        out, ref = self._allocator().array(arr.shape, arr.dtype)
        taken.append(ref)
        np.copyto(out, arr, casting="no")
        return message.array(ref, 0, out.shape, out.strides, out.dtype.str)

    def _write(self, data: Any, taken: list[SlotRef]) -> tuple[SlotRef, int]:
        ref, nbytes = self._allocator().write(data)
        taken.append(ref)
        return ref, nbytes

    def _encode_pickle(self, value: Any, held: set[SlotRef], taken: list[SlotRef]) -> Encoded:
        bufs: list[tuple[SlotRef, int, int]] = []

        def out_of_band(pb: pickle.PickleBuffer) -> bool:
            raw = pb.raw()
            if raw.nbytes < self.oob_min:
                return True
            address = np.frombuffer(raw, dtype=np.uint8).ctypes.data
            placed = self._place(address, raw.nbytes, held)
            if placed is None:
                ref, nbytes = self._write(raw, taken)
                bufs.append((ref, 0, nbytes))
            else:
                bufs.append((placed[0], placed[1], raw.nbytes))
            return False

        data = pickle.dumps(value, protocol=5, buffer_callback=out_of_band)
        if len(data) <= self.inline_max:
            return message.pickled(data, bufs)
        ref, nbytes = self._write(data, taken)
        return message.pickled_in_slot(ref, nbytes, bufs)

    # -- decode ----------------------------------------------------------------------------
    def decode(
        self, enc: Encoded, handed: list[Handed], writable: bool = False
    ) -> Any:
        """The value described by ``enc``. Arrays are views onto their slots, read-only unless
        ``writable``; each object that holds a slot's memory (an array, or a buffer that a
        pickle was rebuilt around) goes into ``handed`` with its slot."""
        form = message.form(enc)
        if form == INLINE:
            return message.inline_value(enc)
        registry = self.registry
        if form == ARRAY:
            ref, offset, shape, strides, dtype = message.array_fields(enc)
            arr = registry.array(ref, offset, shape, strides, dtype, writable)
            handed.append((arr, ref, enc))
            return arr
        data, bufs = message.pickle_fields(enc)
        buffers: list[np.ndarray] = []
        for ref, offset, nbytes in bufs:  # ndarrays: what keeps them alive can be counted
            buf = registry.array(ref, offset, (nbytes,), (1,), np.uint8, writable)
            handed.append((buf, ref, None))
            buffers.append(buf)
        if isinstance(data, tuple):  # the pickle bytes are in a slot too
            return pickle.loads(registry.view(data[0], 0, data[1]), buffers=buffers)
        return pickle.loads(data, buffers=buffers)
