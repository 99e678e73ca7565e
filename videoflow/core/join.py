"""Join policies: how a node where streams of several producers meet pairs their messages.

A flow with several producers runs each producer's stream on its own until the node where they
first meet. There a JOIN stage gives every incoming stream its own bounded buffer and completes
sets of messages by one of three rules:

- ``Join.seq()``: the i-th message of every input (a lossless zip). What cannot be paired when a
  stream ends is counted as unmatched. The BATCH default.
- ``Join.time(tolerance_ms, missing, timeout_ms)``: messages whose ``meta["timestamp_ms"]`` lie
  within ``tolerance_ms`` of each other form a set; the oldest message that can no longer be
  paired is dropped or sent on with ``None`` for the missing inputs.
- ``Join.latest(timeout_ms, min_inputs)``: once one input has a message, wait at most
  ``timeout_ms`` for the others, then send the newest message of each (``None`` where an input
  has none); older ones are dropped and counted. The REALTIME default.

The rule itself runs in ``videoflow.engine.align.Aligner``; this module only describes it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from videoflow.core.constants import BATCH, FLOW_TYPES
from videoflow.engine.align import LATEST, SEQ, TIME

MISSING = ("drop", "none")

REALTIME_TIMEOUT_MS = 20.0
"""The REALTIME default's wait for the other inputs: below one frame interval up to 50 fps, so
that a silent camera delays the others by at most this, without making them skip frames."""


def _milliseconds(name: str, value: Any, *, required: bool) -> float | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of milliseconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of milliseconds >= 0, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Join:
    """A join policy; build one with ``Join.seq()``, ``Join.time(...)`` or ``Join.latest(...)``.

    Give it to the node where streams of different producers first meet::

        det = BatchDetector(join=Join.latest(timeout_ms=40))(cam1, cam2)
    """

    policy: str
    tolerance_ms: float | None = None
    missing: str = "drop"
    timeout_ms: float | None = None
    min_inputs: int = 1

    def __post_init__(self) -> None:
        if self.policy not in (SEQ, TIME, LATEST):
            raise ValueError(
                f"unknown join policy {self.policy!r}: use Join.seq(), Join.time(...) or "
                "Join.latest(...)"
            )
        set_ = object.__setattr__  # frozen: normalise the numbers once, here
        set_(
            self, "tolerance_ms",
            _milliseconds("tolerance_ms", self.tolerance_ms, required=self.policy == TIME),
        )
        set_(
            self, "timeout_ms",
            _milliseconds("timeout_ms", self.timeout_ms, required=self.policy == LATEST),
        )
        if self.policy != TIME and self.tolerance_ms is not None:
            raise ValueError(f"tolerance_ms belongs to Join.time, not Join.{self.policy}")
        if self.policy == SEQ and self.timeout_ms is not None:
            raise ValueError(
                "Join.seq waits for every input by definition and takes no timeout_ms: "
                "use Join.latest(timeout_ms=...) to bound the wait"
            )
        if self.missing not in MISSING:
            raise ValueError(
                f"missing must be 'drop' (drop a message that found no partner) or 'none' "
                f"(send it on with None for the missing inputs), got {self.missing!r}"
            )
        if self.policy != TIME and self.missing != "drop":
            raise ValueError(f"missing= belongs to Join.time, not Join.{self.policy}")
        if (
            isinstance(self.min_inputs, bool)
            or not isinstance(self.min_inputs, int)
            or self.min_inputs < 1
        ):
            raise ValueError(f"min_inputs must be a positive integer, got {self.min_inputs!r}")
        if self.policy != LATEST and self.min_inputs != 1:
            raise ValueError(f"min_inputs belongs to Join.latest, not Join.{self.policy}")

    @classmethod
    def seq(cls) -> Join:
        """Pair the i-th message of every input; nothing is dropped while every stream runs.

        When a stream ends, the messages of the others that can no longer be paired are
        counted as unmatched. Every input must keep all its messages (BATCH) for the pairs to
        mean anything."""
        return cls(SEQ)

    @classmethod
    def time(
        cls, tolerance_ms: float, missing: str = "drop", timeout_ms: float | None = None
    ) -> Join:
        """Pair messages whose ``meta["timestamp_ms"]`` differ by at most ``tolerance_ms``.

        The oldest waiting message is decided once every other input either has a partner for
        it or can no longer have one (its next timestamp is past the tolerance, or it ended).
        Without a partner on some input it is dropped and counted (``missing="drop"``) or sent
        on with ``None`` for those inputs (``missing="none"``). ``timeout_ms`` bounds how long a
        message waits for a silent input (None: as long as it takes). Timestamps must increase
        along each stream."""
        return cls(TIME, tolerance_ms=tolerance_ms, missing=missing, timeout_ms=timeout_ms)

    @classmethod
    def latest(cls, timeout_ms: float, min_inputs: int = 1) -> Join:
        """Send the newest message of each input, waiting at most ``timeout_ms`` for them.

        The wait starts when the first input of a set has a message; when every input has one,
        or at the timeout, the set goes with ``None`` for the inputs that have none (a set
        needs at least ``min_inputs`` messages: with more than 1 it may wait past the timeout
        for them). A message replaced by a newer one of its input before it went out is
        dropped and counted as stale; no message is used twice."""
        return cls(LATEST, timeout_ms=timeout_ms, min_inputs=min_inputs)

    @classmethod
    def default_for(cls, flow_type: str) -> Join:
        """The policy a join point gets without ``join=``: BATCH pairs in sequence (nothing is
        lost), REALTIME takes the latest of each input within ``REALTIME_TIMEOUT_MS``."""
        if flow_type not in FLOW_TYPES:
            raise ValueError(f"flow_type must be BATCH or REALTIME, got {flow_type!r}")
        return cls.seq() if flow_type == BATCH else cls.latest(timeout_ms=REALTIME_TIMEOUT_MS)

    def __repr__(self) -> str:
        if self.policy == SEQ:
            return "Join.seq()"
        if self.policy == TIME:
            timeout = "" if self.timeout_ms is None else f", timeout_ms={self.timeout_ms:g}"
            return (
                f"Join.time(tolerance_ms={self.tolerance_ms:g}, missing={self.missing!r}"
                f"{timeout})"
            )
        return f"Join.latest(timeout_ms={self.timeout_ms:g}, min_inputs={self.min_inputs})"


def check_join(value: Any, owner: str) -> Join | None:
    """``value`` if it is a Join or None; a TypeError naming ``owner`` otherwise."""
    if value is None or isinstance(value, Join):
        return value
    raise TypeError(
        f"join= of {owner} must be Join.seq(), Join.time(...) or Join.latest(...), "
        f"got {value!r}"
    )


__all__ = ["REALTIME_TIMEOUT_MS", "Join"]
