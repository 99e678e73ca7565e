"""Transport: shared-memory slot pools, value codec, control queues, kernel object names.

Internal: nothing here is a public API (users go through ``videoflow.core``; which hot path is
in use is ``videoflow.native_status()`` and ``videoflow info``).

The hot path (control queues and control-message encoding) has two implementations with one
interface: the C extension ``videoflow._native`` (a futex ring in shared memory and a compact
message encoding) and the pure-Python reference (POSIX message queues and pickle). The choice is
made once, here, at import: native when the extension was built, unless ``VIDEOFLOW_NATIVE=0``.
Every process of a flow makes the same choice, since tasks get the owner's environment.
"""

from __future__ import annotations

import os
from types import ModuleType

native: ModuleType | None = None
_status = "off (pure Python)"

if os.environ.get("VIDEOFLOW_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
    _status = "off (pure Python: VIDEOFLOW_NATIVE=0)"
else:
    try:
        import videoflow._native

        native = videoflow._native
    except ImportError as exc:
        _status = f"off (pure Python: extension not built: {exc})"
    else:
        _status = "on (videoflow._native: futex ring queues, C message encoding)"


def native_status() -> str:
    """Which implementation of the transport's hot path is in use, and why."""
    return _status
