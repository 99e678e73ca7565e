"""Data integrity: every frame through a 3-hop batch flow, exactly once, in order, intact.

producer -> jitter (K workers) -> jitter (K workers) -> checking consumer, with a random
delay per frame in each worker, for K = 1..4. The consumer counts frames, checks each one's
bytes (pattern "index"), checks that indices increase and keeps a crc32 of all bytes in
arrival order; the test computes the crc32 the frames must have. 0 lost, 0 duplicated, 0 out
of order, checksums equal.

The 100,000-frame runs take minutes on 2 cores and are marked slow (``pytest -m slow``); CI
runs the same flows with 10,000 frames. Debug mode (generation checks on every read, released
slots poisoned) runs a smaller count: a slot released too early would show as a bad frame.
"""

from __future__ import annotations

import zlib

import pytest
from nodes import CheckingCounter, JitterProcessor, synthetic_frame

from videoflow.core import BATCH, REALTIME, Flow
from videoflow.producers import SyntheticFrameProducer

SHAPE = (8, 8, 3)  # 192 bytes: small frames keep the run about the transport, not memcpy


def expected_crc(count: int) -> int:
    crc = 0
    for i in range(count):
        crc = zlib.crc32(synthetic_frame(SHAPE, i), crc)
    return crc


def run(tmp_path, count: int, k: int, flow_type=BATCH, max_delay=0.0002, **options):
    out = str(tmp_path / "counts.txt")
    a = SyntheticFrameProducer(SHAPE, count=count, name="source")
    b = JitterProcessor(max_delay, nb_tasks=k, name="hop1")(a)
    c = JitterProcessor(max_delay, nb_tasks=k, name="hop2")(b)
    d = CheckingCounter(out, name="check")(c)
    flow = Flow([a], [d], flow_type=flow_type, flow_options=options or None)
    flow.run()
    assert flow.join(timeout=600)
    with open(out) as f:
        counts = list(map(int, f.read().split()))
    return flow.stats(), counts


def check_batch(tmp_path, count: int, k: int, **options) -> None:
    stats, (seen, bad, unordered, first, last, crc) = run(tmp_path, count, k, **options)
    print(f"\nK={k}: {seen} frames seen, {bad} bad, {unordered} out of order, "
          f"indices {first}..{last}, crc {crc:#010x}")
    assert (seen, bad, unordered, first, last) == (count, 0, 0, 0, count - 1)
    # count frames, strictly increasing indices from 0 to count - 1: none lost, none twice
    assert crc == expected_crc(count)
    assert (stats.produced, stats.delivered, stats.dropped) == (count, count, 0)
    assert stats.pool_slots_in_use == 0


@pytest.mark.timeout(240)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_10000_frames_three_hops(tmp_path, k):
    check_batch(tmp_path, 10_000, k)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_100000_frames_three_hops(tmp_path, k):
    check_batch(tmp_path, 100_000, k)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("k", [1, 3])
def test_debug_mode_frames_intact(tmp_path, k):
    check_batch(tmp_path, 2_000, k, debug=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("k", [1, 3])
def test_realtime_delivered_plus_dropped_is_produced(tmp_path, k):
    stats, (seen, bad, unordered, _first, _last, _crc) = run(
        tmp_path, 5_000, k, REALTIME, max_delay=0.001
    )
    assert bad == 0 and unordered == 0
    assert stats.delivered == seen
    assert stats.produced == 5_000 == stats.delivered + stats.dropped
    assert stats.pool_slots_in_use == 0
