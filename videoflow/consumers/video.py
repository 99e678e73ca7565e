"""Consumers that write frames to video files, image folders or a window, and results as JSON.

Inputs are read-only views of shared memory valid during ``consume()``: the writers convert or
encode them in place, nothing here keeps a frame. The encoders themselves live in encoders.py.
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

from videoflow.consumers import encoders
from videoflow.core.node import ConsumerNode


def _check_folder_of(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"cannot write {path!r}: folder {parent!r} does not exist")


def _colour_or_grey(frame: Any, who: str) -> np.ndarray:
    """``frame`` as (H, W, 3) colour or (H, W) grey uint8 (an (H, W, 1) frame loses its last
    axis); TypeError or ValueError naming ``who`` otherwise."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        got = type(frame).__name__
        if isinstance(frame, np.ndarray):
            got = f"an array of {frame.dtype}"
        raise TypeError(f"{who} needs uint8 frames, got {got}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3):
        return frame
    raise ValueError(f"{who} needs (H, W, 3) BGR or (H, W) grey frames, got shape {frame.shape}")


def _as_bgr(frame: Any, who: str) -> np.ndarray:
    """``frame`` as (H, W, 3) BGR: grey frames are converted (a copy), colour ones returned."""
    frame = _colour_or_grey(frame, who)
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame


class VideoWriter(ConsumerNode):
    """Encodes the (H, W, 3) BGR or (H, W) grey frames it receives into a video file.

    path:     the file; its extension picks the container and the default codec: H.264 for
              .mp4/.mov/.mkv (a file every browser plays), VP9 for .webm, MJPEG for .avi.
    fps:      frame rate written in the file.
    codec:    ``"h264"`` (libx264), ``"hevc"`` (libx265), ``"vp9"``, ``"av1"`` (SVT-AV1),
              ``"h264_nvenc"`` / ``"hevc_nvenc"`` (NVIDIA GPUs), ``"auto"`` (NVENC's H.264
              where it works, libx264 elsewhere): written through PyAV, in yuv420p;
              ``"mp4v"`` and ``"mjpeg"``: written through OpenCV.
    crf:      constant quality, 0 (best) to 51 (63 for vp9/av1); default the encoder's (23 for
              H.264). bitrate: an average rate instead, bits/s or ``"4M"``.
    preset:   speed against size: ``"ultrafast"`` .. ``"veryslow"`` for h264/hevc (default
              ``"superfast"``), ``"p1"`` .. ``"p7"`` for NVENC, ``"0"`` .. ``"13"`` for av1,
              ``"realtime"``/``"good"``/``"best"`` for vp9.
    threads:  encoder threads (default 0: the encoder decides; libx264 uses every core).
    fourcc:   write through OpenCV with this four-letter code instead (``"XVID"``, ``"FFV1"``).
    copy_audio_from: a file whose first audio stream is copied, without re-encoding, into the
              output at ``close()`` (cut where the video ends).

    The size is taken from the first frame; a later frame of another size is an error. Frames
    are read where they lie in shared memory and converted to the encoder's pixel format in
    this node's process. ``encoder`` (and the flow's report) says which encoder writes.
    """

    transient = ("_encoder",)

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float = 25.0,
        codec: str | None = None,
        *,
        crf: float | None = None,
        bitrate: int | str | None = None,
        preset: str | int | None = None,
        threads: int | None = None,
        fourcc: str | None = None,
        copy_audio_from: str | os.PathLike[str] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        path = os.fspath(path)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        _check_folder_of(path)
        self.path, self.fps = path, float(fps)
        self.choice = encoders.choose_codec(codec, path, fourcc)
        self.settings = encoders.check_settings(self.choice.codec, crf, bitrate, preset, threads)
        self.copy_audio_from = os.fspath(copy_audio_from) if copy_audio_from is not None else None
        if self.copy_audio_from is not None:
            encoders.check_audio_source(self.copy_audio_from)
        self._rgb = False
        self._encoder: encoders.FrameEncoder | None = None
        self._size: tuple[int, int] | None = None
        self._target = path

    @staticmethod
    def default_codec(path: str | os.PathLike[str]) -> str:
        """The codec written to ``path`` when none is given: ``"h264"``, ``"vp9"`` for .webm,
        ``"mjpeg"`` for .avi."""
        return encoders.codec_for_extension(os.fspath(path))

    @property
    def codec(self) -> str:
        """The codec written (``"h264"``, ``"h264_nvenc"``, ``"mp4v"``...)."""
        return self.choice.codec.name

    @property
    def encoder(self) -> str:
        """The encoder that writes: an FFmpeg encoder (``"libx264"``) or ``"opencv:<fourcc>"``."""
        codec = self.choice.codec
        return codec.encoder if codec.backend == "pyav" else f"opencv:{codec.encoder}"

    def report_note(self) -> str:
        """One line for the flow's report: what is written, by which encoder, and why."""
        codec = self.choice.codec
        settings = self.settings.describe(codec)
        text = f"{codec.label} by {self.encoder}" + (f" ({settings})" if settings else "")
        text += f" -> {self.path}"
        if self.choice.requested == "auto":
            text += f"; codec='auto': {self.choice.reason}"
        if self.copy_audio_from is not None:
            text += f"; audio copied from {self.copy_audio_from}"
        return text

    def open(self) -> None:
        _check_folder_of(self.path)
        self._encoder, self._size = None, None
        self._target = self.path
        if self.copy_audio_from is not None:  # video first, muxed with the audio at close()
            root, ext = os.path.splitext(self.path)
            self._target = f"{root}.videoflow-{os.getpid()}{ext}"

    def _frame(self, frame: Any) -> np.ndarray:
        """The frame as this writer encodes it: (H, W, 3) colour or (H, W) grey, checked."""
        return _colour_or_grey(frame, type(self).__name__)

    def consume(self, frame: Any) -> None:
        frame = self._frame(frame)
        size = (frame.shape[1], frame.shape[0])
        if self._encoder is None:
            self._encoder = encoders.open_encoder(
                self._target, self.choice, self.settings, self.fps, size[0], size[1], self._rgb
            )
            self._size = size
        elif size != self._size:
            raise ValueError(
                f"frame size changed from {self._size} to {size} while writing {self.path!r}"
            )
        self._encoder.write(frame)

    def close(self) -> None:
        encoder, self._encoder = self._encoder, None
        if encoder is None:
            return
        try:
            encoder.close()
            if self.copy_audio_from is not None:
                encoders.mux_audio(self._target, self.copy_audio_from, self.path)
        finally:
            if self._target != self.path and os.path.exists(self._target):
                os.unlink(self._target)


class VideofileWriter(VideoWriter):
    """videoflow 0.2.10's writer, same arguments: ``VideofileWriter(video_file,
    swap_channels=True, fps=30)``.

    swap_channels: True (the original's default) when frames arrive in RGB order, as the
                   original's readers produced them with their default; False for BGR frames
                   (OpenCV's order, what this project's readers produce).
    A frame of another size than the first is resized to the first's (as the original did).
    The original wrote only .avi (MJPEG), which is still the default there; .mp4 is now H.264
    and any keyword of :class:`VideoWriter` (``codec``, ``fourcc``, ``crf``...) may follow.
    """

    def __init__(
        self,
        video_file: str | os.PathLike[str],
        swap_channels: bool = True,
        fps: float = 30,
        **kwargs: Any,
    ) -> None:
        super().__init__(video_file, fps, **kwargs)
        self.swap_channels = bool(swap_channels)
        self._rgb = self.swap_channels

    def _frame(self, frame: Any) -> np.ndarray:
        frame = super()._frame(frame)
        if self._size is not None and (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        return frame


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
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
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
        self, window_name: str = "videoflow", wait_ms: int = 1, name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
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

    transient = ("_file",)

    def __init__(
        self,
        path: str | os.PathLike[str],
        keys: tuple[str, ...] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.path = os.fspath(path)
        _check_folder_of(self.path)
        self.keys = tuple(keys) if keys is not None else None
        self._file: Any = None

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
