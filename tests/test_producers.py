"""Basic producers outside a flow: pacing and synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest

from videoflow.producers import IntProducer, SyntheticFrameProducer, basic
from videoflow.producers.basic import Pacer, check_frame


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pacer_clock_starts_at_the_first_value(monkeypatch):
    clock = FakeClock(1000.0)
    monkeypatch.setattr(basic, "time", clock)
    pacer = Pacer(10.0)
    clock.now += 5.0  # a slow open() elsewhere: must not make the producer burst
    pacer.wait(0)
    pacer.wait(1)
    pacer.wait(2)
    assert clock.sleeps == pytest.approx([0.1, 0.1])
    clock.now += 1.0  # the producer fell behind: no sleep until it catches up
    pacer.wait(3)
    assert len(clock.sleeps) == 2


def test_pacer_without_fps_never_sleeps(monkeypatch):
    clock = FakeClock(0.0)
    monkeypatch.setattr(basic, "time", clock)
    pacer = Pacer(None)
    for i in range(5):
        pacer.wait(i)
    assert clock.sleeps == []
    with pytest.raises(ValueError, match="fps must be positive"):
        Pacer(0)


def test_synthetic_frames_outside_a_flow():
    producer = SyntheticFrameProducer((4, 5, 3), count=3)
    producer.open()
    frames = [producer.next() for _ in range(3)]
    with pytest.raises(StopIteration):
        producer.next()
    assert all(check_frame(f, i) for i, f in enumerate(frames))
    assert not check_frame(frames[1], 2)
    assert producer.expected_count() == 3
    stamp = SyntheticFrameProducer((2, 2, 2), np.uint16, count=1, pattern="stamp")
    stamp.open()
    assert stamp.next().dtype == np.uint16


def test_int_producer_range_includes_its_end_as_the_original():
    producer = IntProducer(3, 6)
    producer.open()
    assert [producer.next() for _ in range(4)] == [3, 4, 5, 6]
    with pytest.raises(StopIteration):
        producer.next()
    assert producer.expected_count() == 4
    assert IntProducer(start_value=2, end_value=1).expected_count() == 0
    endless = IntProducer()
    endless.open()
    assert [endless.next() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert IntProducer(0, None).expected_count() is None
    with pytest.raises(ValueError, match="wait_time"):
        IntProducer(0, 3, -1)
