"""The JOIN's matching rule (engine/align.py) against brute-force references, no processes.

Hypothesis draws the input streams, the order in which their messages reach the JOIN, where it
polls, and the buffer bound. ``seq`` must equal ``zip`` plus the counted remainder and ``time``
(without a timeout) the offline grouping of the complete streams, whatever the interleaving;
``latest`` and timed-out ``time`` run on a fake clock, driven like the JOIN task drives them
(sleep until the next message or the aligner's deadline). Everywhere: no buffer above its
bound, no message used twice, every message given back or sent exactly once, and per input
received == used + stale + unmatched.
"""

from __future__ import annotations

import math
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videoflow.core import Join
from videoflow.engine.align import Aligner, LatestAligner, SeqAligner, TimeAligner

EPS = 1e-9


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """The ``discard`` callback: records (input, message) in order."""

    def __init__(self) -> None:
        self.items: list[tuple[int, object]] = []

    def __call__(self, i: int, item: object) -> None:
        self.items.append((i, item))


def check_accounts(aligner: Aligner) -> None:
    for c in aligner.counts():
        assert c.received == c.used + c.stale + c.unmatched + c.buffered, c
        assert c.buffered <= aligner.max_pending


def drive(aligner: Aligner, streams, order, polls, stamps=None):
    """Offer the streams' messages in ``order`` (a multiset of input numbers: the k-th
    occurrence of i offers message k of input i, one past the last ends input i), polling
    where ``polls`` says and whenever a chosen input's buffer is full. Returns the sets."""
    n = len(streams)
    pos = [0] * n
    steps = list(order)
    out: list[tuple] = []
    turn = 0
    stuck = 0
    while steps:
        idx = next(
            (x for x, i in enumerate(steps) if pos[i] == len(streams[i]) or aligner.wants(i)),
            None,
        )
        if idx is None:
            out += aligner.poll()  # the JOIN reads no full input: polling must make room
            stuck += 1
            assert stuck < 3, "every input that has messages left is full after a poll"
            continue
        stuck = 0
        i = steps.pop(idx)
        if pos[i] == len(streams[i]):
            aligner.end(i)
        else:
            ts = stamps[i][pos[i]] if stamps is not None else None
            aligner.offer(i, streams[i][pos[i]], ts)
        pos[i] += 1
        check_accounts(aligner)
        if polls[turn % len(polls)]:
            out += aligner.poll()
            check_accounts(aligner)
        turn += 1
    out += aligner.poll()
    assert aligner.done
    check_accounts(aligner)
    return out


@st.composite
def schedules(draw, max_inputs=4, max_len=12, stamps=False):
    n = draw(st.integers(1, max_inputs))
    lengths = [draw(st.integers(0, max_len)) for _ in range(n)]
    streams = [[(i, k) for k in range(length)] for i, length in enumerate(lengths)]
    order = draw(st.permutations([i for i in range(n) for _ in range(lengths[i] + 1)]))
    polls = draw(st.lists(st.booleans(), min_size=1, max_size=8))
    max_pending = draw(st.integers(1, 5))
    ts = None
    if stamps:
        ts = [
            sorted(draw(st.sets(st.integers(0, 60), min_size=length, max_size=length)))
            for length in lengths
        ]
    return streams, order, polls, max_pending, ts


# -- seq ---------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(schedules())
def test_seq_is_zip_plus_the_counted_remainder(case):
    streams, order, polls, max_pending, _ = case
    dropped = Recorder()
    aligner = Aligner(Join.seq(), len(streams), max_pending, discard=dropped)
    assert isinstance(aligner, SeqAligner)
    out = drive(aligner, streams, order, polls)
    assert out == list(zip(*streams, strict=False))
    shortest = min(len(s) for s in streams)
    assert sorted(dropped.items) == sorted(
        (i, item) for i, s in enumerate(streams) for item in s[shortest:]
    )
    for i, c in enumerate(aligner.counts()):
        assert (c.received, c.used, c.stale, c.unmatched) == (
            len(streams[i]), shortest, 0, len(streams[i]) - shortest,
        )


def test_seq_keeps_reading_a_stream_once_another_ended():
    """40 and 25 messages: 25 pairs, 15 unmatched, and input 0 is never held back after
    input 1 ended (its segment must be able to drain to its own end)."""
    dropped = Recorder()
    aligner = Aligner(Join.seq(), 2, 3, discard=dropped)
    out = []
    for k in range(25):
        aligner.offer(0, k)
        aligner.offer(1, k)
        out += aligner.poll()
    aligner.end(1)
    for k in range(25, 40):
        assert aligner.wants(0)
        aligner.offer(0, k)
        out += aligner.poll()
    aligner.end(0)
    out += aligner.poll()
    assert out == [(k, k) for k in range(25)] and aligner.done
    assert [item for _, item in dropped.items] == list(range(25, 40))
    assert [c.unmatched for c in aligner.counts()] == [15, 0]


def test_seq_names_the_input_it_waits_for():
    clock = FakeClock()
    aligner = Aligner(Join.seq(), 2, 4, names=["cam1", "cam2"], clock=clock)
    aligner.offer(0, "a")
    assert aligner.poll() == []
    clock.now = 0.25
    aligner.offer(1, "b")
    assert aligner.poll() == [("a", "b")]
    waited = {c.name: c.waited_s for c in aligner.counts()}
    assert waited == {"cam1": 0.0, "cam2": pytest.approx(0.25)}


# -- time --------------------------------------------------------------------------------------
def reference_time(stamps, tolerance, missing):
    """Offline grouping of complete streams: take the oldest head (lowest input on a tie); the
    heads within the tolerance of it are its partners; all inputs: a set; else drop the head
    (missing="drop") or send the partners with None elsewhere (missing="none")."""
    heads = [deque((i, k) for k in range(len(s))) for i, s in enumerate(stamps)]
    n = len(stamps)
    out, dropped = [], []
    while any(heads):
        k = min((i for i in range(n) if heads[i]), key=lambda i: (stamps[i][heads[i][0][1]], i))
        t = stamps[k][heads[k][0][1]]
        partners = [j for j in range(n) if heads[j] and stamps[j][heads[j][0][1]] <= t + tolerance]
        if len(partners) == n:
            out.append(tuple(h.popleft() for h in heads))
        elif missing == "none":
            out.append(tuple(heads[j].popleft() if j in partners else None for j in range(n)))
        else:
            dropped.append(heads[k].popleft())
    return out, dropped


@settings(max_examples=150, deadline=None)
@given(
    schedules(stamps=True),
    st.sampled_from([0, 1, 3, 10]),
    st.sampled_from(["drop", "none"]),
)
def test_time_equals_the_reference_grouping(case, tolerance, missing):
    streams, order, polls, max_pending, stamps = case
    dropped = Recorder()
    aligner = Aligner(Join.time(tolerance, missing=missing), len(streams), max_pending,
                      discard=dropped)
    assert isinstance(aligner, TimeAligner)
    out = drive(aligner, streams, order, polls, stamps)
    want_out, want_dropped = reference_time(stamps, tolerance, missing)
    assert out == want_out
    assert sorted(dropped.items) == sorted((d[0], d) for d in want_dropped)
    for group in out:  # what the rule promises, independently of the reference
        present = [stamps[i][k] for i, k in (g for g in group if g is not None)]
        assert max(present) - min(present) <= tolerance
    counts = aligner.counts()
    assert all(c.stale == 0 for c in counts)  # nothing is late without a timeout
    assert sum(c.used for c in counts) == sum(g is not None for group in out for g in group)


def test_time_needs_increasing_timestamps_and_names_the_input():
    aligner = Aligner(Join.time(5), 2, 4, names=["cam1", "imu"])
    aligner.offer(1, "a", 10.0)
    with pytest.raises(ValueError, match=r"imu: meta\['timestamp_ms'\] went from 10.0 to 10.0"):
        aligner.offer(1, "b", 10.0)
    with pytest.raises(ValueError, match="increase along each stream"):
        aligner.offer(1, "b", 3)
    with pytest.raises(ValueError, match=r"cam1: a message with meta\['timestamp_ms'\] = None"):
        aligner.offer(0, "c", None)
    with pytest.raises(ValueError, match="increase"):
        aligner.offer(0, "c", math.nan)
    check_accounts(aligner)


def arrivals(draw, n, max_len, end_after=True):
    """Per input: increasing arrival times (ms) and an end time after the last."""
    times, ends = [], []
    for _ in range(n):
        gaps = draw(st.lists(st.integers(0, 30), max_size=max_len))
        t, mine = 0, []
        for g in gaps:
            t += g
            mine.append(t)
        times.append(mine)
        ends.append(t + draw(st.integers(0, 60)))
    return times, ends


def simulate(aligner, clock, times, ends, stamps=None):
    """The JOIN loop on a fake clock: sleep until the next arrival, end, or the aligner's
    deadline; offer/end; poll. Returns [(emit time, group, first offer since the previous
    emission)] and the offer time of each message, all in ms."""
    n = len(times)
    pos = [0] * n
    ended = [False] * n
    out, offered = [], {}
    first = None

    def emit(groups):
        nonlocal first
        for group in groups:
            out.append((clock.now * 1000, group, first))
            first = None

    while not all(ended):
        events = [(times[i][pos[i]], 0, i) for i in range(n) if pos[i] < len(times[i])]
        events += [(ends[i], 1, i) for i in range(n) if pos[i] == len(times[i]) and not ended[i]]
        at, what, i = min(events)
        deadline = aligner.deadline()
        if deadline is not None and deadline * 1000 < at - EPS:
            clock.now = deadline
            emit(aligner.poll())
            continue
        clock.now = at / 1000
        if what == 0:
            aligner.offer(i, (i, pos[i]), None if stamps is None else stamps[i][pos[i]])
            offered[(i, pos[i])] = at
            first = at if first is None else first
            pos[i] += 1
        else:
            aligner.end(i)
            ended[i] = True
        emit(aligner.poll())
        check_accounts(aligner)
    assert aligner.done
    return out, offered


# -- latest ------------------------------------------------------------------------------------
@st.composite
def latest_cases(draw):
    n = draw(st.integers(1, 4))
    times, ends = arrivals(draw, n, 10)
    timeout = draw(st.sampled_from([0, 5, 20, 45]))
    return times, ends, timeout


@settings(max_examples=200, deadline=None)
@given(latest_cases())
def test_latest_uses_each_message_once_in_order_and_never_waits_past_the_timeout(case):
    times, ends, timeout = case
    n = len(times)
    clock = FakeClock()
    dropped = Recorder()
    aligner = Aligner(Join.latest(timeout), n, 4, clock=clock, discard=dropped)
    assert isinstance(aligner, LatestAligner)
    out, offered = simulate(aligner, clock, times, ends)
    used = [g for _, group, _ in out for g in group if g is not None]
    assert len(used) == len(set(used))  # no message twice
    for i in range(n):  # monotonic per input
        mine = [k for j, k in used if j == i]
        assert mine == sorted(mine)
    for at, group, opened in out:
        assert any(g is not None for g in group)
        assert at <= opened + timeout + EPS, "waited past timeout_ms"
        if at < opened + timeout - EPS:  # early only when every input still running has one
            assert all(g is not None or aligner.ended[i] for i, g in enumerate(group))
    # everything not sent was replaced by a newer message of its input (stale), and nothing
    # else was dropped
    counts = aligner.counts()
    assert [c.unmatched for c in counts] == [0] * n
    for i, item in dropped.items:
        newer = [k for (j, k), t in offered.items() if j == i and k > item[1]]
        assert newer, f"{item} dropped without a newer message of its input"
    assert {d for _, d in dropped.items} | set(used) == set(offered)


def test_latest_sends_a_full_set_at_once_and_a_partial_one_at_the_timeout():
    clock = FakeClock()
    dropped = Recorder()
    aligner = Aligner(Join.latest(40), 2, 4, clock=clock, discard=dropped)
    aligner.offer(0, "a0")
    assert aligner.poll() == [] and aligner.deadline() == pytest.approx(0.040)
    clock.now = 0.010
    aligner.offer(0, "a1")  # replaces a0 (stale), the wait still ends at 40 ms
    aligner.offer(1, "b0")
    assert aligner.poll() == [("a1", "b0")]
    assert dropped.items == [(0, "a0")]
    clock.now = 0.050
    aligner.offer(1, "b1")
    assert aligner.poll() == [] and aligner.deadline() == pytest.approx(0.090)
    clock.now = 0.090
    assert aligner.poll() == [(None, "b1")]
    assert aligner.partial == 1 and aligner.groups == 2
    assert [c.stale for c in aligner.counts()] == [1, 0]
    assert [c.waited_s for c in aligner.counts()] == pytest.approx([0.040, 0.010])


def test_latest_min_inputs_waits_for_enough_inputs_and_not_for_ended_ones():
    clock = FakeClock()
    aligner = Aligner(Join.latest(10, min_inputs=2), 3, 4, clock=clock)
    aligner.offer(0, "a")
    assert aligner.poll() == [] and aligner.deadline() is None  # nothing to do at 10 ms
    clock.now = 0.5
    assert aligner.poll() == []
    aligner.offer(2, "c")
    assert aligner.poll() == [("a", None, "c")]  # 2 inputs, past the timeout: at once
    aligner.end(1)
    aligner.end(2)
    aligner.offer(0, "a2")
    assert aligner.poll() == [("a2", None, None)]  # min_inputs cannot be met any more
    aligner.end(0)
    assert aligner.done


# -- time with a timeout -----------------------------------------------------------------------
@st.composite
def timed_cases(draw):
    n = draw(st.integers(2, 3))
    times, ends = arrivals(draw, n, 8)
    shift = [draw(st.integers(-20, 20)) for _ in range(n)]  # clocks of the sources differ
    stamps = [[2 * t + k + shift[i] for k, t in enumerate(ts)] for i, ts in enumerate(times)]
    timeout = draw(st.sampled_from([0, 5, 30]))
    tolerance = draw(st.sampled_from([0, 4, 12]))
    return times, ends, stamps, timeout, tolerance, draw(st.sampled_from(["drop", "none"]))


@settings(max_examples=150, deadline=None)
@given(timed_cases())
def test_time_with_a_timeout_decides_every_message_in_time(case):
    times, ends, stamps, timeout, tolerance, missing = case
    clock = FakeClock()
    decided: dict = {}
    dropped = Recorder()

    def discard(i, item):
        dropped(i, item)
        decided[item] = clock.now * 1000

    aligner = Aligner(Join.time(tolerance, missing=missing, timeout_ms=timeout), len(times), 16,
                      clock=clock, discard=discard)
    out, offered = simulate(aligner, clock, times, ends, stamps)
    for at, group, _ in out:
        for g in group:
            if g is not None:
                decided[g] = at
    assert set(decided) == set(offered)  # every message sent or given back, once
    sent = sum(1 for _, g, _ in out for x in g if x is not None)
    assert sent + len(dropped.items) == len(offered)
    for key, at in decided.items():
        assert at <= offered[key] + timeout + EPS, f"{key} waited past timeout_ms"
    anchors = [min(stamps[i][k] for i, k in (x for x in g if x is not None)) for _, g, _ in out]
    assert anchors == sorted(set(anchors))  # sets go out oldest first
    for _, group, _ in out:
        present = [stamps[i][k] for i, k in (g for g in group if g is not None)]
        assert max(present) - min(present) <= tolerance


def test_time_waits_for_a_silent_input_until_the_timeout_then_drops_late_messages():
    clock = FakeClock()
    dropped = Recorder()
    aligner = Aligner(Join.time(5, missing="none", timeout_ms=30), 2, 8, clock=clock,
                      discard=dropped)
    aligner.offer(0, "a100", 100.0)
    assert aligner.poll() == [] and aligner.deadline() == pytest.approx(0.030)
    clock.now = 0.030
    assert aligner.poll() == [("a100", None)]
    aligner.offer(1, "b98", 98.0)  # its set already went out: stale
    aligner.offer(1, "b133", 133.0)
    aligner.offer(0, "a133", 133.4)
    assert aligner.poll() == [("a133", "b133")]
    assert dropped.items == [(1, "b98")]
    assert [c.stale for c in aligner.counts()] == [0, 1] and aligner.partial == 1


# -- construction ------------------------------------------------------------------------------
def test_aligner_arguments_are_checked():
    with pytest.raises(ValueError, match="at least one input"):
        Aligner(Join.seq(), 0, 4)
    with pytest.raises(ValueError, match="max_pending"):
        Aligner(Join.seq(), 2, 0)
    with pytest.raises(ValueError, match="2 names for 3 inputs"):
        Aligner(Join.seq(), 3, 4, names=["a", "b"])
    aligner = Aligner(Join.seq(), 2, 1)
    aligner.offer(0, 1)
    with pytest.raises(RuntimeError, match="buffer full"):
        aligner.offer(0, 2)
    aligner.end(1)
    with pytest.raises(RuntimeError, match="ended twice"):
        aligner.end(1)
    with pytest.raises(RuntimeError, match="after its end"):
        aligner.offer(1, 3)


def test_discard_all_gives_everything_back():
    dropped = Recorder()
    aligner = Aligner(Join.time(1), 2, 4, discard=dropped)
    aligner.offer(0, "a", 1.0)
    aligner.offer(0, "b", 2.0)
    aligner.discard_all()
    assert dropped.items == [(0, "a"), (0, "b")]
    assert aligner.counts()[0].unmatched == 2 and aligner.buffered(0) == 0
