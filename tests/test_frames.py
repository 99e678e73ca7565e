"""Frames a node may draw on and frames it may keep.

A node may write into an input frame when it is that frame's last reader (zero copies); when a
later node reads the same frame, the frame is read-only and ``make_writable`` gives a copy, so
that nothing the node writes changes what the later node sees. A frame a node keeps past its
call (as it is, a slice of it, inside a dict) stays valid and unchanged until the node lets it
go, whether or not a later node reads it too; a node that keeps too many gets an error naming
it and how many it holds. The first tests run whole flows; the last ones drive the one owner of
a message's slots (engine/slots.py) in this process, to see which slot goes where.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from nodes import (
    CheckFrames,
    DrawInPlace,
    DrawWritable,
    Hoarder,
    KeepLast,
    KeepLastConsumer,
)

from videoflow import FlowError
from videoflow.config import FlowConfig
from videoflow.core import BATCH, Flow, ProcessorNode
from videoflow.engine.plan import CONSUMER, PROCESSOR, PRODUCER, StageSpec, build_plan
from videoflow.engine.slots import MessageSlots
from videoflow.producers import SyntheticFrameProducer
from videoflow.transport import message
from videoflow.transport.codec import Codec
from videoflow.transport.message import value_refs
from videoflow.transport.shm import FREE, KEPT, USED, PoolRegistry, SlotAllocator

SHAPE = (48, 64, 3)


def run(sources, sinks, **options):
    flow = Flow(sources, sinks, flow_type=BATCH, flow_options=options or None)
    flow.run()
    try:
        flow.join(timeout=60)
        err = None
    except FlowError as exc:
        err = exc
    return flow, err


def checks(path) -> list[str]:
    with open(path) as f:
        return f.read().split("\n")[:-1]


# -- drawing -------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("drawer", ["in place", "make_writable"])
def test_the_last_reader_draws_on_its_input_frame(tmp_path, drawer, k):
    out = tmp_path / "checks.txt"
    a = SyntheticFrameProducer(SHAPE, count=50, name="source")
    node = DrawInPlace if drawer == "in place" else DrawWritable
    args = () if drawer == "in place" else (True,)  # make_writable must give the frame itself
    b = node(*args, nb_tasks=k, name="draw")(a)
    c = CheckFrames(str(out), ("marked",))(b)
    flow, err = run([a], [c])
    assert err is None, str(err)
    assert checks(out) == [f"{i} ok" for i in range(50)]
    assert flow.stats().pool_slots_in_use == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("k", [1, 2])
def test_a_node_that_is_not_the_last_reader_draws_on_a_copy(tmp_path, k):
    # C reads the source's frame and B's drawing: B's make_writable must copy, and C must see
    # the source's frame exactly as it was made.
    out = tmp_path / "checks.txt"
    a = SyntheticFrameProducer(SHAPE, count=50, name="source")
    b = DrawWritable(False, nb_tasks=k, name="draw")(a)
    c = CheckFrames(str(out), ("clean", "marked"))(a, b)
    flow, err = run([a], [c])
    assert err is None, str(err)
    assert checks(out) == [f"{i} ok" for i in range(50)]
    assert flow.stats().pool_slots_in_use == 0


@pytest.mark.timeout(60)
def test_writing_into_a_frame_a_later_node_reads_is_a_clear_error(tmp_path):
    out = tmp_path / "checks.txt"
    a = SyntheticFrameProducer(SHAPE, count=20, name="source")
    b = DrawInPlace(name="drawer")(a)
    c = CheckFrames(str(out), ("clean", "marked"))(a, b)
    _, err = run([a], [c])
    assert err is not None and err.node == "drawer"
    text = str(err).split("\n\nTraceback in the task process")[0]  # the headline
    assert "read-only" in text and "make_writable" in text and "Bad argument" not in text, text
    assert "later node" in text, text
    assert not [line for line in checks(out) if not line.endswith(" ok")]  # nothing drawn seen


def test_make_writable_outside_a_flow():
    node = ProcessorNode()
    frame = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert node.make_writable(frame) is frame  # writable: the same memory
    frozen = frame.copy()
    frozen.flags.writeable = False
    copy = node.make_writable(frozen)  # read-only: one copy
    assert copy.flags.writeable and np.array_equal(copy, frozen)
    assert not np.shares_memory(copy, frozen)
    crop = frame[1:3, ::2]
    assert node.make_writable(crop) is crop
    with pytest.raises(TypeError, match="numpy array"):
        node.make_writable([1, 2, 3])  # type: ignore[arg-type]


# -- keeping -------------------------------------------------------------------------------------

# calls made with 0, 1, ... 15 frames kept, then 16 for the rest, and the check at close()
CHECKED_200 = sum(min(i, 16) for i in range(200)) + 16


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["frame", "slice", "dict"])
@pytest.mark.parametrize("reader", ["last", "not last"])
def test_keeping_16_frames_across_200(tmp_path, how, reader):
    # The keeper checks all 16 kept frames at every call and at close(); a later node reads
    # the same frames ("not last") and checks them too.
    kept, out = tmp_path / "kept.txt", tmp_path / "checks.txt"
    a = SyntheticFrameProducer(SHAPE, count=200, name="source")
    if reader == "last":
        sink = KeepLastConsumer(str(kept), 16, how, name="keeper")(a)
    else:
        b = KeepLast(str(kept), 16, how, name="keeper")(a)
        sink = CheckFrames(str(out), ("clean",))(b)
    flow, err = run([a], [sink])
    assert err is None, str(err)
    assert checks(kept) == [f"kept 16 checked {CHECKED_200}"]
    if reader == "not last":
        assert checks(out) == [f"{i} ok" for i in range(200)]
    stats = flow.stats()
    assert stats.pool_slots_in_use == 0 and stats.delivered == 200


@pytest.mark.timeout(60)
def test_keeping_under_debug_mode(tmp_path):
    kept = tmp_path / "kept.txt"
    a = SyntheticFrameProducer(SHAPE, count=100, name="source")
    b = KeepLastConsumer(str(kept), 16, "slice", name="keeper")(a)
    flow, err = run([a], [b], debug=True)
    assert err is None, str(err)
    assert checks(kept)[0].startswith("kept 16 ")
    assert flow.stats().pool_slots_in_use == 0


@pytest.mark.timeout(60)
def test_a_node_that_keeps_too_many_frames_is_named_with_their_count(tmp_path):
    a = SyntheticFrameProducer(SHAPE, count=500, name="source")
    b = Hoarder(name="hoarder")(a)
    _, err = run([a], [b])
    assert err is not None and err.node == "hoarder", str(err)
    held = re.search(r"node 'hoarder' holds (\d+) frames", str(err))
    assert held is not None, str(err)
    specs = [StageSpec(None, "source", PRODUCER, 1, ()), StageSpec(None, "h", CONSUMER, 2, (1,))]
    source_slots = build_plan(specs, FlowConfig()).stages[0].nslots
    assert int(held.group(1)) == 3 * source_slots + 1  # the room of the source's 4 pools, less 1
    assert "PoolExhaustedError" in str(err) and "frame.copy()" in str(err)


# -- the slot owner, in one process --------------------------------------------------------------


@pytest.fixture
def unit():
    """``make(c_reads)`` -> (slots of stage B, the source's allocator, registry) for the chain
    A (producer, id 1) -> B (processor, id 2, reads A) -> C (consumer, reads ``c_reads``)."""
    registry = PoolRegistry()
    allocators: list[SlotAllocator] = []

    def make(c_reads: tuple[int, ...]) -> tuple[MessageSlots, SlotAllocator, PoolRegistry]:
        specs = [
            StageSpec(None, "A", PRODUCER, 1, ()),
            StageSpec(None, "B", PROCESSOR, 2, (1,)),
            StageSpec(None, "C", CONSUMER, 3, c_reads),
        ]
        stage = build_plan(specs, FlowConfig()).stages[1]
        pid = os.getpid()
        source = SlotAllocator(registry, f"vf.{pid}.unit.0-0", 8, on_wait=lambda: None)
        mine = SlotAllocator(registry, f"vf.{pid}.unit.1-0", 8, on_wait=lambda: None)
        allocators.extend((source, mine))
        return MessageSlots(stage, registry, mine, Codec(registry, mine)), source, registry

    yield make
    for allocator in allocators:
        for pool in allocator.owned():
            pool.unlink()


def frame_message(source: SlotAllocator, fill: int = 7) -> dict[int, message.Encoded]:
    frame, ref = source.array(SHAPE, np.uint8)
    frame[...] = fill
    return {1: message.array(ref, 0, SHAPE, frame.strides, frame.dtype.str)}


def states(registry: PoolRegistry) -> list[int]:
    return sorted(s for pool in registry.pools() for s in pool.mm[pool.states_at:][:pool.nslots])


def test_the_last_reader_writes_in_place_and_passes_the_frame_on_without_a_copy(unit):
    slots, source, registry = unit((2,))
    values = frame_message(source)
    (ref,) = value_refs(values[1])
    slots.hold(values)
    (frame,) = slots.inputs()
    assert frame.flags.writeable
    frame[0] = 9
    slots.output(frame)
    del frame
    slots.settle()
    assert list(values) == [2] and value_refs(values[2]) == [ref]  # the same slot: no copy
    assert states(registry).count(USED) == 1
    slots.drop()
    assert set(states(registry)) == {FREE}


def test_a_reader_before_the_last_gets_a_read_only_frame(unit):
    slots, source, registry = unit((1, 2))
    slots.hold(frame_message(source))
    (frame,) = slots.inputs()
    assert not frame.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        frame[0] = 1
    slots.output(None)
    del frame
    slots.settle()
    slots.drop()
    assert set(states(registry)) == {FREE}


def test_a_frame_kept_by_its_last_reader_keeps_its_slot_until_let_go(unit):
    slots, source, registry = unit((2,))
    slots.hold(frame_message(source, fill=5))
    (frame,) = slots.inputs()
    kept = frame[1:]  # a slice holds the frame
    slots.output(None)
    del frame
    slots.settle()
    assert states(registry).count(KEPT) == 1 and len(slots.kept) == 1
    slots.drop()
    slots.hold(frame_message(source, fill=6))  # the next frame takes another slot
    (frame,) = slots.inputs()
    slots.output(None)
    del frame
    slots.settle()
    slots.drop()
    assert (kept == 5).all()
    del kept  # the last reference: the slot goes back
    assert set(states(registry)) == {FREE} and len(slots.kept) == 0


def test_a_frame_kept_by_a_reader_before_the_last_goes_on_as_a_copy(unit):
    slots, source, registry = unit((1, 2))
    values = frame_message(source, fill=5)
    (original,) = value_refs(values[1])
    slots.hold(values)
    (frame,) = slots.inputs()
    kept = {"frame": frame}
    slots.output(None)
    del frame
    slots.settle()
    (moved,) = value_refs(values[1])
    assert moved != original and moved.pool.endswith("unit.1-0.1")  # a slot of this task's
    assert (registry.array(moved, 0, SHAPE, (192, 3, 1), "|u1") == 5).all()
    assert registry.get(original.pool).count(KEPT) == 1
    slots.sent()
    registry.release(moved)  # what C does when it is done with the message
    assert (kept["frame"] == 5).all()
    del kept
    assert set(states(registry)) == {FREE}


def test_a_kept_allocated_array_is_kept_and_abandon_gives_back_the_rest(unit):
    slots, source, registry = unit((2,))
    slots.hold(frame_message(source))
    (frame,) = slots.inputs()
    scratch = slots.allocate((4, 4), np.uint8)  # kept past the call: a buffer of the node's
    slots.allocate((4, 4), np.uint8)  # dropped at once
    slots.output(None)
    del frame
    slots.settle()
    assert states(registry).count(KEPT) == 1 and states(registry).count(USED) == 0
    slots.hold(frame_message(source))
    slots.inputs()
    slots.allocate((8, 8), np.uint8)
    slots.abandon()  # the node raised: the message and what its call took go back
    assert states(registry).count(USED) == 0 and states(registry).count(KEPT) == 1
    slots.release_kept()  # the task ends
    assert set(states(registry)) == {FREE}
    assert scratch.shape == (4, 4)


def test_an_input_passed_on_as_it_is_keeps_its_encoding_unless_its_layout_changed(unit):
    slots, source, _ = unit((2,))
    values = frame_message(source)
    first = values[1]
    slots.hold(values)
    (frame,) = slots.inputs()
    slots.output(frame)  # the very object decoded from ``first``: its encoding, no work
    del frame
    slots.settle()
    assert values[2] is first
    slots.drop()
    values = frame_message(source)
    second = values[1]
    slots.hold(values)
    (frame,) = slots.inputs()
    frame.shape = (48 * 64, 3)  # the same object, described anew
    slots.output(frame)
    del frame
    slots.settle()
    assert values[2][3] == (48 * 64, 3) and value_refs(values[2]) == value_refs(second)
    slots.drop()
