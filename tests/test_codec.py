"""The value codec and slot pools, in one process: what is copied, what is referenced."""

from __future__ import annotations

import os

import numpy as np
import pytest

from videoflow.transport.codec import Codec
from videoflow.transport.message import value_refs
from videoflow.transport.shm import PoolRegistry, SlotAllocator, SlotPool, size_class


@pytest.fixture
def codec():
    registry = PoolRegistry()
    allocator = SlotAllocator(registry, f"vf.{os.getpid()}.codec", 4, on_wait=lambda: None)
    yield Codec(registry, allocator), allocator
    for pool in allocator.owned():
        pool.unlink()


VIEWS = {
    "whole": lambda a: a,
    "crop": lambda a: a[10:100, 20:300],
    "flipped": lambda a: a[::-1],
    "strided channel": lambda a: a[::2, ::-3, 1],
    "mirrored row": lambda a: a[5:6, :, ::-1],
    "transposed": lambda a: a.T,
}


@pytest.mark.parametrize("view", VIEWS)
def test_views_of_a_held_slot_are_referenced_not_copied(codec, view):
    codec, allocator = codec
    frame, ref = allocator.array((120, 320, 3), np.uint8)
    frame[...] = np.arange(frame.size, dtype=np.uint32).reshape(frame.shape) % 251
    value = VIEWS[view](frame)
    taken: list = []
    enc = codec.encode(value, {ref}, taken)
    assert enc[0] == "a" and value_refs(enc) == [ref]
    assert taken == []  # no new slot: zero copies
    handed: list = []
    out = codec.decode(enc, handed)
    assert np.array_equal(out, value) and out.strides == value.strides
    assert not out.flags.writeable and handed == [(out, ref, enc)]
    assert codec.decode(enc, [], writable=True).flags.writeable


def test_arrays_outside_held_slots_cost_one_copy(codec):
    codec, allocator = codec
    other, _ = allocator.array((8, 8), np.float32)  # a slot this message does not hold
    plain = np.arange(64, dtype=np.float32).reshape(8, 8)
    for value in (plain, other):
        taken: list = []
        enc = codec.encode(value, set(), taken)
        assert enc[0] == "a" and value_refs(enc) == taken and len(taken) == 1
        assert np.array_equal(codec.decode(enc, []), value)


def test_objects_with_buffers_go_out_of_band_and_big_pickles_to_a_blob(codec):
    codec, _ = codec
    names = [f"name {i} " * 5 for i in range(100)]
    value = {"frame": np.ones((64, 64, 3), np.uint8), "names": names, "n": 3}
    taken: list = []
    enc = codec.encode(value, set(), taken)
    assert enc[0] == "b" and len(value_refs(enc)) == 2  # the pickle and one buffer
    assert sorted(value_refs(enc)) == sorted(taken)
    handed: list = []
    out = codec.decode(enc, handed)
    assert out["names"] == value["names"] and np.array_equal(out["frame"], value["frame"])
    assert [h[1] for h in handed] == [enc[-1][0][0]]  # the buffer, not the pickle bytes
    assert codec.encode(7, set(), []) == ("o", 7)
    small = codec.encode({"a": 1}, set(), [])
    assert small[0] == "p" and codec.decode(small, []) == {"a": 1}


def test_structured_dtypes_keep_their_fields(codec):
    codec, _ = codec
    value = np.zeros(4, dtype=[("a", "<i4"), ("b", "<f8")])
    value["a"] = [1, 2, 3, 4]
    out = codec.decode(codec.encode(value, set(), []), [])
    assert out.dtype == value.dtype and list(out["a"]) == [1, 2, 3, 4]


def test_size_classes_round_to_pages_and_waste_at_most_an_eighth_above_8_pages():
    for n in (1, 4096, 4097, 40_000, 6_220_800, 24_883_200, 10**9):
        c = size_class(n)
        assert c >= n and c % 4096 == 0
        assert n < 8 * 4096 or c <= n * 1.125


def test_a_pool_reserves_memory_only_for_the_slots_it_has_used():
    """The plan sizes pools for the worst case; only the prefix of slots in use gets memory."""
    slot_size = 1 << 20
    pool = SlotPool.create(f"vf.{os.getpid()}.lazy", 8, slot_size)
    try:
        path = f"/dev/shm/{pool.name}"
        header_blocks = os.stat(path).st_blocks
        taken = [pool.acquire() for _ in range(3)]
        assert taken == [0, 1, 2] and pool.reserved == 3
        reserved_bytes = (os.stat(path).st_blocks - header_blocks) * 512
        assert reserved_bytes == 3 * slot_size  # not 8: the rest stays unreserved
        pool.release(1)
        assert pool.acquire() == 1  # the lowest free slot, so the used slots stay a prefix
        assert pool.reserved == 3
        for slot in (0, 1, 2):
            pool.release(slot)
        assert pool.acquire() == 0 and pool.reserved == 3
    finally:
        pool.unlink()


def test_the_owner_still_reserves_slots_after_its_pool_name_is_removed():
    """An abort unlinks pools by name while their tasks finish a call: no error from that."""
    import posix_ipc

    pool = SlotPool.create(f"vf.{os.getpid()}.gone", 4, 1 << 16)
    posix_ipc.unlink_shared_memory("/" + pool.name)
    assert [pool.acquire() for _ in range(4)] == [0, 1, 2, 3] and pool.reserved == 4
    assert pool.acquire() is None
    pool.unlink()  # already gone: only closes the owner's descriptor
