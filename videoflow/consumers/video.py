"""Consumers that write frames to video files, image folders or a window, and results as JSON.

Inputs are read-only views of shared memory valid during ``consume()``: OpenCV encodes them
in place, nothing here keeps a frame.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import sys
from typing import Any

import cv2
import numpy as np

from videoflow.core.node import ConsumerNode


def _check_folder_of(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"cannot write {path!r}: folder {parent!r} does not exist")


def _as_bgr(frame: Any, who: str) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise TypeError(f"{who} needs uint8 frames, got {type(frame).__name__}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise ValueError(f"{who} needs (H, W, 3) BGR or (H, W) grey frames, got shape {frame.shape}")


class VideofileWriter(ConsumerNode):
    """Encodes the frames it receives into a video file with cv2.VideoWriter.

    fps:     frame rate written in the file.
    fourcc:  four-letter codec code: ``"mp4v"`` (.mp4), ``"MJPG"`` (.avi), ``"XVID"``, ``"FFV1"``...
    The size is taken from the first frame; a later frame of another size is an error.
    Grey (H, W) frames are converted to BGR.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float = 25.0,
        fourcc: str = "mp4v",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        path = os.fspath(path)
        if len(fourcc) != 4:
            raise ValueError(f"fourcc must have 4 characters, such as 'mp4v', got {fourcc!r}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        _check_folder_of(path)
        self.path, self.fps, self.fourcc = path, float(fps), fourcc
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_writer"] = None
        return state

    def open(self) -> None:
        _check_folder_of(self.path)
        self._writer, self._size = None, None

    def consume(self, frame: Any) -> None:
        frame = _as_bgr(frame, "VideofileWriter")
        size = (frame.shape[1], frame.shape[0])
        if self._writer is None:
            code = cv2.VideoWriter.fourcc(*self.fourcc)
            writer = cv2.VideoWriter(self.path, code, self.fps, size)
            if not writer.isOpened():
                raise OSError(
                    f"OpenCV cannot write video {self.path!r} with fourcc {self.fourcc!r} "
                    f"at {size[0]}x{size[1]} (is the codec available for this container?)"
                )
            self._writer, self._size = writer, size
        elif size != self._size:
            raise ValueError(
                f"frame size changed from {self._size} to {size} while writing {self.path!r}"
            )
        self._writer.write(frame)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class ImageFolderWriter(ConsumerNode):
    """Writes each frame as one image file in ``folder``, named from the message index.

    pattern:  file name, formatted with ``index`` (default ``frame_000000.png``); the extension
              picks the format (.png is lossless, what the round-trip tests rely on).
    The folder is created if needed.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        pattern: str = "frame_{index:06d}.png",
        params: tuple[int, ...] = (),
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.folder = os.fspath(folder)
        try:
            pattern.format(index=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"pattern {pattern!r} must format with index=...: {exc}") from None
        self.pattern = pattern
        self.params = list(params)

    def open(self) -> None:
        os.makedirs(self.folder, exist_ok=True)

    def consume(self, frame: Any) -> None:
        path = os.path.join(self.folder, self.pattern.format(index=self.meta.get("index", 0)))
        if not cv2.imwrite(path, frame, self.params):
            raise OSError(f"OpenCV cannot write image {path!r}")


HEADLESS = "opencv-python-headless"  # the OpenCV that videoflow depends on (pyproject.toml)


def gui_backend() -> str | None:
    """The window backend this OpenCV was built with (GTK3, QT5, ...); None for a headless build
    such as opencv-python-headless, videoflow's default, which has none."""
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key == "GUI":
            value = value.strip()
            return None if value.upper() in ("", "NONE", "NO") else value
    return None


def desktop_opencv_command() -> str:
    """How to swap the headless OpenCV for the desktop build, within the versions videoflow
    accepts (read from its installed requirements, the same as pyproject.toml's)."""
    spec = ""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for req in importlib.metadata.requires("videoflow-shm") or ():
            name = re.split(r"[<>=!~;\s\[]", req, maxsplit=1)[0]
            if name == HEADLESS:
                spec = req[len(name):].split(";")[0].strip()
    return f'pip uninstall -y {HEADLESS} && pip install "opencv-python{spec}"'


def display_problem() -> str | None:
    """Why cv2.imshow cannot work here (every reason that applies), or None when it may."""
    problems = []
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        problems.append("no display: neither DISPLAY nor WAYLAND_DISPLAY is set")
    if gui_backend() is None:
        problems.append(
            f"this OpenCV has no window backend ({HEADLESS}, which videoflow installs, has "
            f"none); on a desktop, swap it for the desktop build: {desktop_opencv_command()}"
        )
    return "; ".join(problems) or None


class VideoDisplay(ConsumerNode):
    """Shows frames in a window with cv2.imshow.

    wait_ms:  cv2.waitKey delay after each frame (1 keeps the window responsive).
    Needs an OpenCV with a window backend: videoflow installs opencv-python-headless, which has
    none; ``desktop_opencv_command()`` (and ``videoflow info``) gives the swap. Without one, or
    without a display, open() raises a clear RuntimeError (the flow fails naming this node)
    instead of crashing the process.
    """

    def __init__(
        self, window_name: str = "videoflow", wait_ms: int = 1, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        self.window_name = window_name
        self.wait_ms = int(wait_ms)

    def open(self) -> None:
        problem = display_problem()
        if problem is None:
            try:
                cv2.namedWindow(self.window_name, cv2.WINDOW_NORMAL)
            except cv2.error as exc:
                problem = f"OpenCV could not open a window ({exc})"
        if problem is not None:
            raise RuntimeError(f"VideoDisplay cannot show frames: {problem}")

    def consume(self, frame: Any) -> None:
        cv2.imshow(self.window_name, frame)
        cv2.waitKey(self.wait_ms)

    def close(self) -> None:
        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(self.window_name)


def to_json(value: Any) -> Any:
    """A JSON-ready form of a node output: arrays become (nested) lists, floats stay floats."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


class JsonLinesWriter(ConsumerNode):
    """Writes one JSON object per message: ``index``, ``timestamp_ms`` when known, and the inputs.

    keys:  one name per parent (for example ``("detections", "tracks")``); by default a single
           parent is written under ``"data"`` and several as a list under ``"data"``.
    Arrays such as N x 6 detections become lists of rows.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        keys: tuple[str, ...] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.path = os.fspath(path)
        _check_folder_of(self.path)
        self.keys = tuple(keys) if keys is not None else None
        self._file: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_file"] = None
        return state

    def open(self) -> None:
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def consume(self, *inputs: Any) -> None:
        record: dict[str, Any] = {"index": self.meta.get("index")}
        if "timestamp_ms" in self.meta:
            record["timestamp_ms"] = self.meta["timestamp_ms"]
        if self.keys is not None:
            if len(self.keys) != len(inputs):
                raise ValueError(f"{len(self.keys)} keys {self.keys} for {len(inputs)} inputs")
            record.update({k: to_json(v) for k, v in zip(self.keys, inputs, strict=True)})
        else:
            record["data"] = to_json(inputs[0] if len(inputs) == 1 else list(inputs))
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
