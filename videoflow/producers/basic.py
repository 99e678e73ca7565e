"""Producers of plain values, one image and synthetic frames, for examples, tests and
benchmarks."""

from __future__ import annotations

import os
import time
from typing import Any

import cv2
import numpy as np

from videoflow.core.node import ProducerNode


class IntProducer(ProducerNode):
    """Produces the integers ``start_value, start_value + 1, ..., end_value`` (both included).

    end_value:             None produces forever (until the flow is stopped).
    wait_time_in_seconds:  pause between two values.
    fps:                   when above 0, overrides the pause with ``1 / fps`` seconds.
    """

    def __init__(
        self,
        start_value: int = 0,
        end_value: int | None = None,
        wait_time_in_seconds: float = 0,
        fps: float = -1,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if wait_time_in_seconds < 0:
            raise ValueError(f"wait_time_in_seconds must be >= 0, got {wait_time_in_seconds}")
        self._start = start_value
        self._end = end_value
        self._wait = 1.0 / fps if fps > 0 else float(wait_time_in_seconds)
        self._next = start_value

    def open(self) -> None:
        self._next = self._start

    def expected_count(self) -> int | None:
        return None if self._end is None else max(0, self._end - self._start + 1)

    def next(self) -> int:
        if self._end is not None and self._next > self._end:
            raise StopIteration
        if self._wait and self._next != self._start:
            time.sleep(self._wait)
        value = self._next
        self._next += 1
        return value


class ImageProducer(ProducerNode):
    """Reads one image file and produces it once, in RGB order (the original videoflow's
    ImageProducer). For BGR frames, or the same image several times, use ImageFileReader.

    The path is checked at creation; the image is read in ``open()`` straight into the frame's
    shared-memory slot, converted from OpenCV's BGR by ``cv2.cvtColor``.
    """

    def __init__(self, image_path: str | os.PathLike[str], name: str | None = None) -> None:
        super().__init__(name=name)
        path = os.fspath(image_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {path!r} does not exist")
        self._image_path = path
        self._image: np.ndarray | None = None
        self._returned = False

    def expected_count(self) -> int | None:
        return 1

    def open(self) -> None:
        self._image = cv2.imread(self._image_path, cv2.IMREAD_COLOR)
        if self._image is None:
            raise OSError(f"OpenCV cannot read image {self._image_path!r}")
        self._returned = False

    def next(self) -> np.ndarray:
        if self._returned or self._image is None:
            raise StopIteration
        out = self.allocate(self._image.shape, self._image.dtype)
        cv2.cvtColor(self._image, cv2.COLOR_BGR2RGB, dst=out)
        self._returned = True
        self._image = None
        return out


class Pacer:
    """Paces a producer at ``fps``: value i is due i / fps seconds after the first one.

    The clock starts at the first value, not in open(): a flow starts its producer only once
    every node has opened, and a clock started earlier would burst the frames it is "late" for.
    """

    def __init__(self, fps: float | None) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self._t0: float | None = None

    def wait(self, index: int) -> None:
        """Sleep until value ``index`` is due (at once when there is no fps)."""
        if self.fps is None:
            return
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now - index / self.fps
        delay = self._t0 + index / self.fps - now
        if delay > 0:
            time.sleep(delay)


def frame_value(index: int) -> int:
    """The byte value synthetic frame ``index`` is filled with (pattern ``"index"``)."""
    return index % 251


def check_frame(frame: np.ndarray, index: int) -> bool:
    """True when ``frame`` is exactly synthetic frame ``index`` of pattern ``"index"``."""
    flat = frame.reshape(-1).view(np.uint8)
    if int(np.frombuffer(flat[:8].tobytes(), dtype="<u8")[0]) != index:
        return False
    return bool((flat[8:] == frame_value(index)).all())


class SyntheticFrameProducer(ProducerNode):
    """Produces ``count`` frames of ``shape`` and ``dtype``, written in place in shared memory.

    pattern:  ``"index"`` fills frame i with ``frame_value(i)`` and stamps i (uint64) in its
              first 8 bytes, so a consumer can check every byte (``check_frame``);
              ``"stamp"`` only stamps i, leaving the rest of the slot as it was: the cheapest
              possible producer, for measuring the transport alone.
    fps:      pace the frames at this rate (None: as fast as possible).
    """

    def __init__(
        self,
        shape: tuple[int, ...] = (720, 1280, 3),
        dtype: Any = np.uint8,
        count: int | None = 100,
        fps: float | None = None,
        pattern: str = "index",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if pattern not in ("index", "stamp"):
            raise ValueError(f"pattern must be 'index' or 'stamp', got {pattern!r}")
        self._pacer = Pacer(fps)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        if int(np.prod(self.shape)) * self.dtype.itemsize < 8:
            raise ValueError("synthetic frames need at least 8 bytes for their index stamp")
        self.count = count
        self.fps = fps
        self.pattern = pattern
        self._index = 0

    def open(self) -> None:
        self._index = 0
        self._pacer = Pacer(self.fps)

    def expected_count(self) -> int | None:
        return self.count

    def next(self) -> np.ndarray:
        i = self._index
        if self.count is not None and i >= self.count:
            raise StopIteration
        self._pacer.wait(i)
        frame = self.allocate(self.shape, self.dtype)
        flat = frame.reshape(-1).view(np.uint8)
        if self.pattern == "index":
            flat[8:] = frame_value(i)
        flat[:8] = np.frombuffer(np.array(i, dtype="<u8").tobytes(), dtype=np.uint8)
        self._index = i + 1
        return frame
