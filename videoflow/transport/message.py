"""The wire formats: every record that crosses a process boundary, named in one place.

Records travel as plain tuples (the native encoder writes exactly None, bool, int, float, str,
bytes, tuple, list, dict and SlotRef; anything else costs a pickle), so nothing here is a class:
each kind has a constructor and accessors, and no other module indexes a record by position.

Control queue, task -> next task: one record per message, bytes from ``dumps``, read by ``loads``

    DATA       (0, seq, meta, values)  seq: order number from a numbering sender, else 0;
                                       meta: {str: small value}; values: {node id: Encoded}
    STOP_FLOW  (1, 0, None, None)      end of the stream; a sender into K workers sends K, a
                                       merge forwards one once it has K
    BLOB       (2, ref, nbytes)        a DATA record too large for the queue: its ``dumps``
                                       bytes are the first ``nbytes`` of slot ``ref``; whoever
                                       receives it reads the DATA record and frees the slot

Encoded value, one per node output in a DATA record's ``values`` (transport/codec.py):

    INLINE     ("o", obj)                                  a small scalar, str or bytes
    ARRAY      ("a", ref, offset, shape, strides, dtype)   an ndarray in slot ``ref``; element 0
                                                           at byte ``offset``; dtype as dtype.str
    PICKLED    ("p", data, bufs)                           pickle protocol 5 bytes, inline
    PICKLED_IN_SLOT ("b", ref, nbytes, bufs)               the pickle bytes are in slot ``ref``
    bufs: [(ref, offset, nbytes), ...]                     the pickle's out-of-band buffers

Who frees a slot: a slot is referenced by one message only. While the message is in a task,
that task's ``MessageSlots`` (engine/slots.py) owns every slot it references and gives each
back exactly once: when no output left in the message references it, when the message is
dropped, or when the task is torn down. A node that keeps an input past its call takes that
slot over (see ``MessageSlots``). Messages left in queues after every task ended are freed by
the flow's owner (``engine.task.release_queued``).

Event pipe, task -> flow owner (a multiprocessing Connection; ``event(kind, *fields)``)

    ATTACHED   ("attached",)                           the task opened its queues
    READY      ("ready",)                              the node is open; waiting for GO
    DONE       ("done",)                               the task ended normally
    ERROR      ("error", phase, type_name, text, tb)   the node (or the task) raised in ``phase``
    LOG        ("log", record)                         a log record (engine/logs.py)
    THREADS    ("threads", names)                      the task ended, but these non-daemon
                                                       threads keep its process alive
    REFUSED    ("refused", text)                       the task cannot run this flow (it runs
                                                       another copy of videoflow); text says why

The owner dispatches on ``event_kind`` through one table (``ProcessEngine._on_event``); a new
kind is a constant and a constructor here and a handler there.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

from videoflow.transport import native
from videoflow.transport.shm import SlotRef

Message = tuple[Any, ...]
Encoded = tuple[Any, ...]
Event = tuple[Any, ...]
Buffer = tuple[SlotRef, int, int]  # (ref, offset, nbytes) of an out-of-band buffer

dumps: Callable[[Any], bytes]
loads: Callable[[Any], Any]

if native is not None:
    native.set_slotref(SlotRef)
    dumps = native.dumps
    loads = native.loads
else:
    dumps = functools.partial(pickle.dumps, protocol=5)
    loads = pickle.loads

# -- control messages ----------------------------------------------------------------------------
DATA, STOP_FLOW, BLOB = 0, 1, 2
STOP: Message = (STOP_FLOW, 0, None, None)


def data(seq: int, meta: dict[str, Any], values: dict[int, Encoded]) -> Message:
    return (DATA, seq, meta, values)


def blob(ref: SlotRef, nbytes: int) -> Message:
    return (BLOB, ref, nbytes)


def kind(msg: Message) -> int:
    """DATA, STOP_FLOW or BLOB."""
    return msg[0]


def seq(msg: Message) -> int:
    """The order number of a DATA record."""
    return msg[1]


def data_fields(msg: Message) -> tuple[int, dict[str, Any], dict[int, Encoded]]:
    """``(seq, meta, values)`` of a DATA record."""
    return msg[1], msg[2], msg[3]


def blob_fields(msg: Message) -> tuple[SlotRef, int]:
    """``(ref, nbytes)`` of a BLOB record."""
    return msg[1], msg[2]


# -- encoded values ------------------------------------------------------------------------------
INLINE, ARRAY, PICKLED, PICKLED_IN_SLOT = "o", "a", "p", "b"


def inline(obj: Any) -> Encoded:
    return (INLINE, obj)


def array(
    ref: SlotRef, offset: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: str
) -> Encoded:
    return (ARRAY, ref, offset, shape, strides, dtype)


def pickled(data: bytes, bufs: list[Buffer]) -> Encoded:
    return (PICKLED, data, bufs)


def pickled_in_slot(ref: SlotRef, nbytes: int, bufs: list[Buffer]) -> Encoded:
    return (PICKLED_IN_SLOT, ref, nbytes, bufs)


def form(enc: Encoded) -> str:
    """INLINE, ARRAY, PICKLED or PICKLED_IN_SLOT."""
    return enc[0]


def inline_value(enc: Encoded) -> Any:
    return enc[1]


def array_fields(
    enc: Encoded,
) -> tuple[SlotRef, int, tuple[int, ...], tuple[int, ...], str]:
    """``(ref, offset, shape, strides, dtype)`` of an ARRAY."""
    return enc[1], enc[2], enc[3], enc[4], enc[5]


def describes(enc: Encoded, arr: Any) -> bool:
    """True when the ARRAY ``enc`` still describes ``arr``, the array decoded from it (its
    shape, strides or dtype may have been set since)."""
    return (
        enc[3] == arr.shape and enc[4] == arr.strides and enc[5] == arr.dtype.str
    )


def pickle_fields(enc: Encoded) -> tuple[bytes | tuple[SlotRef, int], list[Buffer]]:
    """``(data, bufs)`` of a PICKLED value; for PICKLED_IN_SLOT ``data`` is ``(ref, nbytes)``
    of the slot that holds the pickle bytes."""
    if enc[0] == PICKLED:
        return enc[1], enc[2]
    return (enc[1], enc[2]), enc[3]


def value_refs(enc: Encoded) -> list[SlotRef]:
    """The slots an encoded value keeps alive."""
    f = enc[0]
    if f == INLINE:
        return []
    if f == ARRAY:
        return [enc[1]]
    refs = [b[0] for b in enc[-1]]
    if f == PICKLED_IN_SLOT:
        refs.append(enc[1])
    return refs


def message_refs(values: dict[int, Encoded]) -> set[SlotRef]:
    """Every slot the values of a DATA record keep alive."""
    refs: set[SlotRef] = set()
    for enc in values.values():
        refs.update(value_refs(enc))
    return refs


def moved(enc: Encoded, old: SlotRef, new: SlotRef) -> Encoded:
    """``enc`` with every reference to slot ``old`` pointing at ``new`` instead (same offsets):
    the message's copy of a slot that a node kept for itself."""
    f = enc[0]
    if f == INLINE:
        return enc
    if f == ARRAY:
        return (ARRAY, new, *enc[2:]) if enc[1] == old else enc
    bufs = [(new if r == old else r, o, n) for r, o, n in enc[-1]]
    if f == PICKLED:
        return (PICKLED, enc[1], bufs)
    return (PICKLED_IN_SLOT, new if enc[1] == old else enc[1], enc[2], bufs)


def span(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> tuple[int, int]:
    """``(low, end)``: the bytes an array of this layout touches, from element 0's offset
    (``low`` <= 0 with negative strides); ``(0, 0)`` for an empty array."""
    if not all(shape):
        return 0, 0
    low = high = 0
    for n, stride in zip(shape, strides, strict=True):
        if stride < 0:
            low += stride * (n - 1)
        else:
            high += stride * (n - 1)
    return low, high + itemsize


def extent(enc: Encoded, ref: SlotRef) -> int:
    """How many bytes from the start of slot ``ref`` the value ``enc`` may read (0: none)."""
    f = enc[0]
    end = 0
    if f == ARRAY:
        if enc[1] == ref:
            _, _, offset, shape, strides, dtype = enc
            end = offset + span(shape, strides, np.dtype(dtype).itemsize)[1]
    elif f in (PICKLED, PICKLED_IN_SLOT):
        for r, o, n in enc[-1]:
            if r == ref:
                end = max(end, o + n)
        if f == PICKLED_IN_SLOT and enc[1] == ref:
            end = max(end, enc[2])
    return end


# -- events, task -> owner ----------------------------------------------------------------------
ATTACHED, READY, DONE, ERROR, LOG = "attached", "ready", "done", "error", "log"
THREADS = "threads"
REFUSED = "refused"


def event(kind: str, *fields: Any) -> Event:
    """An event of ``kind`` with the fields its row above lists, in that order."""
    return (kind, *fields)


def error_event(phase: str, type_name: str, text: str, tb: str) -> Event:
    return (ERROR, phase, type_name, text, tb)


def event_kind(ev: Event) -> str:
    return ev[0]


def event_fields(ev: Event) -> tuple[Any, ...]:
    return ev[1:]
