"""Module-level nodes for the tests (task processes import them by name)."""

from __future__ import annotations

import os
import random
import time
from typing import Any

import numpy as np

from videoflow.core import ConsumerNode, OneTaskProcessorNode, ProcessorNode, ProducerNode
from videoflow.producers.basic import check_frame


class RecordingConsumer(ConsumerNode):
    """Writes one line per message: the value (ints) or ``index:ok`` for frames."""

    def __init__(self, path: str, delay: float = 0.0, frames: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.path, self.delay, self.frames = path, delay, frames

    def open(self) -> None:
        self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 (closed in close())

    def consume(self, *values: Any) -> None:
        if self.delay:
            time.sleep(self.delay)
        if self.frames:
            index = self.meta["index"]
            ok = all(check_frame(v, index) for v in values)
            self._f.write(f"{index}:{'ok' if ok else 'bad'}\n")
        else:
            self._f.write(" ".join(repr(v).replace(" ", "") for v in values) + "\n")

    def close(self) -> None:
        self._f.close()


class CopyProcessor(ProcessorNode):
    """Copies its input into a fresh shared-memory slot (``allocate``)."""

    def process(self, frame: np.ndarray) -> np.ndarray:
        out = self.allocate(frame.shape, frame.dtype)
        np.copyto(out, frame)
        return out


class NumpyCopyProcessor(ProcessorNode):
    """Returns a plain numpy copy (the engine copies it into a slot once)."""

    def process(self, frame: np.ndarray) -> np.ndarray:
        return frame.copy()


class JitterProcessor(ProcessorNode):
    """Returns its input after a random sleep of up to ``max_delay`` seconds."""

    def __init__(self, max_delay: float = 0.0005, **kw: Any) -> None:
        super().__init__(**kw)
        self.max_delay = max_delay

    def open(self) -> None:
        self._rng = random.Random(os.getpid())

    def process(self, value: Any) -> Any:
        time.sleep(self._rng.random() * self.max_delay)
        return value


class SlowProcessor(ProcessorNode):
    def __init__(self, delay: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.delay = delay

    def process(self, value: Any) -> Any:
        time.sleep(self.delay)
        return value


class AddProcessor(ProcessorNode):
    def __init__(self, amount: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.amount = amount

    def process(self, value: Any) -> Any:
        return value + self.amount


class PairProcessor(ProcessorNode):
    """Returns its inputs as a tuple: shows argument order."""

    def process(self, *values: Any) -> Any:
        return values


class DictOfArrays(ProcessorNode):
    """Wraps a frame in a dict with a big list: exercises the pickle + out-of-band path."""

    def process(self, frame: np.ndarray) -> Any:
        return {
            "frame": frame,
            "copy": frame.copy(),
            "words": ["w"] * 5000,
            "i": self.meta["index"],
        }


class UnwrapDict(ProcessorNode):
    def process(self, value: dict[str, Any]) -> np.ndarray:
        assert value["i"] == self.meta["index"] and len(value["words"]) == 5000
        assert np.array_equal(value["frame"], value["copy"])
        return value["frame"]


class BigMeta(ProcessorNode):
    """Adds large metadata so that the message outgrows the control queue."""

    def process(self, value: Any) -> Any:
        self.meta["blob"] = "x" * 20000
        return value


class CheckMeta(ProcessorNode):
    def process(self, value: Any) -> Any:
        assert len(self.meta["blob"]) == 20000
        return value


class FailingProducer(ProducerNode):
    def __init__(self, fail_at: int, where: str = "next", **kw: Any) -> None:
        super().__init__(**kw)
        self.fail_at, self.where, self.i = fail_at, where, 0

    def open(self) -> None:
        if self.where == "open":
            raise RuntimeError("cannot open the source")

    def next(self) -> int:
        if self.i == self.fail_at:
            raise ValueError(f"bad frame {self.i}")
        self.i += 1
        return self.i


class FailingProcessor(ProcessorNode):
    def __init__(self, fail_at: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.fail_at = fail_at

    def process(self, value: Any) -> Any:
        if value == self.fail_at:
            raise ZeroDivisionError(f"cannot handle {value}")
        return value


class FailingConsumer(ConsumerNode):
    def __init__(self, fail_at: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.fail_at = fail_at

    def consume(self, value: Any) -> None:
        if value == self.fail_at:
            raise KeyError(f"no slot for {value}")


class LifecycleProcessor(ProcessorNode):
    """Records open/close and the device it runs on, one file per event, in ``folder``."""

    def __init__(self, folder: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.folder = folder

    def _mark(self, what: str) -> None:
        gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "-")
        with open(os.path.join(self.folder, f"{what}.{os.getpid()}"), "w") as f:
            f.write(f"{gpu} {self.device_type}")

    def open(self) -> None:
        self._mark("open")

    def close(self) -> None:
        self._mark("close")

    def process(self, value: Any) -> Any:
        return value


class RunningList(OneTaskProcessorNode):
    """Stateful: returns how many values it has seen."""

    def open(self) -> None:
        self.n = 0

    def process(self, value: Any) -> int:
        self.n += 1
        return self.n
