"""Control messages to bytes and back: ``dumps`` and ``loads``.

A control message is ``(kind, seq, meta, values)`` of small Python values (see codec.py for
``values``). The pure-Python form is pickle protocol 5. The native form is a compact tagged
encoding of exactly the types a message usually holds, about 5x cheaper than pickle; a message
holding anything else (a numpy scalar in ``meta``, say) is pickled by the native path too, and
``loads`` reads both forms.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from typing import Any

from videoflow.transport import native
from videoflow.transport.shm import SlotRef

dumps: Callable[[Any], bytes]
loads: Callable[[Any], Any]

if native is not None:
    native.set_slotref(SlotRef)
    dumps = native.dumps
    loads = native.loads
else:
    dumps = functools.partial(pickle.dumps, protocol=5)
    loads = pickle.loads
