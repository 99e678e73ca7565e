"""Module-level nodes for the tests of several producers and joins (tests/test_joins.py,
tests/test_samples.py); task processes import them by name."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from videoflow.core import ConsumerNode, ProcessorNode, ProducerNode
from videoflow.producers.basic import check_frame


class Stamped(ProducerNode):
    """``count`` values (forever when None): ints, or synthetic frames of ``shape`` (check them
    with ``check_frame(frame, index)``), stamped ``meta["timestamp_ms"] = start_ms + i *
    period_ms``. ``delay`` seconds between values; at value ``stall_at`` it sleeps ``stall``
    seconds first (a camera that goes silent); ``stamps`` overrides the timestamps."""

    def __init__(
        self, count: int | None = None, period_ms: float = 10.0, start_ms: float = 0.0,
        delay: float = 0.0, stall_at: int | None = None, stall: float = 0.0,
        shape: tuple[int, ...] | None = None, stamps: list[float] | None = None, **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.count, self.period_ms, self.start_ms = count, period_ms, start_ms
        self.delay, self.stall_at, self.stall = delay, stall_at, stall
        self.shape, self.stamps = shape, stamps

    def open(self) -> None:
        self.i = 0

    def expected_count(self) -> int | None:
        return self.count

    def next(self) -> Any:
        i = self.i
        if self.count is not None and i >= self.count:
            raise StopIteration
        if i == self.stall_at:
            time.sleep(self.stall)
        if self.delay and i:
            time.sleep(self.delay)
        self.i += 1
        stamp = self.stamps[i] if self.stamps is not None else self.start_ms + i * self.period_ms
        self.meta["timestamp_ms"] = stamp
        if self.shape is None:
            return i
        frame = self.allocate(self.shape)
        flat = frame.reshape(-1)
        flat[8:] = i % 251
        flat[:8] = np.frombuffer(np.array(i, dtype="<u8").tobytes(), dtype=np.uint8)
        return frame


class Together(ProcessorNode):
    """Returns its inputs as a tuple (a batch of one item per input)."""

    def process(self, *values: Any) -> tuple[Any, ...]:
        return values


class Fails(ProcessorNode):
    """Passes values on; raises at the set (or message) ``at``."""

    def __init__(self, at: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.at = at

    def process(self, value: Any) -> Any:
        if self.meta["index"] == self.at:
            raise ValueError(f"bad message {self.at} (injected)")
        return value


class JoinedLog(ConsumerNode):
    """One JSON line per message in ``path``: ``index`` (the set's number after a join), the
    ``sources`` metadata, and per input its value (ints), None, or, with ``frames``, whether
    the frame is exactly the one its source (``names[k]``) made at that source's index."""

    def __init__(
        self, path: str, names: tuple[str, ...] = (), frames: bool = False, delay: float = 0.0,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.path, self.names, self.frames, self.delay = path, names, frames, delay

    def open(self) -> None:
        self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 (closed in close())

    def consume(self, *values: Any) -> None:
        if self.delay:
            time.sleep(self.delay)
        meta = self.meta
        sources = meta.get("sources") or {}
        out: list[Any] = []
        for k, value in enumerate(values):
            if value is None or not self.frames:
                out.append(value)
            else:
                index = sources[self.names[k]]["index"] if sources else meta["index"]
                out.append(bool(check_frame(value, index)))
        line = {"index": meta["index"], "sources": sources, "values": out}
        if "blob" in meta:
            line["blob"] = len(meta["blob"])
        self._f.write(json.dumps(line) + "\n")

    def close(self) -> None:
        self._f.close()


def read_log(path: str) -> list[dict[str, Any]]:
    """The lines a JoinedLog wrote."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
