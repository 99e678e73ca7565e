"""Producers that read video files, capture devices, network streams and images with OpenCV.

Frames are (H, W, 3) uint8 BGR arrays. When the frame size is known, ``cv2.VideoCapture.read``
decodes straight into a shared-memory slot (``read(image=slot)``): no copy at all. When the
size is unknown or changes, OpenCV allocates the frame and it costs one copy into a slot.

Capture readers run ``VideoCapture`` in a reader thread of their task, and the task waits for
each frame with a deadline (``read_timeout``): a stream that stalls ends the flow with an error
instead of hanging it. A stuck reader thread is a daemon and is abandoned at close(), so it
never holds up the flow's shutdown.

Metadata added to every message: ``timestamp_ms`` (position in the file, or capture time in
ms since the epoch for devices and streams); images also get ``path``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from typing import Any

import cv2
import numpy as np

from videoflow.core.node import ProducerNode

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_STOP = object()


class _CaptureThread(threading.Thread):
    """Owns one ``cv2.VideoCapture``: opens it, reads frames into the buffers it is handed,
    releases it. Talks to the task's main thread through two one-item queues."""

    def __init__(self, source: str | int, api: int, params: list[int]) -> None:
        super().__init__(name=f"videoflow-capture-{source}", daemon=True)
        self.source, self.api, self.params = source, api, params
        self.requests: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.results: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.stopping = threading.Event()

    def run(self) -> None:
        cap = None
        try:
            cap = cv2.VideoCapture(self.source, self.api, self.params)
            if not cap.isOpened():
                self._put(("failed", None))
                return
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            self._put(("opened", (width, height, cap.get(cv2.CAP_PROP_FPS))))
            while not self.stopping.is_set():
                try:
                    buf = self.requests.get(timeout=0.1)
                except queue.Empty:
                    continue
                if buf is _STOP:
                    break
                ok, frame = cap.read(image=buf) if buf is not None else cap.read()
                self._put(("frame", (ok, frame, cap.get(cv2.CAP_PROP_POS_MSEC), time.time())))
        except BaseException as exc:  # reported to the task, which raises it
            self._put(("error", exc))
        finally:
            if cap is not None:
                cap.release()

    def _put(self, item: tuple[str, Any]) -> None:
        while not self.stopping.is_set():
            try:
                self.results.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def stop(self, wait: float) -> None:
        self.stopping.set()
        with contextlib.suppress(queue.Full):
            self.requests.put_nowait(_STOP)
        self.join(wait)
        if self.is_alive():
            log.warning("capture of %r is stuck in OpenCV; abandoning its thread", self.source)


class _CaptureReader(ProducerNode):
    """Base of the VideoCapture producers: open, read with a deadline, close."""

    #: what the source is called in error messages ("video file", "video device", ...)
    what = "video source"
    #: timestamp_ms from the stream position (files) rather than the wall clock (live sources)
    file_timestamps = False

    def __init__(
        self,
        source: str | int,
        nb_frames: int = -1,
        read_timeout: float = 10.0,
        open_timeout: float = 20.0,
        api_preference: int = cv2.CAP_ANY,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if isinstance(nb_frames, bool) or not isinstance(nb_frames, int):
            raise TypeError(f"nb_frames must be an int, got {nb_frames!r}")
        if read_timeout <= 0 or open_timeout <= 0:
            raise ValueError("read_timeout and open_timeout must be positive (seconds)")
        self.source = source
        self.nb_frames = nb_frames
        self.read_timeout = float(read_timeout)
        self.open_timeout = float(open_timeout)
        self.api_preference = api_preference
        self._thread: _CaptureThread | None = None
        self._size: tuple[int, int] | None = None
        self._index = 0

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_thread"] = None
        return state

    def _params(self) -> list[int]:
        """OpenCV open parameters: its own timeouts, in ms. Its read timeout is a little longer
        than ours, so that a stall is reported as one (not as the end of the stream) and the
        reader thread is then freed by OpenCV shortly after."""
        return [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout * 1000) + 1000,
        ]  # fmt: skip

    def _describe(self) -> str:
        return f"{self.what} {self.source!r}"

    def _check_source(self) -> None:
        """Raise a clear error before opening, where the source can be checked (files)."""

    def open(self) -> None:
        self._check_source()
        self._index = 0
        self._size = None
        thread = _CaptureThread(self.source, self.api_preference, self._params())
        self._thread = thread
        thread.start()
        # OpenCV's own open timeout applies first; ours is the backstop.
        what, value = self._result(self.open_timeout + 5.0, "opening")
        if what == "failed":
            raise OSError(f"OpenCV cannot open {self._describe()}: {self._failure_hint()}")
        width, height, _ = value
        if width > 0 and height > 0:
            self._size = (width, height)

    def _failure_hint(self) -> str:
        return "not found, unreachable or not a supported video"

    def _result(self, timeout: float, doing: str) -> tuple[str, Any]:
        assert self._thread is not None
        try:
            what, value = self._thread.results.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(
                f"{self._describe()} gave nothing for {timeout:g} s while {doing}: "
                "the stream stalled (see read_timeout)"
            ) from None
        if what == "error":
            raise OSError(f"reading {self._describe()} failed: {value}") from value
        return what, value

    def next(self) -> np.ndarray:
        if 0 <= self.nb_frames <= self._index:
            raise StopIteration
        assert self._thread is not None
        slot = None
        if self._size is not None:
            width, height = self._size
            slot = self.allocate((height, width, 3), np.uint8)
        self._thread.requests.put(slot)
        _, (ok, frame, pos_ms, wall) = self._result(self.read_timeout, "reading a frame")
        if not ok or frame is None:
            if self._index == 0:
                raise OSError(f"no frame could be decoded from {self._describe()}")
            raise StopIteration
        if slot is None or frame.__array_interface__["data"][0] != slot.ctypes.data:
            # Unknown or changed size, or another layout: one copy into a slot of the right shape.
            out = self.allocate(frame.shape, frame.dtype)
            np.copyto(out, frame)
            frame = out
            if frame.ndim == 3 and frame.shape[2] == 3:
                self._size = (frame.shape[1], frame.shape[0])
        self.meta["timestamp_ms"] = float(pos_ms) if self.file_timestamps else wall * 1000.0
        self._index += 1
        return frame

    def close(self) -> None:
        if self._thread is not None:
            self._thread.stop(wait=1.0)
            self._thread = None


class VideofileReader(_CaptureReader):
    """Reads the frames of a video file, decoding each straight into shared memory.

    nb_frames:     stop after this many frames (-1: the whole file).
    read_timeout:  seconds to wait for one frame before failing (files on slow mounts, pipes).

    A missing path raises FileNotFoundError at once; a file OpenCV cannot decode fails the flow
    (``Flow.join()`` raises FlowError naming the file). ``timestamp_ms`` is the frame's position.
    """

    what = "video file"
    file_timestamps = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        nb_frames: int = -1,
        read_timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"video file {path!r} does not exist")
        super().__init__(path, nb_frames, read_timeout, name=name)

    def _params(self) -> list[int]:
        """As the base, plus FFmpeg decoder threads: as many as OpenCV may use in this task
        (see FlowConfig.opencv_threads), so that decoding does not crowd the other tasks."""
        params = super()._params()
        if hasattr(cv2, "CAP_PROP_N_THREADS"):
            params += [cv2.CAP_PROP_N_THREADS, cv2.getNumThreads()]
        return params

    def _check_source(self) -> None:
        path = str(self.source)
        if not os.path.isfile(path) and not _is_pipe(path):
            raise FileNotFoundError(f"video file {path!r} does not exist or is not a file")

    def _failure_hint(self) -> str:
        return "not a video OpenCV can decode"

    def expected_count(self) -> int | None:
        """The container's frame count (capped by nb_frames); None when it does not say."""
        cap = cv2.VideoCapture(str(self.source))
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        finally:
            cap.release()
        if count <= 0:
            return self.nb_frames if self.nb_frames >= 0 else None
        return min(count, self.nb_frames) if self.nb_frames >= 0 else count


class VideoDeviceReader(_CaptureReader):
    """Captures frames from a camera (``device_id`` as for cv2.VideoCapture, e.g. 0).

    width, height, fps: ask the device for this mode (None: leave it as it is).
    ``timestamp_ms`` is the capture time, in ms since the epoch.
    """

    what = "video device"

    def __init__(
        self,
        device_id: int | str = 0,
        nb_frames: int = -1,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        read_timeout: float = 5.0,
        open_timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        super().__init__(device_id, nb_frames, read_timeout, open_timeout, name=name)
        self.mode = (width, height, fps)

    def _params(self) -> list[int]:
        params = super()._params()
        for prop, value in zip(
            (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FPS),
            self.mode,
            strict=True,
        ):
            if value is not None:
                params += [prop, int(value)]
        return params

    def _failure_hint(self) -> str:
        return "no such device, it is busy, or this process may not use it"


class VideoUrlReader(_CaptureReader):
    """Reads a network stream (RTSP, HTTP, ...) through OpenCV's FFMPEG backend.

    read_timeout:  seconds without a frame after which the flow fails (a stalled stream).
    open_timeout:  seconds allowed for connecting.
    ``timestamp_ms`` is the capture time, in ms since the epoch.
    """

    what = "stream"

    def __init__(
        self,
        url: str,
        nb_frames: int = -1,
        read_timeout: float = 10.0,
        open_timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(f"VideoUrlReader needs a URL such as rtsp://host/path, got {url!r}")
        super().__init__(url, nb_frames, read_timeout, open_timeout, cv2.CAP_FFMPEG, name=name)

    def _failure_hint(self) -> str:
        return "unreachable, refused, or not a stream OpenCV can decode"


def _is_pipe(path: str) -> bool:
    import stat

    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _read_image(path: str, flags: int) -> np.ndarray:
    image = cv2.imread(path, flags)
    if image is None:
        raise OSError(f"OpenCV cannot read image {path!r}")
    return image


class ImageFolderReader(ProducerNode):
    """Produces the images of a folder, one frame per image, in sorted file-name order.

    extensions:  which files count as images (case-insensitive).
    flags:       cv2.imread flags (default IMREAD_COLOR: BGR uint8).
    ``path`` metadata is the image's file name. Each image costs one copy into a slot.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
        flags: int = cv2.IMREAD_COLOR,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"image folder {folder!r} does not exist")
        self.folder = folder
        self.extensions = tuple(e.lower() for e in extensions)
        self.flags = flags
        self._files: list[str] = []

    def expected_count(self) -> int | None:
        return len(self.files())

    def files(self) -> list[str]:
        """The image paths this reader produces, in order."""
        names = sorted(os.listdir(self.folder))
        return [
            os.path.join(self.folder, n)
            for n in names
            if n.lower().endswith(self.extensions) and os.path.isfile(os.path.join(self.folder, n))
        ]

    def open(self) -> None:
        if not os.path.isdir(self.folder):
            raise FileNotFoundError(f"image folder {self.folder!r} does not exist")
        self._files = self.files()
        if not self._files:
            raise FileNotFoundError(
                f"image folder {self.folder!r} has no images ({', '.join(self.extensions)})"
            )
        self._files.reverse()  # pop() from the end in sorted order

    def next(self) -> np.ndarray:
        if not self._files:
            raise StopIteration
        path = self._files.pop()
        image = _read_image(path, self.flags)
        out = self.allocate(image.shape, image.dtype)
        np.copyto(out, image)
        self.meta["path"] = path
        return out


class ImageProducer(ProducerNode):
    """Produces one image file, ``nb_frames`` times (default once).

    The image is read in open(); every frame is one copy of it into a slot.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        nb_frames: int = 1,
        flags: int = cv2.IMREAD_COLOR,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {path!r} does not exist")
        if nb_frames < 0:
            raise ValueError(f"nb_frames must be >= 0, got {nb_frames}")
        self.path = path
        self.nb_frames = nb_frames
        self.flags = flags
        self._image: np.ndarray | None = None
        self._index = 0

    def expected_count(self) -> int | None:
        return self.nb_frames

    def open(self) -> None:
        self._image = _read_image(self.path, self.flags)
        self._index = 0

    def next(self) -> np.ndarray:
        if self._index >= self.nb_frames or self._image is None:
            raise StopIteration
        out = self.allocate(self._image.shape, self._image.dtype)
        np.copyto(out, self._image)
        self.meta["path"] = self.path
        self._index += 1
        return out

    def close(self) -> None:
        self._image = None
