"""The original videoflow's stream readers, and readers of still images.

The readers named as in videoflow 0.2.10 (``VideostreamReader``, ``VideoUrlReader``,
``VideoDeviceReader``, ``VideoFileReader`` and its old spelling ``VideofileReader``,
``VideoFolderReader``) keep that release's constructor arguments and output: each value is
``(frame_index, frame)`` with the index counted from 1, and the frame in RGB order where the
original swapped channels (streams and devices by default; files not). They are thin
subclasses of :class:`~videoflow.producers.capture.CaptureReader`, so they read like this
project's own readers (``VideoReader``, ``StreamReader``, ``CameraReader``: frames alone, BGR,
what is known about them in ``self.meta``), which new code should prefer.

Images: ``ImageFolderReader`` and ``ImageFileReader`` produce BGR frames, one copy each into a
slot; they add ``path`` to the metadata.
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from videoflow.core.node import ProducerNode
from videoflow.producers.basic import ImageProducer as ImageProducer  # 0.2.10 had it here
from videoflow.producers.capture import FILE, CaptureReader, _Lost

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class VideostreamReader(CaptureReader):
    """Reads a file, a URL or a device (as ``cv2.VideoCapture`` does) and produces
    ``(frame_index, frame)`` tuples, as videoflow 0.2.10 did.

    url_or_deviceid: a path, a URL or a device number.
    swap_channels:   produce RGB frames instead of OpenCV's BGR.
    nb_frames:       stop after this many frames (-1: until the source ends).
    nb_retries:      reopen a live source that fails up to this many times per outage, then
                     end the flow (cleanly, as the original did); 0: never reopen.

    Keyword-only extras (``read_timeout``, ``open_timeout``, ``reconnect_timeout``,
    ``backoff``, ``backoff_max``, ``name``) are those of CaptureReader. The index counts
    frames from 1. A source that cannot be opened is an error naming it (the original produced
    nothing and ended).
    """

    give_up_raises = False

    def __init__(
        self,
        url_or_deviceid: str | int,
        swap_channels: bool = True,
        nb_frames: int = -1,
        nb_retries: int = 0,
        **options: Any,
    ) -> None:
        if isinstance(nb_retries, bool) or not isinstance(nb_retries, int) or nb_retries < 0:
            raise ValueError(f"nb_retries must be a count >= 0, got {nb_retries!r}")
        super().__init__(
            url_or_deviceid, nb_frames, reconnect=nb_retries > 0, nb_retries=nb_retries, **options
        )
        self.swap_channels = bool(swap_channels)

    def next(self) -> tuple[int, np.ndarray]:  # type: ignore[override]
        frame = super().next()
        if self.swap_channels and frame.ndim == 3 and frame.shape[2] == 3:
            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=frame)  # in place, in its slot
        return (self._index, frame)


class VideoUrlReader(VideostreamReader):
    """A network stream as ``(frame_index, frame)`` in RGB (videoflow 0.2.10's arguments)."""

    def __init__(self, url: str, nb_frames: int = -1, nb_retries: int = 0, **options: Any) -> None:
        super().__init__(url, nb_frames=nb_frames, nb_retries=nb_retries, **options)


class VideoDeviceReader(VideostreamReader):
    """A camera as ``(frame_index, frame)`` in RGB (videoflow 0.2.10's arguments)."""

    def __init__(
        self, device_id: int, nb_frames: int = -1, nb_retries: int = 0, **options: Any
    ) -> None:
        super().__init__(device_id, nb_frames=nb_frames, nb_retries=nb_retries, **options)


class VideoFileReader(VideostreamReader):
    """A video file as ``(frame_index, frame)``, BGR unless ``swap_channels`` (videoflow
    0.2.10's arguments). A missing file raises FileNotFoundError at once."""

    def __init__(
        self, video_file: str, swap_channels: bool = False, nb_frames: int = -1, **options: Any
    ) -> None:
        super().__init__(video_file, swap_channels=swap_channels, nb_frames=nb_frames, **options)


#: videoflow 0.2.10's older spelling of VideoFileReader
VideofileReader = VideoFileReader


class VideoFolderReader(VideostreamReader):
    """The videos of a folder, one after the other in file-name order, as
    ``(frame_index, frame)`` with the index running on across files; ``meta["path"]`` names
    the video a frame comes from.

    videoflow 0.2.10 declared this class without arguments or an implementation; this one
    takes the folder, and the file readers' ``swap_channels`` and ``nb_frames``.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        swap_channels: bool = False,
        nb_frames: int = -1,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
        **options: Any,
    ) -> None:
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"video folder {folder!r} does not exist")
        self.folder = folder
        self.extensions = tuple(e.lower() for e in extensions)
        videos = self.files()
        if not videos:
            raise FileNotFoundError(
                f"video folder {folder!r} has no videos ({', '.join(self.extensions)})"
            )
        super().__init__(
            videos[0], swap_channels=swap_channels, nb_frames=nb_frames, source_kind=FILE, **options
        )
        self._pending: list[str] = []

    def files(self) -> list[str]:
        """The videos this reader plays, in order."""
        return _files_in(self.folder, self.extensions)

    def open(self) -> None:
        videos = self.files()
        if not videos:
            raise FileNotFoundError(f"video folder {self.folder!r} has no videos any more")
        self.source, self._pending = videos[0], videos[:0:-1]  # pop() from the end, in order
        super().open()

    def _on_end(self, lost: _Lost) -> bool:
        if lost.stalled or not self._pending:
            return False
        self.source = self._pending.pop()
        failure = self._open_capture()
        if failure is not None:
            raise OSError(f"OpenCV cannot open {self._describe()}: {failure}")
        return True

    def next(self) -> tuple[int, np.ndarray]:  # type: ignore[override]
        value = super().next()
        self.meta["path"] = self.source
        return value

    def expected_count(self) -> int | None:
        return self.nb_frames if self.nb_frames >= 0 else None


def _files_in(folder: str, extensions: tuple[str, ...]) -> list[str]:
    """The files of ``folder`` whose names end with one of ``extensions``, sorted by name."""
    return [
        os.path.join(folder, n)
        for n in sorted(os.listdir(folder))
        if n.lower().endswith(extensions) and os.path.isfile(os.path.join(folder, n))
    ]


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
        return _files_in(self.folder, self.extensions)

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


class ImageFileReader(ProducerNode):
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
