"""The transport's two implementations: native (videoflow._native) and the pure-Python fallback.

Control queues are tested through ``ControlQueue`` for both kinds; the ring is put under heavy
contention from several processes, counting every record. Message encoding must round-trip
exactly what pickle round-trips.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import secrets
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videoflow.transport import native, native_status
from videoflow.transport.queue import ControlQueue, MessageQueue, RingQueue
from videoflow.transport.shm import SlotRef

needs_native = pytest.mark.skipif(native is None, reason="videoflow._native is not in use")
KINDS = [MessageQueue, pytest.param(RingQueue, marks=needs_native)]


def _name(what: str = "q") -> str:
    return f"vf.{os.getpid()}.{secrets.token_hex(4)}.{what}"


@pytest.fixture
def make_queue():
    made: list[ControlQueue] = []

    def make(kind, **kw):
        q = kind(_name(), create=True, **kw)
        made.append(q)
        return q

    yield make
    for q in made:
        q.unlink()
        q.close()


# -- one process ------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_fifo_bounded_and_timeouts(make_queue, kind, depth):
    q = make_queue(kind, depth=depth, message_size=512)
    assert q.max_message_size == 512
    assert q.get(0) is None
    for i in range(depth):
        assert q.put(b"m%d" % i, 0)
    assert len(q) == depth
    assert not q.put(b"x", 0)  # full: a ring of depth 1 once took a second record here
    t0 = time.monotonic()
    assert not q.put(b"x", 0.05)
    assert 0.04 <= time.monotonic() - t0 < 1.0
    peer = type(q)(q.name)  # opened by name, as a task does
    try:
        assert [peer.get(0) for _ in range(depth)] == [b"m%d" % i for i in range(depth)]
    finally:
        peer.close()
    t0 = time.monotonic()
    assert q.get(0.05) is None
    assert 0.04 <= time.monotonic() - t0 < 1.0
    assert q.put(b"", 0) and q.get(0) == b""


@pytest.mark.parametrize("kind", KINDS)
def test_record_size_limit(make_queue, kind):
    q = make_queue(kind, depth=2, message_size=512)
    assert q.put(b"a" * 512, 0)
    assert q.get(0) == b"a" * 512
    with pytest.raises((ValueError, OSError)):
        q.put(b"a" * 513, 0)


def test_control_queue_builds_the_kind_in_use(make_queue):
    q = make_queue(ControlQueue)
    assert isinstance(q, RingQueue if native is not None else MessageQueue)
    if native is not None:  # under the flow's prefix in /dev/shm, where cleanup looks
        assert os.path.exists("/dev/shm/" + q.name)


@needs_native
def test_ring_rejects_foreign_memory():
    buf = bytearray(4096 + 64)
    with pytest.raises(ValueError):
        native.Ring(memoryview(buf)[0:4096])  # not a ring (and perhaps misaligned)
    big = np.zeros(native.ring_size(4, 256) + 64, dtype=np.uint8)
    at = (-big.ctypes.data) % 64
    region = big[at : at + native.ring_size(4, 256)]
    ring = native.Ring(region, 4, 256, create=True)
    assert ring.capacity == 4 and ring.record_size == 256
    with pytest.raises(ValueError):
        native.Ring(region[: native.ring_size(4, 256) - 64])  # too short for its header
    ring.close()
    with pytest.raises(ValueError):
        ring.put(b"x", 0)


def test_native_status_and_the_switch():
    code = "from videoflow.transport import native, native_status; print(native is None)"
    env = {**os.environ, "VIDEOFLOW_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr
    assert native_status().startswith("on" if native is not None else "off")


# -- message encoding -------------------------------------------------------------------------
def _roundtrip(msg):
    from videoflow.transport import message

    data = message.dumps(msg)
    back = message.loads(data)
    _same(back, msg)
    return data


def _same(a, b) -> None:
    """Equal, and of the same types all the way down (a SlotRef stays a SlotRef)."""
    assert type(a) is type(b) and a == b, (a, b)
    if isinstance(a, (tuple, list)):
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, dict):
        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
            _same(ka, kb)
            _same(va, vb)


def test_engine_messages_roundtrip():
    ref = SlotRef("vf.1.abcd.1-0.1", 3, 17)
    values = {
        4: ("a", ref, 8, (1080, 1920, 3), (5760, 3, 1), "|u1"),
        5: ("o", 2.5),
        6: ("p", b"\x80\x05pickled", [(ref, 0, 4096)]),
        7: ("b", ref, 9000, []),
    }
    msg = (0, 12, {"index": 12, "timestamp_ms": 40.0, "name": "caméra"}, values)
    data = _roundtrip(msg)
    if native is not None:
        assert data[0] == 0xF6  # the compact form, not pickle
        assert type(native.loads(data)[3][4][1]) is SlotRef
    _roundtrip((1, 0, None, None))
    _roundtrip((2, ref, 9000))


def test_unusual_values_fall_back_to_pickle():
    for meta in ({"x": np.float64(1.5)}, {"big": 2**70}, {"s": "\udcff"}, {"c": 1j}):
        _roundtrip((0, 1, meta, {}))


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.integers() | st.text(max_size=5), inner, max_size=4)
        | st.builds(SlotRef, st.text(max_size=10), st.integers(0, 99), st.integers(0, 2**32))
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_encoding_roundtrips_like_pickle(value):
    _roundtrip(value)


@needs_native
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_decoding_garbage_raises_cleanly(data):
    with contextlib.suppress(ValueError, TypeError, UnicodeDecodeError, RuntimeError):
        native.loads(b"\xf6\x01" + data)


# -- several processes ------------------------------------------------------------------------
_REC = struct.Struct("<II")  # producer id, sequence number


def _producer(name: str, pid: int, count: int, size: int) -> None:
    q = ControlQueue(name)
    pad = bytes(size - _REC.size)
    for i in range(count):
        data = _REC.pack(pid, i) + pad[: i % len(pad)]
        while not q.put(data, 0.05):
            pass
    q.close()


def _consumer(name: str, out: str) -> None:
    q = ControlQueue(name)
    got = []
    while True:
        data = q.get(0.05)
        if data is None:
            continue
        if data == b"END":
            break
        pid, i = _REC.unpack_from(data)
        assert len(data) == _REC.size + i % (64 - _REC.size), "record torn"
        got.append(pid << 32 | i)
    q.close()
    np.array(got, dtype=np.uint64).tofile(out)


def _contention(
    tmp_path, producers: int, consumers: int, count: int, depth: int = 4
) -> np.ndarray:
    ctx = mp.get_context("fork")
    q = ControlQueue(_name(), create=True, depth=depth, message_size=256)
    procs = []
    try:
        outs = [str(tmp_path / f"c{c}.bin") for c in range(consumers)]
        cons = [ctx.Process(target=_consumer, args=(q.name, o)) for o in outs]
        prods = [
            ctx.Process(target=_producer, args=(q.name, p, count, 64)) for p in range(producers)
        ]
        procs = cons + prods
        for p in procs:
            p.start()
        for p in prods:
            p.join(60)
            assert p.exitcode == 0
        for _ in cons:
            assert q.put(b"END", 10)
        for p in cons:
            p.join(60)
            assert p.exitcode == 0
        return np.concatenate([np.fromfile(o, dtype=np.uint64) for o in outs])
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
        q.unlink()
        q.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("depth", [1, 4])
def test_heavy_contention_loses_and_duplicates_nothing(tmp_path, depth):
    """4 producers and 3 consumers on one queue: every record arrives exactly once."""
    producers, consumers, count = 4, 3, 50_000 if depth > 1 else 10_000
    got = _contention(tmp_path, producers, consumers, count, depth)
    expected = np.array(
        [p << 32 | i for p in range(producers) for i in range(count)], dtype=np.uint64
    )
    assert len(got) == len(expected), f"{len(expected) - len(got)} records lost or duplicated"
    np.testing.assert_array_equal(np.sort(got), expected)


@needs_native
@pytest.mark.timeout(60)
def test_sigkilled_peer_leaves_waiters_able_to_leave():
    """A producer killed mid-stream: the consumer's waits still end on their timeouts."""
    ctx = mp.get_context("fork")
    q = ControlQueue(_name(), create=True, depth=4, message_size=256)
    p = ctx.Process(target=_producer, args=(q.name, 0, 10**9, 64))
    try:
        p.start()
        seen = []
        while len(seen) < 2000:
            data = q.get(1.0)
            assert data is not None
            seen.append(_REC.unpack_from(data)[1])
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        while (data := q.get(0.05)) is not None:
            seen.append(_REC.unpack_from(data)[1])
        assert seen == list(range(len(seen)))  # nothing lost or repeated before the kill
        t0 = time.monotonic()
        assert q.get(0.1) is None
        assert time.monotonic() - t0 < 1.0
    finally:
        if p.is_alive():
            p.kill()
        p.join()
        q.unlink()
        q.close()
