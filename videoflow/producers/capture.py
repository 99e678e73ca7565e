"""The readers of this project's own contract: video files, network streams and cameras.

Frames are (H, W, 3) uint8 BGR arrays, alone; what is known about them goes into ``self.meta``.
One class, :class:`CaptureReader`, reads every kind of source, and the original videoflow's
readers (producers/video.py) are thin subclasses of it.

Reading. ``cv2.VideoCapture`` lives in a reader thread of the task (``_CaptureThread``); the
task hands it a buffer per frame and waits for the answer with a deadline, so a ``read()``
that blocks can never hang the task. Files and streams go through OpenCV's FFmpeg backend,
which bounds its own open and read with ``CAP_PROP_OPEN_TIMEOUT_MSEC`` and
``CAP_PROP_READ_TIMEOUT_MSEC`` (an interrupt callback; measured on OpenCV 4.14 against a
127.0.0.1 server that accepts and then sends nothing: the open gives up after the open
timeout, a read after the read timeout). For them the thread decodes straight into a
shared-memory slot (``read(image=slot)``): no copy. Camera backends may not honour those
timeouts, so for devices the thread decodes into memory of its own and the frame costs one
copy into a slot: a read stuck in a driver can then be abandoned without it ever writing into
a slot that has been given to another frame. Our own deadline is the backstop: a few seconds
after OpenCV's for files and streams, ``read_timeout`` for devices.

Reconnecting. A live source (stream or camera) with ``reconnect=True`` that ends, fails or
stalls is closed and opened again, at once and then after waits that double from ``backoff`` up
to ``backoff_max`` seconds, until it is back, ``nb_retries`` attempts failed or
``reconnect_timeout`` seconds passed (then the flow ends with an error naming the source). The
flow does not end meanwhile; a stop or abort of the flow ends the wait at once. The first frame
after a gap carries ``meta["gap_ms"]`` (the wall time since the last frame before the loss);
every frame of a live source carries ``meta["reconnected"]``, the number of reconnects so far,
and the task's counters add them up (``NodeStats.reconnects``, ``offline_s``). A source that
cannot be opened when the flow starts is an error at once, not an outage.

Metadata of every frame: ``timestamp_ms`` (position in a file, capture time in ms since the
epoch for streams and cameras).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import stat
import threading
import time
from typing import Any

import cv2
import numpy as np

from videoflow.core.node import ProducerNode

log = logging.getLogger(__name__)

_STOP = object()
#: how long our own deadline waits past OpenCV's read timeout before giving the thread up
_BACKSTOP_S = 2.0
#: how often a wait (for a frame, between reconnect attempts) checks whether the flow ends
_POLL_S = 0.1


@dataclasses.dataclass(frozen=True)
class SourceKind:
    """What a reader needs to know about a kind of source."""

    what: str  # how errors name it: "video file", "stream", "video device"
    live: bool  # frames are captured now: wall-clock timestamps, reconnects make sense
    bounded: bool  # OpenCV's backend honours open/read timeouts: decode straight into slots
    api: int  # cv2.CAP_* backend preference
    hint: str  # what a failure to open usually means


FILE = SourceKind("video file", False, True, cv2.CAP_ANY, "not a video OpenCV can decode")
STREAM = SourceKind(
    "stream", True, True, cv2.CAP_FFMPEG,
    "unreachable, refused, or not a stream OpenCV can decode",
)  # fmt: skip
DEVICE = SourceKind(
    "video device", True, False, cv2.CAP_ANY,
    "no such device, it is busy, or this process may not use it",
)  # fmt: skip


def detect_source_kind(source: str | int | os.PathLike[str]) -> SourceKind:
    """The kind of a ``cv2.VideoCapture`` source: a device number or ``/dev/video*`` path is
    a camera, anything with ``://`` a stream, the rest a file."""
    if isinstance(source, bool):
        raise TypeError(f"a video source is a path, a URL or a device number, got {source!r}")
    if isinstance(source, int):
        return DEVICE
    text = os.fspath(source)
    if text.isdigit() or text.startswith("/dev/video"):
        return DEVICE
    return STREAM if "://" in text else FILE


def _is_pipe(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


class _CaptureThread(threading.Thread):
    """Owns one ``cv2.VideoCapture``: opens it, reads frames into the buffers it is handed
    (None: into memory OpenCV allocates), releases it. Talks to the task's main thread
    through two one-item queues."""

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
            self._put(("opened", (width, height)))
            while not self.stopping.is_set():
                try:
                    buf = self.requests.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if buf is _STOP:
                    break
                t0 = time.monotonic()
                ok, frame = cap.read(image=buf) if buf is not None else cap.read()
                took = time.monotonic() - t0
                result = ("frame", (ok, frame, cap.get(cv2.CAP_PROP_POS_MSEC), time.time(), took))
                # Hand the frame over without keeping a reference: a frame (or slot) the node
                # still references after next() counts as kept, which costs a copy.
                buf = frame = None
                self._put(result)
                del result
        except BaseException as exc:  # reported to the task, which raises it
            self._put(("error", exc))
        finally:
            if cap is not None:
                cap.release()

    def _put(self, item: tuple[str, Any]) -> None:
        while not self.stopping.is_set():
            try:
                self.results.put(item, timeout=_POLL_S)
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


class _Lost(Exception):
    """The source went away (``stalled`` says whether it stopped sending or ended)."""

    def __init__(self, reason: str, stalled: bool) -> None:
        super().__init__(reason)
        self.stalled = stalled


class CaptureReader(ProducerNode):
    """Reads frames from any ``cv2.VideoCapture`` source: a file, a URL or a camera.

    source:            a path, a URL (rtsp://, http://, ...) or a device number / path.
    nb_frames:         stop after this many frames (-1: until the source ends).
    read_timeout:      seconds without a frame after which the source counts as stalled.
    open_timeout:      seconds allowed for opening (connecting to) the source.
    reconnect:         live sources only: reopen a source that ends, fails or stalls
                       instead of ending the flow (see the module's documentation).
    nb_retries:        reconnect attempts per outage before giving up (-1: no count limit).
    reconnect_timeout: seconds a lost source may stay away before the flow ends with an
                       error naming it (None: no time limit).
    backoff, backoff_max: seconds between reconnect attempts: ``backoff`` after the first
                       failed one, doubling up to ``backoff_max``.
    capture_params:    extra ``cv2.VideoCapture`` open parameters (pairs of CAP_PROP_*, value).
    source_kind:       FILE, STREAM or DEVICE (default: detect_source_kind(source)).

    Prefer the named readers (:class:`VideoReader`, :class:`StreamReader`,
    :class:`CameraReader`), whose defaults suit their kind of source.
    """

    transient = ("_thread",)

    #: a source that stays away past the limits raises (False: the flow ends cleanly, as the
    #: original videoflow's readers did once their retries were used up)
    give_up_raises = True

    def __init__(
        self,
        source: str | int | os.PathLike[str],
        nb_frames: int = -1,
        *,
        read_timeout: float = 10.0,
        open_timeout: float = 10.0,
        reconnect: bool = False,
        nb_retries: int = -1,
        reconnect_timeout: float | None = 60.0,
        backoff: float = 0.5,
        backoff_max: float = 10.0,
        capture_params: tuple[int, ...] = (),
        source_kind: SourceKind | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if isinstance(nb_frames, bool) or not isinstance(nb_frames, int):
            raise TypeError(f"nb_frames must be an int, got {nb_frames!r}")
        if isinstance(nb_retries, bool) or not isinstance(nb_retries, int) or nb_retries < -1:
            raise ValueError(
                f"nb_retries must be -1 (no limit) or a count >= 0, got {nb_retries!r}"
            )
        if read_timeout <= 0 or open_timeout <= 0:
            raise ValueError("read_timeout and open_timeout must be positive (seconds)")
        if reconnect_timeout is not None and reconnect_timeout <= 0:
            raise ValueError("reconnect_timeout must be positive (seconds) or None (no limit)")
        if backoff < 0 or backoff_max < backoff:
            raise ValueError("backoff must be >= 0 and backoff_max >= backoff (seconds)")
        if len(capture_params) % 2:
            raise ValueError("capture_params are pairs: (cv2.CAP_PROP_..., value, ...)")
        self.source_kind = source_kind if source_kind is not None else detect_source_kind(source)
        self.source: str | int = source if isinstance(source, int) else os.fspath(source)
        if self.source_kind is FILE:
            self._check_file()
        if reconnect and not self.source_kind.live:
            log.debug("reconnect has no meaning for %s; ignored", self._describe())
        self.nb_frames = nb_frames
        self.read_timeout = float(read_timeout)
        self.open_timeout = float(open_timeout)
        self.reconnect = bool(reconnect) and self.source_kind.live
        self.nb_retries = nb_retries
        self.reconnect_timeout = None if reconnect_timeout is None else float(reconnect_timeout)
        self.backoff = float(backoff)
        self.backoff_max = float(backoff_max)
        self.capture_params = tuple(int(p) for p in capture_params)
        self._thread: _CaptureThread | None = None
        self._size: tuple[int, int] | None = None
        self._index = 0
        self._reconnects = 0
        self._last_wall = 0.0  # time.time() of the last frame read
        self._lost_at: float | None = None  # time.monotonic() when the source was lost
        self._gap_from = 0.0  # time.time() of the last frame before the loss
        self._attempts = 0  # reconnect attempts in this outage
        self._failure = ""  # why the last one failed

    # -- describing the source ------------------------------------------------------------
    def _describe(self) -> str:
        return f"{self.source_kind.what} {self.source!r}"

    def _check_file(self) -> None:
        path = str(self.source)
        if not os.path.isfile(path) and not _is_pipe(path):
            raise FileNotFoundError(f"video file {path!r} does not exist or is not a file")

    def _params(self) -> list[int]:
        """``cv2.VideoCapture`` open parameters: OpenCV's own timeouts where the backend
        honours them, the FFmpeg decoder's threads for files (as many as OpenCV may use in this
        task, see FlowConfig.opencv_threads), then the caller's ``capture_params``."""
        params: list[int] = []
        if self.source_kind.bounded:
            params += [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout * 1000),
            ]  # fmt: skip
        if self.source_kind is FILE and hasattr(cv2, "CAP_PROP_N_THREADS"):
            params += [cv2.CAP_PROP_N_THREADS, cv2.getNumThreads()]
        return params + list(self.capture_params)

    def expected_count(self) -> int | None:
        """A file's frame count (capped by nb_frames); None for live sources or when the
        container does not say."""
        if self.source_kind is not FILE:
            return self.nb_frames if self.nb_frames >= 0 else None
        cap = cv2.VideoCapture(str(self.source))
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        finally:
            cap.release()
        if count <= 0:
            return self.nb_frames if self.nb_frames >= 0 else None
        return min(count, self.nb_frames) if self.nb_frames >= 0 else count

    # -- the task's side --------------------------------------------------------------------
    def _stopping(self) -> bool:
        """Whether the flow is ending (False outside a flow, or on an engine that cannot say)."""
        stopping = getattr(self._vf_context, "stopping", None)
        return stopping is not None and bool(stopping())

    def open(self) -> None:
        if self.source_kind is FILE:
            self._check_file()
        self._index = 0
        self._reconnects = 0
        self._last_wall = 0.0
        self._lost_at = None
        failure = self._open_capture()
        if failure is not None:
            raise OSError(f"OpenCV cannot open {self._describe()}: {failure}")

    def _open_capture(self) -> str | None:
        """Start a capture thread on the source; None when it opened, else why not."""
        self._size = None
        thread = _CaptureThread(self.source, self.source_kind.api, self._params())
        self._thread = thread
        thread.start()
        # OpenCV's own open timeout applies first (files, streams); ours is the backstop.
        allowed = self.open_timeout + (_BACKSTOP_S if self.source_kind.bounded else 0.0)
        got = self._wait(time.monotonic() + allowed)
        if got is None:
            self._drop_thread(wait=0.0)  # stuck in OpenCV's open: abandoned
            return f"no answer within {allowed:g} s (see open_timeout)"
        what, value = got
        if what == "failed":
            self._drop_thread()
            return self.source_kind.hint
        width, height = value
        if width > 0 and height > 0:
            self._size = (width, height)
        return None

    def _wait(self, deadline: float) -> tuple[str, Any] | None:
        """The capture thread's next answer; None at the deadline. An error inside OpenCV is
        raised; a stop of the flow raises StopIteration."""
        assert self._thread is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                what, value = self._thread.results.get(timeout=min(left, _POLL_S))
            except queue.Empty:
                if self._stopping():
                    raise StopIteration from None
                continue
            if what == "error":
                raise OSError(f"reading {self._describe()} failed: {value}") from value
            return what, value

    def _drop_thread(self, wait: float = 2.0) -> None:
        """Stop the capture thread; one that does not end within ``wait`` seconds (stuck in
        OpenCV) is abandoned: a daemon, it ends when OpenCV returns."""
        if self._thread is not None:
            self._thread.stop(wait)
            self._thread = None

    def _read(self) -> np.ndarray:
        """One frame, in a slot; raises _Lost when the source ended, failed or stalled."""
        assert self._thread is not None
        slot = None
        if self._size is not None and self.source_kind.bounded:
            width, height = self._size
            slot = self.allocate((height, width, 3), np.uint8)
        self._thread.requests.put_nowait(slot)
        backstop = _BACKSTOP_S if self.source_kind.bounded else 0.0
        got = self._wait(time.monotonic() + self.read_timeout + backstop)
        if got is None:
            if slot is not None:
                # The thread is stuck inside OpenCV (its read timeout did not fire) and may
                # still write into ``slot``: this reader cannot safely carry on.
                raise TimeoutError(
                    f"{self._describe()} gave nothing for {self.read_timeout + backstop:g} s "
                    "and OpenCV did not return from read(): the stream stalled "
                    "(see read_timeout)"
                )
            self._drop_thread(wait=0.0)  # stuck in a driver: abandoned, it writes no slot
            raise _Lost(f"no frame for {self.read_timeout:g} s", stalled=True)
        ok, frame, pos_ms, wall, took = got[1]
        if not ok or frame is None:
            stalled = took >= 0.8 * self.read_timeout
            raise _Lost(f"no frame for {took:.1f} s" if stalled else "it ended", stalled)
        if slot is None or frame.__array_interface__["data"][0] != slot.ctypes.data:
            # Unknown or changed size, a device, or another layout: one copy into a slot.
            out = self.allocate(frame.shape, frame.dtype)
            np.copyto(out, frame)
            frame = out
            if frame.ndim == 3 and frame.shape[2] == 3:
                self._size = (frame.shape[1], frame.shape[0])
        self.meta["timestamp_ms"] = float(pos_ms) if not self.source_kind.live else wall * 1000.0
        self._last_wall = wall
        return frame

    def next(self) -> np.ndarray:
        if 0 <= self.nb_frames <= self._index:
            raise StopIteration
        while True:
            if self._thread is None:
                self._reopen()
            try:
                frame = self._read()
                break
            except _Lost as lost:
                self._on_lost(lost)
        meta = self.meta
        if self._lost_at is not None:
            self._back(meta)
        if self.source_kind.live:
            meta["reconnected"] = self._reconnects
        self._index += 1
        return frame

    def _on_lost(self, lost: _Lost) -> None:
        """The source ended, failed or stalled: reconnect, or end the flow."""
        self._drop_thread()
        if self._on_end(lost):
            return
        if not self.reconnect:
            if lost.stalled:
                raise TimeoutError(
                    f"{self._describe()} gave nothing for {self.read_timeout:g} s while "
                    "reading a frame: the stream stalled (see read_timeout)"
                )
            if self._index == 0:
                raise OSError(f"no frame could be decoded from {self._describe()}")
            raise StopIteration
        self._failure = str(lost)
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            self._gap_from = self._last_wall or time.time()
            self._attempts = 0
            log.warning("%s lost (%s); reconnecting", self._describe(), lost)

    def _on_end(self, lost: _Lost) -> bool:
        """Hook: a subclass that moves on to another source opens it and returns True."""
        return False

    def _reopen(self) -> None:
        """Open the lost source again: at once, then after a doubling wait; give up past
        ``nb_retries`` attempts or ``reconnect_timeout`` seconds since the loss."""
        assert self._lost_at is not None
        while True:
            if self._attempts:
                away = time.monotonic() - self._lost_at
                out_of_time = self.reconnect_timeout is not None and away >= self.reconnect_timeout
                if out_of_time or 0 <= self.nb_retries <= self._attempts:
                    self._give_up(away)
                delay = min(self.backoff * 2 ** (self._attempts - 1), self.backoff_max)
                if self.reconnect_timeout is not None:
                    delay = min(delay, self.reconnect_timeout - away)
                log.info(
                    "%s: reconnect attempt %d failed (%s); next in %.1f s",
                    self._describe(), self._attempts, self._failure, delay,
                )  # fmt: skip
                self._sleep(delay)
            elif self.nb_retries == 0:
                self._give_up(time.monotonic() - self._lost_at)
            if self._stopping():
                raise StopIteration
            self._attempts += 1
            failure = self._open_capture()
            if failure is None:
                return
            self._failure = failure

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self._stopping():
                raise StopIteration
            time.sleep(min(left, _POLL_S))

    def _give_up(self, away: float) -> None:
        limits = f"nb_retries={self.nb_retries}, reconnect_timeout={self.reconnect_timeout}"
        text = (
            f"{self._describe()} was lost {away:.1f} s ago and is not back after "
            f"{self._attempts} reconnect attempts ({limits}); last failure: {self._failure}"
        )
        if self.give_up_raises:
            raise ConnectionError(text)
        log.error("%s; ending", text)
        raise StopIteration

    def _back(self, meta: dict[str, Any]) -> None:
        """The first frame after a gap: mark it and count the reconnect."""
        offline_s = max(0.0, self._last_wall - self._gap_from)
        self._reconnects += 1
        meta["gap_ms"] = offline_s * 1000.0
        count = getattr(self._vf_context, "reconnected", None)
        if count is not None:
            count(offline_s)
        log.warning(
            "%s is back after %.1f s (reconnect %d)", self._describe(), offline_s, self._reconnects
        )
        self._lost_at = None

    def close(self) -> None:
        self._drop_thread()


class VideoReader(CaptureReader):
    """Reads the frames of a video file, decoding each straight into shared memory.

    nb_frames:     stop after this many frames (-1: the whole file).
    read_timeout:  seconds to wait for one frame before failing (files on slow mounts, pipes).

    A missing path raises FileNotFoundError at once; a file OpenCV cannot decode fails the flow
    (``Flow.join()`` raises FlowError naming the file). ``timestamp_ms`` is the frame's position.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        nb_frames: int = -1,
        *,
        read_timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        path = os.fspath(path)
        if "://" in path:
            raise ValueError(f"VideoReader reads files; for the stream {path!r} use StreamReader")
        super().__init__(path, nb_frames, read_timeout=read_timeout, source_kind=FILE, name=name)


class StreamReader(CaptureReader):
    """Reads a network stream (RTSP, HTTP, ...) through OpenCV's FFmpeg backend, reconnecting
    when it drops.

    reconnect:         reopen a stream that ends, fails or stalls (default) instead of ending
                       the flow; the flow goes on and the gap shows in ``meta["gap_ms"]``.
    nb_retries:        reconnect attempts per outage (-1: until reconnect_timeout).
    read_timeout:      seconds without a frame after which the stream counts as stalled.
    open_timeout:      seconds allowed for connecting.
    reconnect_timeout: seconds the stream may stay away before the flow ends with an error
                       naming the URL (None: for ever).
    backoff, backoff_max: the wait between attempts doubles from ``backoff`` to ``backoff_max``.

    ``timestamp_ms`` is the capture time, in ms since the epoch; ``reconnected`` counts the
    reconnects so far. An unreachable URL at the start fails the flow at once.
    """

    def __init__(
        self,
        url: str,
        nb_frames: int = -1,
        *,
        reconnect: bool = True,
        nb_retries: int = -1,
        read_timeout: float = 10.0,
        open_timeout: float = 10.0,
        reconnect_timeout: float | None = 60.0,
        backoff: float = 0.5,
        backoff_max: float = 10.0,
        name: str | None = None,
    ) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(f"StreamReader needs a URL such as rtsp://host/path, got {url!r}")
        super().__init__(
            url, nb_frames, read_timeout=read_timeout, open_timeout=open_timeout,
            reconnect=reconnect, nb_retries=nb_retries, reconnect_timeout=reconnect_timeout,
            backoff=backoff, backoff_max=backoff_max, source_kind=STREAM, name=name,
        )  # fmt: skip


class CameraReader(CaptureReader):
    """Captures frames from a camera (``device_id`` as for cv2.VideoCapture: 0, or a device
    path), reconnecting when it goes away (unplugged, reset).

    width, height, fps: ask the device for this mode (None: leave it as it is).
    reconnect, nb_retries, read_timeout, open_timeout, reconnect_timeout, backoff,
    backoff_max: as for :class:`StreamReader`.

    Each frame costs one copy into shared memory (see the module's documentation: a camera
    read stuck in its driver must never write into a slot). ``timestamp_ms`` is the capture
    time, in ms since the epoch.
    """

    def __init__(
        self,
        device_id: int | str = 0,
        nb_frames: int = -1,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        reconnect: bool = True,
        nb_retries: int = -1,
        read_timeout: float = 5.0,
        open_timeout: float = 10.0,
        reconnect_timeout: float | None = 60.0,
        backoff: float = 0.5,
        backoff_max: float = 10.0,
        name: str | None = None,
    ) -> None:
        mode: list[int] = []
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, width),
            (cv2.CAP_PROP_FRAME_HEIGHT, height),
            (cv2.CAP_PROP_FPS, fps),
        ):
            if value is not None:
                mode += [prop, int(value)]
        super().__init__(
            device_id, nb_frames, read_timeout=read_timeout, open_timeout=open_timeout,
            reconnect=reconnect, nb_retries=nb_retries, reconnect_timeout=reconnect_timeout,
            backoff=backoff, backoff_max=backoff_max, capture_params=tuple(mode),
            source_kind=DEVICE, name=name,
        )  # fmt: skip
