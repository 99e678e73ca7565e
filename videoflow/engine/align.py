"""The matching rule of a JOIN stage: which messages of N input streams go out together.

Pure Python, no processes, no queues: the JOIN task receives a message from one of its inboxes,
``offer``s it, calls ``poll`` and forwards the sets it returns; tests drive the same object with
a fake clock. One ``Aligner`` per JOIN, built from the node's ``Join`` policy::

    aligner = Aligner(join, inputs=2, max_pending=6, discard=release)
    if aligner.wants(i):                 # room in input i's buffer (else leave it in its inbox)
        aligner.offer(i, message, meta.get("timestamp_ms"))
    for group in aligner.poll():         # a tuple with one message (or None) per input
        forward(group)
    aligner.deadline()                   # clock time at which poll() may emit without new input

Each input has its own buffer of at most ``max_pending`` messages. A message that will never go
out (replaced by a newer one, too late, or left without a partner) is handed to ``discard`` at
once, so its slots go back. Per input: received == used + stale + unmatched + buffered.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

SEQ, TIME, LATEST = "seq", "time", "latest"  # the policies (videoflow.core.join.Join builds them)

Clock = Callable[[], float]  # seconds, monotonic
Discard = Callable[[int, Any], None]  # (input, message) of a message that will not go out

_EMPTY: Any = object()


class JoinPolicy(Protocol):
    """What an Aligner reads of a join policy (``videoflow.core.Join`` is one; the engine does
    not import the graph layer)."""

    @property
    def policy(self) -> str: ...
    @property
    def tolerance_ms(self) -> float | None: ...
    @property
    def missing(self) -> str: ...
    @property
    def timeout_ms(self) -> float | None: ...
    @property
    def min_inputs(self) -> int: ...


def _keep(i: int, item: Any) -> None:
    """The default ``discard``: nothing to give back."""


@dataclasses.dataclass(frozen=True)
class InputCounts:
    """What a JOIN did with one input's messages (received == used + stale + unmatched +
    buffered), and how long sets waited for this input."""

    name: str
    received: int
    used: int  # went out in a set
    stale: int  # replaced by a newer message of the input, or arrived too late for its set
    unmatched: int  # found no partner (a stream ended; Join.time with missing="drop")
    buffered: int  # still waiting in the JOIN
    waited_s: float  # time a set was held back waiting for this input


class Aligner:
    """Pairs the messages of ``inputs`` streams by a join policy (see videoflow.core.join).

    ``Aligner(join, ...)`` builds the subclass of ``join.policy``. ``names`` label the inputs in
    errors and counts; ``clock`` (seconds) is injectable for tests; ``discard(i, message)`` is
    called for every message that will not go out.
    """

    policy = ""

    def __new__(cls, join: JoinPolicy, *args: Any, **kwargs: Any) -> Aligner:
        if cls is Aligner:
            try:
                cls = _POLICIES[join.policy]
            except KeyError:
                raise ValueError(f"unknown join policy {join.policy!r}") from None
        return object.__new__(cls)

    def __init__(
        self,
        join: JoinPolicy,
        inputs: int,
        max_pending: int,
        *,
        names: Sequence[str] | None = None,
        clock: Clock = time.monotonic,
        discard: Discard = _keep,
    ) -> None:
        if isinstance(inputs, bool) or not isinstance(inputs, int) or inputs < 1:
            raise ValueError(f"a join needs at least one input, got {inputs!r}")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive integer, got {max_pending!r}")
        if names is not None and len(names) != inputs:
            raise ValueError(f"{len(names)} names for {inputs} inputs")
        self.join = join
        self.inputs = inputs
        self.max_pending = max_pending
        self.names = list(names) if names is not None else [f"input {i}" for i in range(inputs)]
        self.clock = clock
        self.discard = discard
        self.ended = [False] * inputs
        self.received = [0] * inputs
        self.used = [0] * inputs
        self.stale = [0] * inputs
        self.unmatched = [0] * inputs
        self.waited = [0.0] * inputs
        self.groups = 0  # sets sent out
        self.partial = 0  # sets sent out with None for some input
        self._waiting: tuple[int, ...] = ()  # inputs the last poll() waited for
        self._since = 0.0  # clock time of that poll

    # -- the interface the JOIN task uses --------------------------------------------------
    def wants(self, i: int) -> bool:
        """Whether input ``i`` may be offered a message now (its buffer has room)."""
        raise NotImplementedError

    def offer(self, i: int, item: Any, timestamp_ms: float | None = None) -> None:
        """Take the next message of input ``i`` (only when ``wants(i)``)."""
        raise NotImplementedError

    def end(self, i: int) -> None:
        """Input ``i`` has ended: no more messages will come from it."""
        if self.ended[i]:
            raise RuntimeError(f"{self.names[i]} ended twice")
        self.ended[i] = True

    def poll(self) -> list[tuple[Any, ...]]:
        """The sets complete now, oldest first: one message (or None) per input."""
        raise NotImplementedError

    def deadline(self) -> float | None:
        """Clock time at which ``poll()`` will emit or decide without any new input (None: only
        new input can change anything). Reflects the state after the last ``poll()``."""
        return None

    def buffered(self, i: int) -> int:
        """Messages of input ``i`` waiting in the JOIN."""
        raise NotImplementedError

    @property
    def done(self) -> bool:
        """Every input ended and nothing is left to send or drop."""
        return all(self.ended) and not any(self.buffered(i) for i in range(self.inputs))

    def discard_all(self) -> None:
        """Give back every buffered message (the flow is aborted); they count as unmatched."""
        raise NotImplementedError

    def counts(self) -> list[InputCounts]:
        """A snapshot of the counters of every input."""
        return [
            InputCounts(
                self.names[i], self.received[i], self.used[i], self.stale[i], self.unmatched[i],
                self.buffered(i), self.waited[i],
            )
            for i in range(self.inputs)
        ]

    # -- shared by the policies ------------------------------------------------------------
    def _check_offer(self, i: int) -> None:
        if self.ended[i]:
            raise RuntimeError(f"{self.names[i]} was offered a message after its end")
        if not self.wants(i):
            raise RuntimeError(
                f"{self.names[i]} was offered a message with its buffer full "
                f"({self.max_pending}); check wants() first"
            )

    def _waited(self, now: float) -> None:
        """Charge the time since the last poll to the inputs that poll waited for."""
        if self._waiting:
            span = now - self._since
            for i in self._waiting:
                self.waited[i] += span
        self._since = now


class _Queued(Aligner):
    """A policy that keeps a queue of entries per input, oldest first."""

    def __init__(self, join: JoinPolicy, inputs: int, max_pending: int, **kwargs: Any) -> None:
        super().__init__(join, inputs, max_pending, **kwargs)
        self.bufs: list[deque[Any]] = [deque() for _ in range(inputs)]

    @staticmethod
    def _message(entry: Any) -> Any:
        """The message an entry of ``bufs`` holds."""
        return entry

    def buffered(self, i: int) -> int:
        return len(self.bufs[i])

    def discard_all(self) -> None:
        for i, buf in enumerate(self.bufs):
            while buf:
                self.unmatched[i] += 1
                self.discard(i, self._message(buf.popleft()))


class SeqAligner(_Queued):
    """``Join.seq()``: the i-th message of every input; the rest counted when a stream ends."""

    policy = SEQ

    def __init__(self, join: JoinPolicy, inputs: int, max_pending: int, **kwargs: Any) -> None:
        super().__init__(join, inputs, max_pending, **kwargs)
        self.finished = False  # a stream ended: no set can be completed any more
        self.ended_any = False

    def end(self, i: int) -> None:
        super().end(i)
        self.ended_any = True

    def wants(self, i: int) -> bool:
        return self.finished or len(self.bufs[i]) < self.max_pending

    def offer(self, i: int, item: Any, timestamp_ms: float | None = None) -> None:
        if self.ended[i] or (len(self.bufs[i]) >= self.max_pending and not self.finished):
            self._check_offer(i)
        self.received[i] += 1
        if self.finished:
            self.unmatched[i] += 1
            self.discard(i, item)
        else:
            self.bufs[i].append(item)

    def poll(self) -> list[tuple[Any, ...]]:
        self._waited(self.clock())
        bufs = self.bufs
        out: list[tuple[Any, ...]] = []
        while all(bufs):
            out.append(tuple([b.popleft() for b in bufs]))
        if out:
            n = len(out)
            used = self.used
            for i in range(self.inputs):
                used[i] += n
            self.groups += n
        if (
            self.ended_any
            and not self.finished
            and any(e and not b for e, b in zip(self.ended, bufs, strict=True))
        ):
            self.finished = True
            self.discard_all()
        if self.finished or not any(bufs):
            self._waiting = ()
        else:
            self._waiting = tuple(i for i, b in enumerate(bufs) if not b)
        return out


class TimeAligner(_Queued):
    """``Join.time(...)``: sets of messages whose timestamps lie within the tolerance.

    The oldest buffered message (smallest timestamp, lowest input on a tie) is decided once no
    input is *pending* for it: an input has a partner (its oldest message is within the
    tolerance), or none (its oldest message is past it, its last timestamp is already past it,
    or it ended). With ``timeout_ms``, once a buffered message has waited that long, pending
    inputs count as none; a message that arrives later with a timestamp at or before the last
    decided one is stale. Timestamps must increase along each input.
    """

    policy = TIME

    def __init__(self, join: JoinPolicy, inputs: int, max_pending: int, **kwargs: Any) -> None:
        super().__init__(join, inputs, max_pending, **kwargs)
        assert join.tolerance_ms is not None
        self.tolerance = join.tolerance_ms
        self.timeout = None if join.timeout_ms is None else join.timeout_ms / 1000.0
        self.emit_partial = join.missing == "none"
        # bufs: per input (timestamp_ms, arrival time or 0.0, message), oldest first
        self.last = [-math.inf] * inputs  # last timestamp received per input
        self.watermark = -math.inf  # timestamp of the last decided message
        self._deadline: float | None = None

    def wants(self, i: int) -> bool:
        return len(self.bufs[i]) < self.max_pending

    def offer(self, i: int, item: Any, timestamp_ms: float | None = None) -> None:
        if self.ended[i] or len(self.bufs[i]) >= self.max_pending:
            self._check_offer(i)
        ts = timestamp_ms
        if ts is None or isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise ValueError(
                f"{self.names[i]}: a message with meta['timestamp_ms'] = {ts!r}; Join.time pairs "
                "messages by this timestamp in milliseconds: the producer must set it "
                "(self.meta['timestamp_ms'] = ...)"
            )
        if not ts > self.last[i]:  # also catches NaN
            raise ValueError(
                f"{self.names[i]}: meta['timestamp_ms'] went from {self.last[i]!r} to {ts!r}; "
                "Join.time needs timestamps that increase along each stream"
            )
        self.received[i] += 1
        self.last[i] = ts
        if ts <= self.watermark:
            self.stale[i] += 1
            self.discard(i, item)
            return
        self.bufs[i].append((ts, self.clock() if self.timeout is not None else 0.0, item))

    def poll(self) -> list[tuple[Any, ...]]:
        now = self.clock()
        self._waited(now)
        bufs, ended, last, inputs = self.bufs, self.ended, self.last, range(self.inputs)
        out: list[tuple[Any, ...]] = []
        self._waiting = ()
        self._deadline = None
        while True:
            k, t = -1, math.inf
            for i in inputs:
                b = bufs[i]
                if b and b[0][0] < t:
                    k, t = i, b[0][0]
            if k < 0:
                break
            limit = t + self.tolerance
            partners: list[int] = []
            pending: list[int] = []
            for j in inputs:
                b = bufs[j]
                if b:
                    if b[0][0] <= limit:
                        partners.append(j)
                elif not ended[j] and last[j] < limit:
                    pending.append(j)
            if pending:
                timeout = self.timeout
                if timeout is None:
                    self._waiting = tuple(pending)
                    break
                oldest = min(b[0][1] for b in bufs if b)
                if now < oldest + timeout:
                    self._waiting = tuple(pending)
                    self._deadline = oldest + timeout
                    break
            self.watermark = t
            if len(partners) == self.inputs:
                out.append(tuple([b.popleft()[2] for b in bufs]))
                for j in inputs:
                    self.used[j] += 1
                self.groups += 1
            elif self.emit_partial:
                group: list[Any] = [None] * self.inputs
                for j in partners:
                    group[j] = bufs[j].popleft()[2]
                    self.used[j] += 1
                out.append(tuple(group))
                self.groups += 1
                self.partial += 1
            else:
                self.unmatched[k] += 1
                self.discard(k, bufs[k].popleft()[2])
        return out

    @staticmethod
    def _message(entry: Any) -> Any:
        return entry[2]

    def deadline(self) -> float | None:
        return self._deadline


class LatestAligner(Aligner):
    """``Join.latest(...)``: the newest message of each input, within ``timeout_ms`` of the
    first message of the set; a message replaced by a newer one of its input is stale."""

    policy = LATEST

    def __init__(self, join: JoinPolicy, inputs: int, max_pending: int, **kwargs: Any) -> None:
        super().__init__(join, inputs, max_pending, **kwargs)
        assert join.timeout_ms is not None
        self.timeout = join.timeout_ms / 1000.0
        self.min_inputs = join.min_inputs
        self.current: list[Any] = [_EMPTY] * inputs
        self.present = 0  # inputs with a message in ``current``
        self.opened: float | None = None  # clock time the first message of the set arrived

    def wants(self, i: int) -> bool:
        return True  # a new message replaces the one waiting: one per input at most

    def offer(self, i: int, item: Any, timestamp_ms: float | None = None) -> None:
        if self.ended[i]:
            self._check_offer(i)
        self.received[i] += 1
        old = self.current[i]
        self.current[i] = item
        if old is _EMPTY:
            self.present += 1
            if self.opened is None:
                self.opened = self.clock()
        else:
            self.stale[i] += 1
            self.discard(i, old)

    def _needed(self) -> int:
        """Inputs that have, or can still get, a message for this set."""
        ended, current = self.ended, self.current
        return sum(1 for i in range(self.inputs) if not ended[i] or current[i] is not _EMPTY)

    def poll(self) -> list[tuple[Any, ...]]:
        now = self.clock()
        self._waited(now)
        if not self.present:
            self._waiting = ()
            return []
        needed = self.inputs if self.present == self.inputs else self._needed()
        assert self.opened is not None
        if self.present < needed and (
            now < self.opened + self.timeout or self.present < min(self.min_inputs, needed)
        ):
            self._waiting = tuple(
                i for i, (e, c) in enumerate(zip(self.ended, self.current, strict=True))
                if not e and c is _EMPTY
            )
            return []
        current = self.current
        group = tuple([None if c is _EMPTY else c for c in current])
        for i, c in enumerate(current):
            if c is not _EMPTY:
                self.used[i] += 1
        self.groups += 1
        if self.present < self.inputs:
            self.partial += 1
        self.current = [_EMPTY] * self.inputs
        self.present = 0
        self.opened = None
        self._waiting = ()
        return [group]

    def deadline(self) -> float | None:
        if not self.present or self.present < min(self.min_inputs, self._needed()):
            return None
        assert self.opened is not None
        return self.opened + self.timeout

    def buffered(self, i: int) -> int:
        return 0 if self.current[i] is _EMPTY else 1

    def discard_all(self) -> None:
        for i, c in enumerate(self.current):
            if c is not _EMPTY:
                self.unmatched[i] += 1
                self.discard(i, c)
        self.current = [_EMPTY] * self.inputs
        self.present = 0
        self.opened = None


def set_meta(
    sources: Sequence[Sequence[str]], metas: Sequence[dict[str, Any] | None], index: int
) -> dict[str, Any]:
    """The metadata a set goes on with, whatever engine made it: the first present input's
    metadata (updated in place), with ``index`` set to the set's number and ``sources`` naming,
    per producer, the ``index`` and ``timestamp_ms`` of its message (None for a producer whose
    input is missing from the set). ``sources[i]`` are the producers of input ``i``; an input
    of several producers (an inner join) brings its own ``sources`` along."""
    meta: dict[str, Any] | None = None
    merged: dict[str, Any] = {}
    for names, m in zip(sources, metas, strict=True):
        if m is None:
            for name in names:
                merged[name] = None
            continue
        inner = m.get("sources") if len(names) > 1 else None
        if inner is not None:
            merged.update(inner)
        else:
            merged[names[0]] = {"index": m.get("index"), "timestamp_ms": m.get("timestamp_ms")}
        if meta is None:
            meta = m
    assert meta is not None, "a set with no message at all"
    meta["index"] = index
    meta["sources"] = merged
    return meta


_POLICIES: dict[str, type[Aligner]] = {
    cls.policy: cls for cls in (SeqAligner, TimeAligner, LatestAligner)
}

__all__ = [
    "LATEST",
    "SEQ",
    "TIME",
    "Aligner", "InputCounts", "LatestAligner", "SeqAligner", "TimeAligner", "set_meta",
]
