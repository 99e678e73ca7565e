"""Names of the flow's kernel objects, and the sweep that removes those of dead owners.

This module is the only one that builds or reads these names. Every shared-memory segment and
message queue of a flow is named ``vf.<owner pid>.<flow token>.<what>`` (the *flow prefix*
``vf.<pid>.<token>``, the owner being the process that runs the flow), ``<what>`` being one of:

    q<link>                    the control queue of plan link <link>  (``queue_name``)
    <stage>-<worker>.<n>       the n-th slot pool (from 1) of task <worker> of stage <stage>
                               (``pool_family`` then ``pool_name``)
    lock                       the flow's lock entry, in /dev/shm only (``lock_name``)

``parse`` reads any of them back into a ``Name``. Whatever ends a flow, a later flow (or the
owner's own cleanup) can find and unlink its entries by the prefix.

Whether an owner is gone is decided by a lock, not by its pid: the owner creates
``/dev/shm/<prefix>.lock`` before any other entry and holds ``flock`` on it for the whole run;
the kernel drops the lock when the owner dies, however it dies. A pid means nothing across PID
namespaces (containers that share /dev/shm but not pids: a Kubernetes pod with a memory-backed
emptyDir, ``docker --ipc=host``), so a sweep that trusted pids would delete live flows of other
containers. Entries with no lock file are never swept: their owner is not provably gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import secrets

SHM_DIR = "/dev/shm"
MQUEUE_DIR = "/dev/mqueue"
PREFIX = "vf."
LOCK_SUFFIX = ".lock"


QUEUE, POOL, LOCK = "queue", "pool", "lock"


def new_flow_prefix() -> str:
    """A prefix unique to one run of one flow: ``vf.<pid>.<token>``."""
    return f"{PREFIX}{os.getpid()}.{secrets.token_hex(4)}"


def queue_name(flow: str, link: int) -> str:
    """The control queue of plan link ``link`` of the flow ``flow`` (its prefix)."""
    return f"{flow}.q{link}"


def pool_family(flow: str, stage: int, worker: int) -> str:
    """The common start of the pool names of one task (``pool_name`` adds the number)."""
    return f"{flow}.{stage}-{worker}"


def pool_name(family: str, number: int) -> str:
    """The ``number``-th slot pool (from 1) of the task whose pools start with ``family``."""
    return f"{family}.{number}"


def lock_name(flow: str) -> str:
    """The flow's lock entry in /dev/shm (see ``claim_prefix``)."""
    return flow + LOCK_SUFFIX


@dataclasses.dataclass(frozen=True)
class Name:
    """An entry name read back by ``parse``.

    entry:  the name itself (as in /dev/shm or /dev/mqueue, no leading slash).
    flow:   the flow prefix ``vf.<pid>.<token>``; owner_pid: its owner.
    kind:   QUEUE, POOL or LOCK.
    link:   the plan link of a QUEUE; stage, worker, number: the task and rank of a POOL.
    """

    entry: str
    flow: str
    owner_pid: int
    kind: str
    link: int | None = None
    stage: int | None = None
    worker: int | None = None
    number: int | None = None


_NAME = re.compile(
    re.escape(PREFIX)
    + r"(?P<pid>\d+)\.(?P<token>[0-9a-f]+)\."
    + r"(?:q(?P<link>\d+)|(?P<stage>\d+)-(?P<worker>\d+)\.(?P<number>\d+)|(?P<lock>lock))$"
)


def parse(name: str) -> Name | None:
    """What the entry ``name`` (without a leading slash) is, or None when it is not a name this
    module makes (another program's entry, a test's own segment)."""
    entry = name.lstrip("/")
    m = _NAME.match(entry)
    if m is None:
        return None
    flow, pid = f"{PREFIX}{m['pid']}.{m['token']}", int(m["pid"])
    if m["link"] is not None:
        return Name(entry, flow, pid, QUEUE, link=int(m["link"]))
    if m["lock"] is not None:
        return Name(entry, flow, pid, LOCK)
    return Name(
        entry, flow, pid, POOL,
        stage=int(m["stage"]), worker=int(m["worker"]), number=int(m["number"]),
    )


def flow_pools(flow: str) -> list[Name]:
    """The slot pools of the flow ``flow`` that exist now (queues and the lock left out)."""
    found = (parse(n) for n in list_entries(flow + ".", SHM_DIR))
    return [n for n in found if n is not None and n.kind == POOL]


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


_held: dict[str, int] = {}  # prefix -> descriptor of its lock, in the owner only


def _drop_inherited_locks() -> None:
    # A forked child shares the owner's lock; it must not keep the flow "alive" past its owner.
    for fd in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def claim_prefix(prefix: str) -> None:
    """Create the flow's lock entry and hold its lock until ``release_prefix``. Call it before
    creating any other entry of the flow."""
    path = os.path.join(SHM_DIR, lock_name(prefix))
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _held[prefix] = fd


def release_prefix(prefix: str) -> list[str]:
    """Unlink every entry of the flow (its lock last), then let go of the lock."""
    try:
        return unlink_prefix(prefix)
    finally:
        fd = _held.pop(prefix, None)
        if fd is not None:
            os.close(fd)


def sweep_prefix(prefix: str) -> list[str]:
    """Unlink the entries of the flow ``prefix`` if its owner is provably gone (its lock is
    free); returns what was removed (nothing while the owner lives, in any PID namespace)."""
    try:
        fd = os.open(os.path.join(SHM_DIR, lock_name(prefix)), os.O_RDWR)
    except OSError:
        return []
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: the owner lives
        os.close(fd)
        return []
    try:
        return unlink_prefix(prefix + ".")
    finally:
        os.close(fd)


def sweep_dead_owners() -> list[str]:
    """Unlink the entries of every flow whose owner is provably gone; returns them."""
    removed: list[str] = []
    for entry in list_entries(PREFIX, SHM_DIR):
        name = parse(entry)
        if name is not None and name.kind == LOCK:
            removed += sweep_prefix(name.flow)
    return removed


def unlink_prefix(prefix: str) -> list[str]:
    """Unlink every segment and queue that starts with ``prefix``, a lock entry last (so that a
    crash in between leaves a sweepable flow); returns what was removed."""
    removed = []
    for directory in (SHM_DIR, MQUEUE_DIR):
        names = list_entries(prefix, directory)
        for name in sorted(names, key=lambda n: n.endswith(LOCK_SUFFIX)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
                removed.append(name)
    return removed
