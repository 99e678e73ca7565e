"""Module-level nodes for the tests (task processes import them by name)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import zlib
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


class OpencvThreads(ProcessorNode):
    """Returns how many threads OpenCV may use in this task."""

    def process(self, value: Any) -> int:
        import cv2

        return int(cv2.getNumThreads())


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


class BurnProcessor(ProcessorNode):
    """Computes (spins) until it has used ``seconds`` of CPU per message, where SlowProcessor
    sleeps: on a loaded machine the call takes longer, but its CPU time stays the same."""

    def __init__(self, seconds: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.seconds = seconds

    def process(self, value: Any) -> Any:
        end = time.thread_time() + self.seconds
        while time.thread_time() < end:
            pass
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
        if value >= self.fail_at:  # >=: realtime mode may drop the value fail_at itself
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


# -- reliability suite (tests/test_faults.py, test_integrity.py, test_properties.py) ----------

FAULTS = (
    "none", "open", "call", "close", "kill", "segv",
    "unpicklable", "oversize", "resize", "shm_full",
)


def mark_fault(folder: str | None) -> None:
    """Record when a fault fires (one file per process), so tests can bound the time to end."""
    if folder:
        with open(os.path.join(folder, f"fault.{os.getpid()}"), "w") as f:
            f.write(repr(time.time()))


def synthetic_frame(shape: tuple[int, ...], index: int) -> np.ndarray:
    """Frame ``index`` of SyntheticFrameProducer(pattern="index"), in any shape."""
    from videoflow.producers.basic import frame_value

    frame = np.full(shape, frame_value(index), dtype=np.uint8)
    frame.reshape(-1)[:8] = np.frombuffer(np.array(index, dtype="<u8").tobytes(), dtype=np.uint8)
    return frame


class Faulty:
    """Mixin: does ``fault`` at message ``at`` (or in open/close), recording when in ``folder``.

    call:        raise ValueError
    kill / segv: the task process dies by SIGKILL / a real segmentation fault
    unpicklable: the output holds a lock (no pickle)
    oversize:    from ``at`` on, outputs are 100 times larger than the input frame
    resize:      from ``at`` on, every output has another shape
    shm_full:    the output asks for more shared memory than /dev/shm holds in all
    """

    fault: str
    at: int
    folder: str | None

    def _setup(self, fault: str, at: int, folder: str | None) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        self.fault, self.at, self.folder = fault, at, folder

    def open(self) -> None:
        if self.fault == "open":
            mark_fault(self.folder)
            raise RuntimeError("cannot open (injected)")

    def close(self) -> None:
        if self.fault == "close":
            mark_fault(self.folder)
            raise RuntimeError("cannot close (injected)")

    def _output(self, value: Any, index: int) -> Any:
        """The output for message ``index``; faults fire once, at the first index >= ``at``
        this task sees (realtime mode may drop message ``at`` itself)."""
        fault = self.fault
        if index < self.at or fault in ("none", "open", "close"):
            return value
        if fault in ("oversize", "resize"):
            shape = (480, 640, 3) if fault == "oversize" else (16 + index % 7, 24 + index % 5, 3)
            out = self.allocate(shape) if index % 2 else np.empty(shape, np.uint8)  # type: ignore[attr-defined]
            out[...] = synthetic_frame(shape, index)
            return out
        if getattr(self, "_fired", False):
            return value
        self._fired = True
        mark_fault(self.folder)
        if fault == "call":
            raise ValueError(f"bad value at message {index} (injected)")
        if fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "segv":
            import ctypes

            ctypes.string_at(0)  # a real segmentation fault
        if fault == "unpicklable":
            return {"frame": value, "lock": threading.Lock()}
        if fault == "shm_full":
            st = os.statvfs("/dev/shm")
            return self.allocate((st.f_blocks * st.f_frsize + 1,))  # type: ignore[attr-defined]
        return value


class FaultyProducer(Faulty, ProducerNode):
    """Synthetic frames of ``shape`` (pattern "index"), forever or ``count`` of them."""

    def __init__(
        self, fault: str, at: int = 20, folder: str | None = None, count: int | None = None,
        shape: tuple[int, ...] = (48, 64, 3), delay: float = 0.0, **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self._setup(fault, at, folder)
        self.count, self.shape, self.delay = count, shape, delay

    def open(self) -> None:
        self.i = 0
        Faulty.open(self)

    def next(self) -> Any:
        if self.count is not None and self.i >= self.count:
            raise StopIteration
        if self.delay:
            time.sleep(self.delay)
        i, self.i = self.i, self.i + 1
        if self.fault == "call" and i == self.at:
            mark_fault(self.folder)
            raise ValueError(f"bad frame {i} (injected)")
        frame = self.allocate(self.shape)
        frame[...] = synthetic_frame(self.shape, i)
        return self._output(frame, i)


class FaultyProcessor(Faulty, ProcessorNode):
    def __init__(self, fault: str, at: int = 20, folder: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self._setup(fault, at, folder)

    def process(self, value: Any) -> Any:
        return self._output(value, self.meta["index"])


class FaultyConsumer(Faulty, ConsumerNode):
    """Checks every frame and writes ``index:ok`` lines to ``path`` (like RecordingConsumer)."""

    def __init__(
        self, fault: str, path: str, at: int = 20, folder: str | None = None,
        delay: float = 0.0, **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self._setup(fault, at, folder)
        self.path, self.delay = path, delay

    def open(self) -> None:
        self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 (closed in close())
        Faulty.open(self)

    def consume(self, frame: Any) -> None:
        index = self.meta["index"]
        if self.delay:
            time.sleep(self.delay)
        if self.fault == "call" and index >= self.at:
            mark_fault(self.folder)
            raise KeyError(f"cannot store frame {index} (injected)")
        if self.fault in ("kill", "segv"):
            self._output(frame, index)
        self._f.write(f"{index}:{'ok' if check_frame(frame, index) else 'bad'}\n")

    def close(self) -> None:
        self._f.close()
        Faulty.close(self)


class CheckingCounter(ConsumerNode):
    """Checks every frame and writes ``count bad out_of_order first last crc32`` at close
    (crc32 of every frame's bytes, in arrival order)."""

    def __init__(self, path: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = path

    def open(self) -> None:
        self.count = self.bad = self.unordered = self.crc = 0
        self.first = self.last = -1

    def consume(self, frame: Any) -> None:
        index = self.meta["index"]
        if self.count == 0:
            self.first = index
        self.count += 1
        self.bad += not check_frame(frame, index)
        self.unordered += index <= self.last
        self.last = index
        self.crc = zlib.crc32(frame, self.crc)

    def close(self) -> None:
        with open(self.path, "w") as f:
            f.write(
                f"{self.count} {self.bad} {self.unordered} {self.first} {self.last} {self.crc}\n"
            )


def mix_scalar(value: Any) -> int:
    """The number a mixed value stands for (an int, or an array filled with it)."""
    if isinstance(value, np.ndarray):
        if not (value == value.flat[0]).all():
            raise ValueError("a mixed array arrived damaged")
        return int(value.flat[0])
    return int(value)


def mix(salt: int, big: bool, inputs: tuple[Any, ...]) -> Any:
    """What MixProcessor returns: the reference evaluator of test_properties.py calls it too."""
    v = (salt + sum(mix_scalar(x) * (j + 1) for j, x in enumerate(inputs))) % 1_000_003
    return np.full(600, v, dtype=np.int64) if big else v


class MixProcessor(ProcessorNode):
    """Combines its inputs (ints or arrays) into an int or a 4.8 kB array, after ``delay``."""

    def __init__(self, salt: int, big: bool, delay: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.salt, self.big, self.delay = salt, big, delay

    def process(self, *inputs: Any) -> Any:
        if self.delay:
            time.sleep(self.delay)
        return mix(self.salt, self.big, inputs)


class MixConsumer(ConsumerNode):
    """Writes ``index: values...`` per message."""

    def __init__(self, path: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = path

    def open(self) -> None:
        self._f = open(self.path, "w", buffering=1)  # noqa: SIM115 (closed in close())

    def consume(self, *inputs: Any) -> None:
        values = " ".join(str(mix_scalar(x)) for x in inputs)
        self._f.write(f"{self.meta['index']}: {values}\n")

    def close(self) -> None:
        self._f.close()


class KeepsInput(ProcessorNode):
    """A bug on purpose: keeps a view of an input frame (or of part of it) to read it later."""

    def __init__(self, part: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.part = part

    def open(self) -> None:
        self.previous: Any = None

    def process(self, frame: Any) -> Any:
        if isinstance(frame, dict):
            frame = frame["frame"]
        seen = -1 if self.previous is None else int(self.previous.reshape(-1)[-1])
        self.previous = frame[1:] if self.part else frame
        return seen
