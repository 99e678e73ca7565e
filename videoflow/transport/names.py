"""Names of the flow's kernel objects, and the sweep that removes those of dead owners.

Every shared-memory segment and message queue of a flow is named
``vf.<owner pid>.<flow token>.<what>``, the owner being the process that runs the flow. Whatever
ends a flow, a later flow (or the owner's own cleanup) can find and unlink them by that prefix.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

SHM_DIR = "/dev/shm"
MQUEUE_DIR = "/dev/mqueue"
PREFIX = "vf."


def new_flow_prefix() -> str:
    """A prefix unique to one run of one flow: ``vf.<pid>.<token>``."""
    return f"{PREFIX}{os.getpid()}.{secrets.token_hex(4)}"


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_entries(prefix: str, directory: str = SHM_DIR) -> list[str]:
    """Names (without the leading slash) under ``directory`` that start with ``prefix``."""
    try:
        return sorted(n for n in os.listdir(directory) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def owned_entries(pid: int | None = None) -> list[str]:
    """Segments and queues of the flows run by process ``pid`` (default: this process)."""
    prefix = f"{PREFIX}{os.getpid() if pid is None else pid}."
    return list_entries(prefix, SHM_DIR) + list_entries(prefix, MQUEUE_DIR)


def _unlink_where(prefix: str, doomed: Callable[[str], bool]) -> list[str]:
    """Unlink the entries starting with ``prefix`` for which ``doomed(name)``; return them."""
    removed = []
    for directory in (SHM_DIR, MQUEUE_DIR):
        for name in list_entries(prefix, directory):
            if not doomed(name):
                continue
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def _owner_dead(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 3 and parts[1].isdigit() and not _owner_alive(int(parts[1]))


def sweep_dead_owners() -> list[str]:
    """Unlink segments and queues whose owner process is gone; returns what was removed."""
    return _unlink_where(PREFIX, _owner_dead)


def unlink_prefix(prefix: str) -> list[str]:
    """Unlink every segment and queue that starts with ``prefix``; returns what was removed."""
    return _unlink_where(prefix, lambda _: True)
