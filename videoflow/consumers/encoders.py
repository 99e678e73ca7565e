"""The encoders behind the video writers: codec names, NVENC detection, and the audio remux.

Two back ends write a file:

- PyAV (FFmpeg inside its wheel): H.264 (libx264), HEVC (libx265), VP9 (libvpx-vp9),
  AV1 (SVT-AV1) and NVIDIA's NVENC (h264_nvenc, hevc_nvenc). Frames are converted to
  ``yuv420p`` with OpenCV in the writer's own process (reading the shared-memory slot in place,
  three times faster than FFmpeg's swscale on 1080p) and handed to the encoder without another
  copy; MP4 and MOV files get their index at the front (``movflags=+faststart``) so that a
  browser can start playing before the whole file has arrived.
- OpenCV (``cv2.VideoWriter``): MPEG-4 Part 2 (``mp4v``), MJPEG and any other fourcc. It has no
  encoder options and one thread; it is kept for files that must be written without PyAV.

``codec="auto"`` picks NVENC's H.264 where an NVIDIA GPU with an encoder and its driver are
present, libx264 elsewhere. Whether NVENC works is found by opening a tiny encoder in a child
Python process (once per process; a CUDA context in the flow's owner would break tasks started
with ``fork``), after a cheap check that the driver library exists at all.
"""

from __future__ import annotations

import ctypes.util
import dataclasses
import functools
import heapq
import os
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from typing import Any, Protocol

import cv2
import numpy as np

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
    "veryslow", "placebo",
)
NVENC_PRESETS = (
    "p1", "p2", "p3", "p4", "p5", "p6", "p7", "default", "slow", "medium", "fast", "hp", "hq",
    "ll", "llhq", "llhp", "lossless", "losslesshp",
)
VP9_DEADLINES = ("realtime", "good", "best")
SVT_PRESETS = tuple(str(n) for n in range(14))

# Containers that take the MP4 muxer's options (the index moved to the front).
_MP4_LIKE = (".mp4", ".m4v", ".mov")


@dataclasses.dataclass(frozen=True)
class Codec:
    """One value of ``codec=``: how it is written.

    name:     what the user passes (``"h264"``); label: what a person calls it (``"H.264"``).
    backend:  ``"pyav"`` or ``"opencv"``.
    encoder:  the FFmpeg encoder (``"libx264"``) or OpenCV fourcc (``"mp4v"``).
    presets:  the values ``preset=`` accepts (empty: the encoder has none); preset: the default.
    crf_max:  the largest ``crf`` (0 when the encoder has no constant-quality mode here).
    gpu:      True for NVENC.
    """

    name: str
    label: str
    backend: str
    encoder: str
    presets: tuple[str, ...] = ()
    preset: str | None = None
    crf_max: int = 0
    gpu: bool = False


CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec("h264", "H.264", "pyav", "libx264", X264_PRESETS, "superfast", 51),
        Codec("hevc", "HEVC", "pyav", "libx265", X264_PRESETS, "superfast", 51),
        Codec("vp9", "VP9", "pyav", "libvpx-vp9", VP9_DEADLINES, "realtime", 63),
        Codec("av1", "AV1", "pyav", "libsvtav1", SVT_PRESETS, "10", 63),
        Codec("h264_nvenc", "H.264", "pyav", "h264_nvenc", NVENC_PRESETS, None, 51, gpu=True),
        Codec("hevc_nvenc", "HEVC", "pyav", "hevc_nvenc", NVENC_PRESETS, None, 51, gpu=True),
        Codec("mp4v", "MPEG-4 Part 2", "opencv", "mp4v"),
        Codec("mjpeg", "MJPEG", "opencv", "MJPG"),
    )
}
ALIASES = {"h265": "hevc", "mjpg": "mjpeg"}
CODEC_NAMES = (*CODECS, "auto")

# Defaults the encoders need to be usable at all: libvpx's default is 256 kbit/s at its
# slowest speed; x265 and SVT-AV1 print pages of banner to stderr for every file.
_DEFAULT_CRF = {"libvpx-vp9": 32}
_QUIET = {"libx265": {"x265-params": "log-level=error"}}


def codec_for_extension(path: str) -> str:
    """The default codec of a file name: MJPEG for ``.avi`` (as OpenCV users expect), VP9 for
    ``.webm`` (the only family WebM holds), H.264 for everything else (.mp4, .mov, .mkv...)."""
    ext = os.path.splitext(path)[1].lower()
    return {".avi": "mjpeg", ".webm": "vp9"}.get(ext, "h264")


def _nvenc_driver_problem() -> str | None:
    """Why NVENC cannot work here, found without loading anything; None when it might."""
    if ctypes.util.find_library("cuda") is None and not os.path.exists("/dev/nvidiactl"):
        return "no NVIDIA driver on this machine (libcuda.so.1 not found, no /dev/nvidiactl)"
    return None


_PROBE = """
import sys
from fractions import Fraction
import av
ctx = av.CodecContext.create(sys.argv[1], "w")
ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
ctx.time_base = Fraction(1, 25)
ctx.open()
"""


@functools.cache
def nvenc_problem(encoder: str = "h264_nvenc") -> str | None:
    """Why ``encoder`` (``h264_nvenc`` or ``hevc_nvenc``) cannot encode on this machine, or
    None when it can. The answer is cached for the life of the process."""
    try:
        import av
    except ImportError:
        return "PyAV is not installed (pip install av)"
    if encoder not in av.codecs_available:
        return f"this PyAV build has no {encoder} encoder"
    problem = _nvenc_driver_problem()
    if problem is not None:
        return problem
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, encoder], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not test {encoder}: {exc}"
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit status {done.returncode}"
        return f"{encoder} did not open on this GPU/driver ({detail})"
    return None


def _check_build_has(codec: Codec) -> None:
    """ImportError/RuntimeError now, in the flow's owner, when PyAV or its encoder is missing
    (NVENC is checked by ``nvenc_problem``)."""
    if codec.backend != "pyav" or codec.gpu:
        return
    try:
        import av
    except ImportError:
        raise ImportError(
            f"{codec.label} is written through PyAV, which is not installed: pip install av "
            "(or use codec='mp4v', written by OpenCV)"
        ) from None
    if codec.encoder not in av.codecs_available:
        raise RuntimeError(
            f"this PyAV build ({av.__version__}) has no {codec.encoder} encoder for "
            f"codec={codec.name!r}: pip install -U av"
        )


@dataclasses.dataclass(frozen=True)
class EncoderChoice:
    """A resolved ``codec=``: the codec to write and why it was chosen (for the report)."""

    codec: Codec
    requested: str
    reason: str = ""


def choose_codec(codec: str | None, path: str, fourcc: str | None = None) -> EncoderChoice:
    """Turn the writer's ``codec``/``fourcc`` arguments into the codec it will write.

    Raises ValueError for an unknown name or a conflicting pair, RuntimeError when NVENC is
    asked for and cannot work here (with the reason and the alternatives).
    """
    if fourcc is not None:
        if not isinstance(fourcc, str) or len(fourcc) != 4:
            raise ValueError(f"fourcc must have 4 characters, such as 'mp4v', got {fourcc!r}")
        if codec is not None and codec.lower() not in ("mp4v", "mjpeg", "mjpg"):
            raise ValueError(
                f"give codec={codec!r} or fourcc={fourcc!r}, not both: a fourcc selects "
                "OpenCV's writer, which has no " + codec
            )
        opencv = Codec(fourcc, fourcc, "opencv", fourcc)
        return EncoderChoice(opencv, f"fourcc={fourcc!r}")
    if codec is None:
        name = codec_for_extension(path)
        _check_build_has(CODECS[name])
        return EncoderChoice(CODECS[name], name, f"the default for {os.path.splitext(path)[1]}")
    if not isinstance(codec, str):
        raise TypeError(f"codec must be a string such as 'h264', got {type(codec).__name__}")
    name = ALIASES.get(codec.lower(), codec.lower())
    if name == "auto":
        problem = nvenc_problem("h264_nvenc")
        if problem is None:
            return EncoderChoice(CODECS["h264_nvenc"], "auto", "an NVIDIA encoder is available")
        _check_build_has(CODECS["h264"])
        return EncoderChoice(CODECS["h264"], "auto", f"NVENC not available: {problem}")
    if name not in CODECS:
        hint = (
            f"; {codec!r} looks like an OpenCV fourcc: pass fourcc={codec!r}"
            if len(codec) == 4 else ""
        )
        raise ValueError(f"unknown codec {codec!r}: use one of {', '.join(CODEC_NAMES)}{hint}")
    chosen = CODECS[name]
    _check_build_has(chosen)
    if chosen.gpu:
        problem = nvenc_problem(chosen.encoder)
        if problem is not None:
            raise RuntimeError(
                f"codec={codec!r} needs an NVIDIA GPU with NVENC and its driver: {problem}. "
                "Use codec='h264' (libx264 on the CPU), or codec='auto' to take NVENC only "
                "where it works"
            )
    return EncoderChoice(chosen, name)


@dataclasses.dataclass(frozen=True)
class EncoderSettings:
    """Checked encoder options. bitrate in bits per second; threads 0: the encoder decides."""

    crf: float | None = None
    bitrate: int | None = None
    preset: str | None = None
    threads: int = 0

    def describe(self, codec: Codec) -> str:
        parts = []
        preset = self.preset or codec.preset
        if preset is not None:
            parts.append(f"preset {preset}")
        if self.crf is not None:
            parts.append(f"crf {self.crf:g}")
        if self.bitrate is not None:
            parts.append(f"{self.bitrate / 1e6:g} Mbit/s")
        if self.threads:
            parts.append(f"{self.threads} thread{'s' if self.threads > 1 else ''}")
        return ", ".join(parts)


def parse_bitrate(bitrate: int | str) -> int:
    """Bits per second from ``4000000``, ``"4M"`` or ``"800k"``."""
    if isinstance(bitrate, bool):
        raise TypeError("bitrate must be bits per second (int) or a string such as '4M'")
    if isinstance(bitrate, str):
        text = bitrate.strip().lower()
        scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
        number = text[:-1] if scale != 1 else text
        try:
            value = float(number) * scale
        except ValueError:
            raise ValueError(
                f"bitrate {bitrate!r} is not a number of bits per second such as '4M' or '800k'"
            ) from None
    elif isinstance(bitrate, (int, float)):
        value = float(bitrate)
    else:
        raise TypeError(f"bitrate must be an int or a string such as '4M', got {bitrate!r}")
    if not value > 0:
        raise ValueError(f"bitrate must be positive, got {bitrate!r}")
    return int(value)


def check_settings(
    codec: Codec,
    crf: float | None,
    bitrate: int | str | None,
    preset: str | int | None,
    threads: int | None,
) -> EncoderSettings:
    """Validate the writer's encoder options against ``codec``; ValueError names the fix."""
    given = [n for n, v in (("crf", crf), ("bitrate", bitrate), ("preset", preset),
                            ("threads", threads)) if v is not None]
    if codec.backend == "opencv":
        if given:
            raise ValueError(
                f"{codec.label} is written through OpenCV, which takes no {', '.join(given)}: "
                "use codec='h264' (or 'hevc', 'vp9', 'av1') for encoder options"
            )
        return EncoderSettings()
    if crf is not None and bitrate is not None:
        raise ValueError("give crf (constant quality) or bitrate (average rate), not both")
    if crf is not None:
        if isinstance(crf, bool) or not isinstance(crf, (int, float)):
            raise TypeError(f"crf must be a number, got {crf!r}")
        if not 0 <= crf <= codec.crf_max:
            raise ValueError(
                f"crf for {codec.encoder} goes from 0 (best) to {codec.crf_max}, got {crf}"
            )
    rate = parse_bitrate(bitrate) if bitrate is not None else None
    name = None
    if preset is not None:
        name = str(preset).lower()
        if not codec.presets:
            raise ValueError(f"{codec.encoder} has no presets")
        if name not in codec.presets:
            raise ValueError(
                f"preset {preset!r} is not one of {codec.encoder}'s: {', '.join(codec.presets)}"
            )
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 0
    ):
        raise ValueError(
            f"threads must be an integer >= 0 (0: the encoder decides), got {threads!r}"
        )
    return EncoderSettings(crf, rate, name, threads or 0)


class FrameEncoder(Protocol):
    """Writes frames of one size to one file; opened with the first frame's size."""

    def write(self, frame: np.ndarray) -> None:
        """Encode one (H, W, 3) uint8 frame in the writer's channel order, or (H, W) grey."""
        ...

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        ...


def fps_fraction(fps: float) -> Fraction:
    """The frame rate as a fraction FFmpeg keeps exactly (29.97002997 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(1001 * 1000)


class PyAVEncoder:
    """One file written through PyAV. ``rgb``: frames are RGB rather than BGR."""

    def __init__(
        self, path: str, codec: Codec, settings: EncoderSettings, fps: float,
        width: int, height: int, rgb: bool = False,
    ) -> None:
        import av

        if width % 2 or height % 2:
            raise ValueError(
                f"{codec.label} in yuv420p needs an even width and height, got {width}x{height}: "
                "crop or resize the frames by one pixel, or use codec='mjpeg'"
            )
        if codec.encoder == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # errors only, in this process
        self.path = path
        self._count = 0
        self._to_yuv = cv2.COLOR_RGB2YUV_I420 if rgb else cv2.COLOR_BGR2YUV_I420
        self._yuv = np.empty((height * 3 // 2, width), np.uint8)
        ext = os.path.splitext(path)[1].lower()
        options = {"movflags": "+faststart"} if ext in _MP4_LIKE else {}
        self._container: Any = None
        try:  # FFmpeg opens the file only when the first packet comes out: fail now instead
            with open(path, "wb"):
                pass
        except OSError as exc:
            raise OSError(f"cannot write video {path!r}: {exc.strerror or exc}") from None
        try:
            self._container = av.open(path, "w", options=options)
        except (av.FFmpegError, ValueError) as exc:
            raise OSError(f"cannot write video {path!r}: {exc}") from None
        try:
            stream: Any = self._container.add_stream(
                codec.encoder, rate=fps_fraction(fps), options=self._options(codec, settings)
            )
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.thread_count = settings.threads
            ctx = stream.codec_context
            # What the conversion below produces (BT.601, limited range), written in the
            # stream so that players do not guess BT.709 for HD sizes.
            ctx.colorspace, ctx.color_range = 6, 1  # SMPTE 170M, MPEG (limited) range
            if settings.bitrate is not None:
                stream.bit_rate = settings.bitrate
            elif codec.encoder == "libvpx-vp9":
                stream.bit_rate = 0  # constant quality
            if codec.encoder == "libx265" and ext in _MP4_LIKE:
                stream.codec_tag = "hvc1"  # the tag Apple and browsers look for
            self._stream: Any = stream
        except Exception:
            self._container.close()
            raise

    @staticmethod
    def _options(codec: Codec, settings: EncoderSettings) -> dict[str, str]:
        options = dict(_QUIET.get(codec.encoder, {}))
        preset = settings.preset or codec.preset
        crf = settings.crf if settings.crf is not None else _DEFAULT_CRF.get(codec.encoder)
        if codec.encoder == "libvpx-vp9":
            options.update({"deadline": preset or "realtime", "row-mt": "1",
                            "cpu-used": "8" if preset in (None, "realtime") else "4"})
        elif preset is not None:
            options["preset"] = preset
        if crf is not None and settings.bitrate is None:
            if codec.gpu:
                options.update({"rc": "vbr", "cq": f"{crf:g}"})
            else:
                options["crf"] = f"{crf:g}"
        return options

    def write(self, frame: np.ndarray) -> None:
        from av.video.frame import VideoFrame

        if frame.ndim == 2:
            vframe = VideoFrame.from_numpy_buffer(np.ascontiguousarray(frame), format="gray")
        else:
            cv2.cvtColor(frame, self._to_yuv, dst=self._yuv)
            # No copy: the frame points at self._yuv, which FFmpeg copies from before encode()
            # returns (the buffer is not reference counted), so it is reused for the next one.
            vframe = VideoFrame.from_numpy_buffer(self._yuv, format="yuv420p")
        vframe.pts = self._count
        self._count += 1
        self._mux(vframe)

    def _mux(self, vframe: Any) -> None:
        import av

        try:
            packets = self._stream.encode(vframe)
            if packets:
                self._container.mux(packets)
        except av.FFmpegError as exc:
            raise OSError(
                f"{self._stream.codec_context.name} cannot write {self.path!r}: {exc}"
            ) from None

    def close(self) -> None:
        container = self._container
        if container is None:
            return
        try:
            if self._count:
                self._mux(None)  # flush the frames the encoder still holds
        finally:
            self._container = None
            container.close()


class OpenCVEncoder:
    """One file written through ``cv2.VideoWriter`` with ``fourcc``. ``rgb``: RGB frames."""

    def __init__(
        self, path: str, fourcc: str, fps: float, width: int, height: int, rgb: bool = False
    ) -> None:
        self.path = path
        writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*fourcc), fps, (width, height))
        if not writer.isOpened():
            raise OSError(
                f"OpenCV cannot write video {path!r} with fourcc {fourcc!r} at {width}x{height} "
                "(is the codec available for this container?)"
            )
        self._writer: cv2.VideoWriter | None = writer
        self._rgb = rgb
        self._bgr = np.empty((height, width, 3), np.uint8)

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            raise RuntimeError(f"the writer of {self.path!r} is closed")
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR, dst=self._bgr)
        elif self._rgb:
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR, dst=self._bgr)
        self._writer.write(frame)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def open_encoder(
    path: str, choice: EncoderChoice, settings: EncoderSettings, fps: float,
    width: int, height: int, rgb: bool = False,
) -> FrameEncoder:
    """The encoder for ``choice``, opened for frames of ``width`` x ``height``."""
    codec = choice.codec
    if codec.backend == "opencv":
        return OpenCVEncoder(path, codec.encoder, fps, width, height, rgb)
    _check_build_has(codec)
    return PyAVEncoder(path, codec, settings, fps, width, height, rgb)


# -- audio --------------------------------------------------------------------------------------
def check_audio_source(path: str) -> None:
    """Fail now, naming the file, if ``path`` is missing or has no audio stream."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"copy_audio_from: no file {path!r}")
    try:
        import av
    except ImportError:
        raise ImportError("copy_audio_from needs PyAV: pip install av") from None
    try:
        with av.open(path) as source:
            if not source.streams.audio:
                raise ValueError(f"copy_audio_from: {path!r} has no audio stream")
    except av.FFmpegError as exc:
        raise ValueError(f"copy_audio_from: cannot read {path!r}: {exc}") from None


def _timed_packets(container: Any, stream: Any, shift: float, end: float | None) -> Iterator[
    tuple[float, int, Any]
]:
    """(seconds, order, packet) of one stream, shifted by ``-shift`` s and cut at ``end``."""
    tb = stream.time_base
    offset = round(shift / tb) if shift else 0
    for n, packet in enumerate(container.demux(stream)):
        if packet.dts is None or packet.size == 0:
            continue
        if offset:
            packet.pts = None if packet.pts is None else packet.pts - offset
            packet.dts -= offset
        at = float(packet.dts * tb)
        if end is not None and packet.pts is not None and float(packet.pts * tb) >= end:
            break
        yield at, n, packet


def mux_audio(video_path: str, audio_path: str, dst: str) -> None:
    """Write ``dst`` with the video of ``video_path`` and the first audio stream of
    ``audio_path``, both copied without re-encoding and interleaved by time. The audio is
    moved so that the source's start lines up with the video's first frame, and cut where
    the video ends."""
    import av

    ext = os.path.splitext(dst)[1].lower()
    options = {"movflags": "+faststart"} if ext in _MP4_LIKE else {}
    with av.open(video_path) as vin, av.open(audio_path) as ain:
        video = vin.streams.video[0]
        audio = ain.streams.audio[0]
        end = None
        if vin.duration is not None:
            end = vin.duration / av.time_base
        shift = (ain.start_time or 0) / av.time_base
        out = av.open(dst, "w", options=options)
        try:
            out_video = out.add_stream_from_template(video)
            out_audio = out.add_stream_from_template(audio)
            streams = {0: out_video, 1: out_audio}
            merged = heapq.merge(
                ((at, 0, n, p) for at, n, p in _timed_packets(vin, video, 0.0, None)),
                ((at, 1, n, p) for at, n, p in _timed_packets(ain, audio, shift, end)),
                key=lambda item: (item[0], item[1], item[2]),
            )
            for _, which, _, packet in merged:
                packet.stream = streams[which]
                out.mux(packet)
        except av.FFmpegError as exc:
            raise OSError(
                f"cannot copy the {audio.codec_context.name} audio of {audio_path!r} into "
                f"{dst!r} without re-encoding ({exc}): write a container that holds it "
                "(.mkv holds any audio), or give a source with AAC, MP3 or Opus audio"
            ) from None
        finally:
            out.close()
