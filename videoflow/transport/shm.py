"""Shared-memory slot pools: where frames live while they travel between tasks.

A pool is one POSIX shared-memory segment holding a header and ``nslots`` equal slots. It has
exactly one owner, the task that writes into it; that task alone takes slots (``acquire``).
Any process that read a slot may give it back (``release``): the engine arranges that at any
time exactly one process holds each used slot (the task that has the message referencing it,
or the task whose node kept it, see engine/slots.py), so a single-byte store per transition is
enough and no lock is needed.

Header layout (little endian): magic u64, nslots u32, pad u32, slot_size u64, then one state
byte per slot (0 free, 1 used by a message, 2 kept by a node past its call), then one u32
generation per slot, padded to a page. The generation grows each time a slot is taken;
handles carry it, so debug mode can tell a live slot from a reused one.

``nslots`` is what the plan proves a task may need at worst, not what it uses: a flow usually
keeps far fewer frames alive. The owner therefore takes the lowest free slot, so that the slots
ever used are always a prefix of the pool, and reserves memory (``posix_fallocate``) for that
prefix only, one slot when it is first needed. A 1080p reader feeding two workers plans 25
slots (155 MiB) and uses a handful; a full /dev/shm still fails with PoolExhaustedError when a
slot is reserved, never with SIGBUS on a write.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import mmap
import os
import struct
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import posix_ipc

from videoflow.errors import PoolExhaustedError, StaleSlotError
from videoflow.transport.names import pool_name

MAGIC = 0x31_4C_4F_4F_50_46_56  # "VFPOOL1"
_HEAD = struct.Struct("<QIIQ")
PAGE = mmap.PAGESIZE
FREE, USED, KEPT = 0, 1, 2
POISON = 0xDB  # debug mode fills released slots with it
MAX_POOLS = 4  # pools of one size class a task may make before it waits for a free slot


class SlotRef(NamedTuple):
    """Identifies one use of one slot: the pool's name, the slot index and its generation."""

    pool: str
    slot: int
    gen: int


def size_class(nbytes: int) -> int:
    """Round a request up so that similar sizes share a pool: to whole pages, and wasting at
    most 1/8 of a request of 8 pages or more."""
    if nbytes <= PAGE:
        return PAGE
    step = max(PAGE, 1 << (nbytes.bit_length() - 4))
    return -(-nbytes // step) * step


def _header_size(nslots: int) -> int:
    gens_at = -(-(_HEAD.size + nslots) // 4) * 4
    return -(-(gens_at + 4 * nslots) // PAGE) * PAGE


class SlotPool:
    """A mapped pool. ``create`` makes a new one (owner); ``attach`` maps an existing one."""

    def __init__(self, name: str, mm: mmap.mmap, owner: bool, fd: int = -1) -> None:
        magic, nslots, _, slot_size = _HEAD.unpack_from(mm, 0)
        if magic != MAGIC:
            raise ValueError(f"shared memory segment {name!r} is not a videoflow pool")
        self.name = name
        self.owner = owner
        self.nslots = nslots
        self.slot_size = slot_size
        self.mm = mm
        self.readonly = memoryview(mm).toreadonly()
        self.states_at = _HEAD.size
        self.data_at = _header_size(nslots)
        gens_at = -(-(_HEAD.size + nslots) // 4) * 4
        self.gens = np.ndarray((nslots,), dtype=np.uint32, buffer=mm, offset=gens_at)
        self.base = int(np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data)
        self.end = self.base + len(mm)
        self.reserved = 0  # owner: slots [0, reserved) have their memory reserved
        self._fd = fd  # owner: kept open to reserve slots, even after an abort unlinked the name

    @classmethod
    def create(cls, name: str, nslots: int, slot_size: int) -> SlotPool:
        """Create and map a pool, reserving its header (slots are reserved as first taken);
        PoolExhaustedError when /dev/shm lacks the room."""
        header = _header_size(nslots)
        size = header + nslots * slot_size
        shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, size=0)
        try:
            os.ftruncate(shm.fd, size)
            reserve(shm.fd, 0, header, name, "the header of pool")
            mm = mmap.mmap(shm.fd, size)
        except BaseException:
            shm.close_fd()
            shm.unlink()
            raise
        _HEAD.pack_into(mm, 0, MAGIC, nslots, 0, slot_size)
        return cls(name, mm, owner=True, fd=shm.fd)

    @classmethod
    def attach(cls, name: str) -> SlotPool:
        shm = posix_ipc.SharedMemory("/" + name)
        try:
            mm = mmap.mmap(shm.fd, shm.size)
        finally:
            shm.close_fd()
        return cls(name, mm, owner=False)

    # -- owner side ------------------------------------------------------------------------
    def acquire(self) -> int | None:
        """Take the lowest free slot (owner only), reserving its memory the first time; None
        when every slot is in use, PoolExhaustedError when /dev/shm has no room for it."""
        at = self.states_at
        found = self.mm.find(b"\x00", at, at + self.nslots)
        if found < 0:
            return None
        slot = found - at
        if slot >= self.reserved:
            self._reserve_through(slot)
        self.gens[slot] += 1
        self.mm[found] = USED
        return slot

    def _reserve_through(self, slot: int) -> None:
        start, end = self.slot_offset(self.reserved), self.slot_offset(slot + 1)
        slots = slot + 1 - self.reserved
        what = f"{slots} more slot{'s' if slots != 1 else ''} of pool"
        reserve(self._fd, start, end - start, self.name, what)
        self.reserved = slot + 1

    def slot_offset(self, slot: int) -> int:
        return self.data_at + slot * self.slot_size

    # -- any process -----------------------------------------------------------------------
    def release(self, slot: int, gen: int | None = None) -> None:
        """Give a slot back. With ``gen``, check that it was not already given back and reused."""
        if gen is not None and int(self.gens[slot]) != gen:
            raise StaleSlotError(
                f"slot {slot} of pool {self.name!r} was released twice "
                f"(generation {gen}, now {int(self.gens[slot])})"
            )
        self.mm[self.states_at + slot] = FREE

    def keep(self, slot: int) -> None:
        """Mark a used slot as kept by a node past its call (by the one process holding it)."""
        self.mm[self.states_at + slot] = KEPT

    def check(self, slot: int, gen: int, state: int = USED) -> None:
        """Raise StaleSlotError unless ``slot`` still holds generation ``gen`` in ``state``."""
        if self.mm[self.states_at + slot] != state or int(self.gens[slot]) != gen:
            raise StaleSlotError(
                f"slot {slot} of pool {self.name!r} was read after it was released "
                f"(handle generation {gen}, slot generation {int(self.gens[slot])})"
            )

    def count(self, state: int) -> int:
        """Slots in ``state`` now."""
        at = self.states_at
        return self.mm[at : at + self.nslots].count(state)

    def occupancy(self) -> int:
        """Slots in use now (by a message or kept by a node)."""
        return self.nslots - self.count(FREE)

    def reclaim(self) -> int:
        """Mark every slot free; returns how many were in use. Only for a pool that no live
        process can reach any more (its flow's tasks have all ended)."""
        at = self.states_at
        used = self.occupancy()
        self.mm[at : at + self.nslots] = bytes(self.nslots)
        return used

    def unlink(self) -> None:
        """Remove the pool's name (mappings stay valid); the owner also stops reserving."""
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory("/" + self.name)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def reserve(fd: int, offset: int, length: int, name: str, what: str) -> None:
    """posix_fallocate ``length`` bytes of the segment ``name`` (``what`` says what for), so
    that a full tmpfs fails here with PoolExhaustedError rather than with SIGBUS on a write."""
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        raise PoolExhaustedError(
            f"cannot reserve {length / 2**20:.2f} MiB of shared memory for {what} "
            f"{name!r}: {exc.strerror}; free space in /dev/shm (df -h /dev/shm; a Docker "
            "container has 64 MiB unless run with --shm-size), lower queue_depth or make the "
            "frames smaller"
        ) from None


class PoolRegistry:
    """The pools one process knows: its own and those it attached to, by name and by address."""

    def __init__(self, debug: bool = False) -> None:
        self.debug = debug
        self._by_name: dict[str, SlotPool] = {}
        self._bases: list[int] = []
        self._pools: list[SlotPool] = []

    def add(self, pool: SlotPool) -> None:
        self._by_name[pool.name] = pool
        i = bisect.bisect(self._bases, pool.base)
        self._bases.insert(i, pool.base)
        self._pools.insert(i, pool)

    def get(self, name: str) -> SlotPool:
        pool = self._by_name.get(name)
        if pool is None:
            pool = SlotPool.attach(name)
            self.add(pool)
        return pool

    def locate(self, address: int, nbytes: int) -> tuple[SlotPool, int, int] | None:
        """The (pool, slot, offset in slot) holding ``[address, address + nbytes)``, if any."""
        i = bisect.bisect(self._bases, address) - 1
        if i < 0:
            return None
        pool = self._pools[i]
        if address + nbytes > pool.end or address < pool.base + pool.data_at:
            return None
        rel = address - pool.base - pool.data_at
        slot, offset = divmod(rel, pool.slot_size)
        if offset + nbytes > pool.slot_size:
            return None
        return pool, slot, offset

    def release(self, ref: SlotRef) -> None:
        pool = self.get(ref.pool)
        if self.debug:
            if int(pool.gens[ref.slot]) == ref.gen:  # poison it: a view kept past the release
                start = pool.slot_offset(ref.slot)  # then reads 0xDB bytes, not a stale frame
                np.ndarray((pool.slot_size,), np.uint8, pool.mm, start).fill(POISON)
            pool.release(ref.slot, ref.gen)
        else:
            pool.release(ref.slot)

    def view(self, ref: SlotRef, offset: int, nbytes: int) -> memoryview:
        """A read-only view of ``nbytes`` at ``offset`` in the slot of ``ref``."""
        pool = self.get(ref.pool)
        if self.debug:
            pool.check(ref.slot, ref.gen)
        start = pool.slot_offset(ref.slot) + offset
        return pool.readonly[start : start + nbytes]

    def array(
        self,
        ref: SlotRef,
        offset: int,
        shape: tuple[int, ...],
        strides: tuple[int, ...],
        dtype: Any,
        writable: bool = False,
    ) -> np.ndarray:
        """An ndarray onto a slot, without copying; read-only unless ``writable`` (for the
        process that alone holds the slot and whose writes nobody else will read)."""
        pool = self.get(ref.pool)
        if self.debug:
            pool.check(ref.slot, ref.gen)
        return np.ndarray(
            shape,
            dtype=dtype,
            buffer=pool.mm if writable else pool.readonly,
            offset=pool.slot_offset(ref.slot) + offset,
            strides=strides,
        )

    def copy(self, ref: SlotRef, nbytes: int, allocator: SlotAllocator) -> SlotRef:
        """Copy the first ``nbytes`` of slot ``ref`` into a new slot of ``allocator``'s."""
        src = self.get(ref.pool)
        new = allocator.take(max(nbytes, 1))
        dst = self.get(new.pool)
        at, start = dst.slot_offset(new.slot), src.slot_offset(ref.slot)
        dst.mm[at : at + nbytes] = src.readonly[start : start + nbytes]
        return new

    def pools(self) -> list[SlotPool]:
        return list(self._pools)


class SlotAllocator:
    """The owner side: takes slots from this task's pools, creating pools per size class.

    ``nslots`` is the planned number of messages this task can have alive at once; a pool of
    that many slots never runs dry unless one message holds several slots or later nodes keep
    frames, in which case another pool of the class is made, and beyond ``max_pools`` the
    allocator waits for releases (calling ``on_wait`` so that the caller can bail out on a
    stop). It keeps no record of what it handed out: the caller owns every slot it takes.
    ``prefix`` is the task's pool family (``names.pool_family``); its pools are
    ``names.pool_name(prefix, n)``.
    """

    def __init__(
        self,
        registry: PoolRegistry,
        prefix: str,
        nslots: int,
        on_wait: Callable[[], None],
        max_pools: int = MAX_POOLS,
    ) -> None:
        self.registry = registry
        self.prefix = prefix
        self.nslots = nslots
        self.on_wait = on_wait
        self.max_pools = max_pools
        self._classes: dict[int, list[SlotPool]] = {}
        self._count = 0

    def owned(self) -> list[SlotPool]:
        return [p for pools in self._classes.values() for p in pools]

    def _new_pool(self, slot_size: int) -> SlotPool:
        self._count += 1
        pool = SlotPool.create(pool_name(self.prefix, self._count), self.nslots, slot_size)
        self.registry.add(pool)
        self._classes.setdefault(slot_size, []).append(pool)
        return pool

    def take(self, nbytes: int) -> SlotRef:
        """A slot of at least ``nbytes``; waits when all are in use."""
        return self._take(nbytes)[1]

    def _take(self, nbytes: int) -> tuple[SlotPool, SlotRef]:
        cls = size_class(nbytes)
        pools = self._classes.get(cls) or [self._new_pool(cls)]
        delay = 20e-6
        while True:
            for pool in pools:
                slot = pool.acquire()
                if slot is not None:
                    return pool, SlotRef(pool.name, slot, int(pool.gens[slot]))
            if len(pools) < self.max_pools:
                pools = [*pools, self._new_pool(cls)]
                continue
            if delay == 20e-6:
                self._check_kept(pools)
            self.on_wait()
            time.sleep(delay)
            delay = min(delay * 2, 2e-3)

    def _check_kept(self, pools: list[SlotPool]) -> None:
        """A full class whose slots are mostly kept by later nodes will not drain: say so."""
        kept = sum(pool.count(KEPT) for pool in pools)
        total = sum(pool.nslots for pool in pools)
        if total - kept < self.nslots:
            raise PoolExhaustedError(
                f"the shared memory of this node ran dry: later nodes keep {kept} of its "
                f"{total} frames past their calls, and the flow needs {self.nslots} in flight; "
                "a node that keeps many input frames should keep copies of them "
                "(frame.copy()) or keep fewer"
            )

    def array(self, shape: tuple[int, ...], dtype: Any) -> tuple[np.ndarray, SlotRef]:
        """A writable C-contiguous array in a new slot, and that slot."""
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise TypeError("arrays of Python objects cannot live in shared memory")
        nbytes = math.prod(shape) * dt.itemsize
        pool, ref = self._take(max(nbytes, 1))
        arr = np.ndarray(shape, dtype=dt, buffer=pool.mm, offset=pool.slot_offset(ref.slot))
        return arr, ref

    def write(self, data: Any) -> tuple[SlotRef, int]:
        """Copy a buffer into a new slot; returns its ref and the byte count."""
        mv = memoryview(data).cast("B")
        pool, ref = self._take(max(mv.nbytes, 1))
        start = pool.slot_offset(ref.slot)
        pool.mm[start : start + mv.nbytes] = mv
        return ref, mv.nbytes
