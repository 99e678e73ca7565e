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
    """Keeps a view of its input frame (or of part of it) without copying it, and checks in
    the next call that the kept frame still holds what it held: raises if it changed."""

    def __init__(self, part: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.part = part

    def open(self) -> None:
        self.previous: Any = None
        self.previous_index = -1

    def process(self, frame: Any) -> Any:
        if isinstance(frame, dict):
            frame = frame["frame"]
        seen = -1 if self.previous is None else int(self.previous.reshape(-1)[-1])
        if self.previous is not None and seen != self.previous_index % 251:
            raise AssertionError(
                f"the frame kept at index {self.previous_index} changed: reads {seen}"
            )
        self.previous = frame[1:] if self.part else frame
        self.previous_index = self.meta["index"]
        return seen


# -- endings (tests/test_endings.py) ----------------------------------------------------------


def note(folder: str, what: str) -> None:
    """Leave a file ``<what>.<pid>`` in ``folder``: which process did what (and when)."""
    with open(os.path.join(folder, f"{what}.{os.getpid()}"), "a") as f:
        f.write(f"{time.time()!r}\n")


def block_forever() -> None:
    """Wait for ever, as a node stuck on a lock or a device does."""
    threading.Event().wait()


class Ints(ProducerNode):
    """0, 1, ... ``count - 1`` (forever when None), ``delay`` seconds apart; after ``block_at``
    values its next() blocks for ever (a camera that stops delivering frames)."""

    def __init__(
        self, count: int | None = None, delay: float = 0.0, block_at: int | None = None,
        folder: str | None = None, **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.count, self.delay, self.block_at, self.folder = count, delay, block_at, folder

    def open(self) -> None:
        self.i = 0

    def next(self) -> int:
        if self.count is not None and self.i >= self.count:
            raise StopIteration
        if self.i == self.block_at:
            if self.folder:
                note(self.folder, "blocked")
            block_forever()
        if self.delay:
            time.sleep(self.delay)
        self.i += 1
        return self.i - 1


class Stuck(ProcessorNode):
    """Passes values on; one task (the first to see message ``at`` or a later one: realtime
    may drop ``at``) gets stuck in process(): "sigstop" (its process stops itself, as a
    debugger or a ``kill -STOP`` would), "deadlock" (takes a lock it holds). Every task notes
    its pid in ``folder`` at open()."""

    def __init__(self, how: str, at: int | None, folder: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.how, self.at, self.folder = how, at, folder

    def open(self) -> None:
        note(self.folder, "pid")

    def _first(self) -> bool:
        """True in the one task that gets there first (of all the node's tasks)."""
        try:
            os.close(os.open(os.path.join(self.folder, "stuck"), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True

    def process(self, value: Any) -> Any:
        if self.at is not None and self.meta["index"] >= self.at and self._first():
            note(self.folder, "stuck")
            if self.how == "sigstop":
                os.kill(os.getpid(), signal.SIGSTOP)
            else:
                lock = threading.Lock()
                lock.acquire()
                lock.acquire()
        return value


class Lingers(ConsumerNode):
    """Writes each value to ``path``, then does not let its process end: "close" (close()
    never returns) or "thread" (a non-daemon thread named "grabber" runs for ever, as a
    camera grabber would)."""

    def __init__(self, how: str, path: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.how, self.path = how, path

    def open(self) -> None:
        self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 (closed in close())
        if self.how == "thread":
            threading.Thread(target=block_forever, name="grabber").start()

    def consume(self, value: Any) -> None:
        self._f.write(f"{value}\n")

    def close(self) -> None:
        self._f.close()
        if self.how == "close":
            block_forever()


class GrabbingProducer(Ints):
    """Ints that leave a non-daemon "grabber" thread running after close()."""

    def open(self) -> None:
        super().open()
        threading.Thread(target=block_forever, name="grabber").start()


class Unloadable(ProcessorNode):
    """Pickles in the owner, cannot be unpickled anywhere (its task cannot load it)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        raise RuntimeError("this node cannot be restored (injected)")


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise TypeError("__str__ is broken too")


class RaisesBrokenStr(ProcessorNode):
    def process(self, value: Any) -> Any:
        if self.meta["index"] == 3:
            raise BrokenStr("unprintable")
        return value


class ExitsAt(ProcessorNode):
    """At message ``at``, ends its own process with ``os._exit(0)`` (no cleanup, no error)."""

    def __init__(self, at: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.at = at

    def process(self, frame: Any) -> Any:
        if self.meta["index"] == self.at:
            os._exit(0)
        return frame


class CountsLoads(ProcessorNode):
    """Notes in ``folder`` each time it is unpickled (``loaded.<pid>``, one line a time)."""

    def __init__(self, folder: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.folder = folder

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        note(self.folder, "loaded")

    def process(self, value: Any) -> Any:
        return value


# -- frames a node draws on or keeps (tests/test_frames.py) -----------------------------------
MARK = 255  # what the drawing nodes write; frame_value never reaches it (index % 251)


def draw_mark(frame: np.ndarray) -> None:
    """Draw on ``frame`` in place: row 2 becomes MARK (with OpenCV when it is installed)."""
    try:
        import cv2
    except ImportError:
        frame[2] = MARK
    else:
        cv2.line(frame, (0, 2), (frame.shape[1] - 1, 2), (MARK,) * 3, 1)


def check_marked(frame: np.ndarray, index: int) -> bool:
    """``frame`` is synthetic frame ``index`` with row 2 drawn by ``draw_mark``."""
    clean = frame.copy()
    ok = bool((clean[2] == MARK).all())
    clean[2] = synthetic_frame(frame.shape, index)[2]
    return ok and check_frame(clean, index)


class DrawInPlace(ProcessorNode):
    """Draws on its input frame without asking (right only as the frame's last reader)."""

    def process(self, frame: np.ndarray) -> np.ndarray:
        draw_mark(frame)
        return frame


class DrawWritable(ProcessorNode):
    """Draws on ``make_writable(frame)``; raises unless that is the input itself exactly
    when ``in_place`` (the node is the frame's last reader) and a copy otherwise."""

    def __init__(self, in_place: bool, **kw: Any) -> None:
        super().__init__(**kw)
        self.in_place = in_place

    def process(self, frame: np.ndarray) -> np.ndarray:
        out = self.make_writable(frame)
        if (out is frame) != self.in_place or out.flags.writeable is not True:
            raise AssertionError(f"make_writable gave {'it' if out is frame else 'a copy'}")
        draw_mark(out)
        return out


class CheckFrames(ConsumerNode):
    """Checks each message's frames (``"clean"``: synthetic frame of the message's index;
    ``"marked"``: the same drawn on by draw_mark); writes ``index ok|bad`` lines."""

    def __init__(self, path: str, kinds: tuple[str, ...], **kw: Any) -> None:
        super().__init__(**kw)
        self.path, self.kinds = path, kinds

    def open(self) -> None:
        self._f = open(self.path, "w", buffering=1)  # noqa: SIM115 (closed in close())

    def consume(self, *frames: np.ndarray) -> None:
        index = self.meta["index"]
        check = {"clean": check_frame, "marked": check_marked}
        ok = all(check[k](f, index) for k, f in zip(self.kinds, frames, strict=True))
        self._f.write(f"{index} {'ok' if ok else 'bad'}\n")

    def close(self) -> None:
        self._f.close()


class KeepsLast:
    """Keeps the last ``n`` input frames without copying them (as they are, as slices, or in
    dicts), checks every kept frame at every call and at close(), and raises on the first
    that changed. Writes ``kept <count> checked <count>`` to ``path`` at close()."""

    meta: dict[str, Any]

    def __init__(self, path: str, n: int = 16, how: str = "frame", **kw: Any) -> None:
        super().__init__(**kw)
        self.path, self.n, self.how = path, n, how

    def open(self) -> None:
        self.kept: list[tuple[int, Any]] = []
        self.checked = 0

    def _check_all(self) -> None:
        for index, held in self.kept:
            frame = held["frame"] if self.how == "dict" else held
            full = synthetic_frame((48, 64, 3), index)
            expected = full[1:] if self.how == "slice" else full
            if not np.array_equal(frame, expected):
                raise AssertionError(f"kept frame {index} changed (held {len(self.kept)})")
            self.checked += 1

    def keep(self, frame: np.ndarray) -> None:
        self._check_all()
        held: Any = frame
        if self.how == "dict":
            held = {"frame": frame}
        elif self.how == "slice":
            held = frame[1:]
        self.kept.append((self.meta["index"], held))
        if len(self.kept) > self.n:
            self.kept.pop(0)

    def close(self) -> None:
        self._check_all()
        with open(self.path, "w") as f:
            f.write(f"kept {len(self.kept)} checked {self.checked}\n")


class KeepLast(KeepsLast, ProcessorNode):
    """KeepsLast as a processor that passes its input on: a later node reads the frames too."""

    def process(self, frame: np.ndarray) -> np.ndarray:
        self.keep(frame)
        return frame


class KeepLastConsumer(KeepsLast, ConsumerNode):
    """KeepsLast as a consumer: the frames' last reader."""

    def consume(self, frame: np.ndarray) -> None:
        self.keep(frame)


class Hoarder(ConsumerNode):
    """Keeps every input frame, without copying: sooner or later too many."""

    def open(self) -> None:
        self.kept: list[np.ndarray] = []

    def consume(self, frame: np.ndarray) -> None:
        self.kept.append(frame)


class MetaLog(ConsumerNode):
    """Writes one JSON line per message: its index, its value (ints; for a frame, its first
    byte), ``meta["skipped"]`` and whether ``meta["produced_ns"]`` lies in the past."""

    def __init__(self, path: str, delay: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.path, self.delay = path, delay

    def open(self) -> None:
        self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 (closed in close())

    def consume(self, value: Any) -> None:
        import json

        if self.delay:
            time.sleep(self.delay)
        if isinstance(value, np.ndarray):
            value = [int(value.flat[0]), int(value.max())]
        stamp = self.meta.get("produced_ns")
        self._f.write(json.dumps({
            "index": self.meta["index"], "value": value, "skipped": self.meta.get("skipped"),
            "stamped": stamp is not None and stamp <= time.perf_counter_ns(),
        }) + "\n")  # fmt: skip

    def close(self) -> None:
        self._f.close()


class CountCalls(ProcessorNode):
    """Returns ``[input, calls so far in this task]``: shows which messages the node ran on."""

    def open(self) -> None:
        self.calls = 0

    def process(self, value: Any) -> Any:
        self.calls += 1
        time.sleep(getattr(self, "delay", 0.0))
        return [value, self.calls]


class SlowCountCalls(CountCalls):
    def __init__(self, delay: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.delay = delay


class IndexFrame(ProcessorNode):
    """Returns a new frame in shared memory (``allocate``) filled with the message's index."""

    def process(self, frame: np.ndarray) -> np.ndarray:
        out = self.allocate((4, 4), np.uint16)
        out[:] = self.meta["index"]
        return out


class OldStamps(ProducerNode):
    """Produces ``count`` ints, each stamped as made ``age`` seconds before next() returns."""

    def __init__(self, count: int, age: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.count, self.age, self.i = count, age, 0

    def next(self) -> int:
        if self.i >= self.count:
            raise StopIteration
        self.i += 1
        self.meta["produced_ns"] = time.perf_counter_ns() - int(self.age * 1e9)
        return self.i
