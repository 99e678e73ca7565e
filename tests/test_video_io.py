"""Video producers and consumers: round trips through real flows, and every bad input."""

from __future__ import annotations

import inspect
import json
import os
import re
import time
from typing import Any

import cv2
import numpy as np
import pytest
from video_helpers import (
    FrameDump,
    MjpegServer,
    expected_frame,
    load_dump,
    mean_abs_diff,
    run_flow,
)

from videoflow.consumers import ImageFolderWriter, JsonLinesWriter, VideoDisplay, VideoWriter
from videoflow.core import REALTIME, ConsumerNode
from videoflow.errors import FlowError
from videoflow.processors import GaussianBlur
from videoflow.producers import (
    CameraReader,
    ImageFileReader,
    ImageFolderReader,
    MovingShapesProducer,
    StreamReader,
    VideoDeviceReader,
    VideoFileReader,
    VideofileReader,
    VideoFolderReader,
    VideoReader,
    VideostreamReader,
    VideoUrlReader,
    write_test_clip,
)

W, H = 320, 240


def decoded(path: str) -> list[np.ndarray]:
    """Every frame of a video as cv2.VideoCapture gives it (BGR)."""
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture
def mjpg_clip(tmp_path):
    return write_test_clip(str(tmp_path / "clip.avi"), W, H, nb_frames=30, fps=25, fourcc="MJPG")


@pytest.mark.timeout(60)
def test_mjpg_file_round_trip_count_size_content_and_metadata(mjpg_clip, tmp_path):
    reader = VideoReader(mjpg_clip)
    run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])
    frames, metas = load_dump(str(tmp_path / "dump"))
    assert len(frames) == 30
    for i, frame in enumerate(frames):
        assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
        assert mean_abs_diff(frame, expected_frame(i, W, H)) < 4.0, i
    assert [m["index"] for m in metas] == list(range(30))
    assert [m["timestamp_ms"] for m in metas] == pytest.approx([40.0 * i for i in range(30)])


@pytest.mark.timeout(60)
def test_nb_frames_limits_the_reader(mjpg_clip, tmp_path):
    reader = VideoReader(mjpg_clip, nb_frames=7)
    stats = run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])
    assert stats.produced == stats.delivered == 7


@pytest.mark.timeout(60)
def test_mp4v_written_by_a_flow_reads_back(tmp_path):
    path = str(tmp_path / "blurred.mp4")
    producer = MovingShapesProducer(W, H, count=40)
    blur = GaussianBlur(ksize=5, nb_tasks=2)(producer)
    stats = run_flow(producer, [VideoWriter(path, fps=25, fourcc="mp4v")(blur)])
    assert stats.delivered == 40
    frames = decoded(path)
    assert len(frames) == 40
    for i, frame in enumerate(frames):
        assert frame.shape == (H, W, 3)
        expected = cv2.GaussianBlur(expected_frame(i, W, H), (5, 5), 0)
        assert mean_abs_diff(frame, expected) < 6.0, i


@pytest.mark.timeout(60)
def test_png_folder_round_trip_is_exact(tmp_path):
    folder = str(tmp_path / "png")
    producer = MovingShapesProducer(W, H, count=12)
    run_flow(producer, [ImageFolderWriter(folder)(producer)])
    assert len(os.listdir(folder)) == 12
    reader = ImageFolderReader(folder)
    run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])
    frames, metas = load_dump(str(tmp_path / "dump"))
    assert len(frames) == 12
    for i, frame in enumerate(frames):
        assert np.array_equal(frame, expected_frame(i, W, H)), i
    assert os.path.basename(metas[3]["path"]) == "frame_000003.png"


@pytest.mark.timeout(60)
def test_image_producer_repeats_one_image(tmp_path):
    path = str(tmp_path / "one.png")
    cv2.imwrite(path, expected_frame(5, W, H))
    producer = ImageFileReader(path, nb_frames=3)
    run_flow(producer, [FrameDump(str(tmp_path / "dump"))(producer)])
    frames, _ = load_dump(str(tmp_path / "dump"))
    assert len(frames) == 3
    assert all(np.array_equal(f, expected_frame(5, W, H)) for f in frames)


@pytest.mark.timeout(60)
def test_realtime_file_flow_accounts_for_every_frame(mjpg_clip, tmp_path):
    reader = VideoReader(mjpg_clip)
    blur = GaussianBlur(ksize=31)(reader)
    stats = run_flow(
        reader, [VideoWriter(str(tmp_path / "o.avi"), fourcc="MJPG")(blur)], flow_type=REALTIME
    )
    assert stats.produced == 30
    assert stats.produced == stats.delivered + stats.dropped


# -- bad input ----------------------------------------------------------------------------------
def test_missing_file_fails_at_creation_naming_it(tmp_path):
    path = str(tmp_path / "nope.mp4")
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4"):
        VideoReader(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        ImageFileReader(str(tmp_path / "nope.png"))
    with pytest.raises(FileNotFoundError, match="nodir"):
        ImageFolderReader(str(tmp_path / "nodir"))
    with pytest.raises(FileNotFoundError, match="nodir"):
        VideoWriter(str(tmp_path / "nodir" / "out.mp4"))


@pytest.mark.timeout(60)
def test_not_a_video_fails_the_flow_naming_the_file(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 100)
    reader = VideoReader(str(path), name="reader")
    with pytest.raises(FlowError, match=r"notes\.mp4") as info:
        run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])
    assert info.value.node == "reader"


@pytest.mark.timeout(60)
def test_file_removed_before_the_run_fails_the_flow(mjpg_clip, tmp_path):
    reader = VideoReader(mjpg_clip)
    os.remove(mjpg_clip)
    with pytest.raises(FlowError, match=r"clip\.avi"):
        run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])


@pytest.mark.timeout(60)
def test_truncated_video_is_an_error_not_an_empty_run(mjpg_clip, tmp_path):
    path = str(tmp_path / "head.avi")
    with open(mjpg_clip, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read(600))
    reader = VideoReader(path)
    with pytest.raises(FlowError, match=r"head\.avi"):
        run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])


@pytest.mark.timeout(60)
def test_unreachable_url_fails_fast_naming_it(tmp_path):
    url = "http://127.0.0.1:9/nothing-here.mjpg"
    reader = StreamReader(url, open_timeout=3.0)
    t0 = time.monotonic()
    with pytest.raises(FlowError, match=r"nothing-here\.mjpg"):
        run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])
    assert time.monotonic() - t0 < 20


@pytest.mark.timeout(60)
def test_missing_device_fails_naming_it(tmp_path):
    reader = CameraReader("/dev/video-videoflow-test")
    with pytest.raises(FlowError, match="video-videoflow-test"):
        run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])


@pytest.mark.timeout(60)
def test_stream_that_ends_delivers_its_frames(tmp_path):
    with MjpegServer(nb_frames=6, stall=False) as server:
        reader = StreamReader(server.url, reconnect=False, read_timeout=5.0)
        stats = run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])
    assert stats.delivered == 6
    frames, metas = load_dump(str(tmp_path / "dump"))
    assert frames[0].shape == (120, 160, 3)
    assert metas[0]["timestamp_ms"] == pytest.approx(time.time() * 1000, abs=60_000)


@pytest.mark.timeout(60)
def test_stalled_stream_ends_with_an_error_after_read_timeout(tmp_path):
    with MjpegServer(nb_frames=5, stall=True) as server:
        reader = StreamReader(server.url, reconnect=False, read_timeout=1.0, name="camera")
        with pytest.raises(FlowError, match="stalled") as info:
            run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])
    # The timeout marker catches a reader that never gives up; the message says it gave up
    # because no frame came for (about) its read_timeout, not for any other reason.
    assert info.value.node == "camera"
    assert re.search(r"no frame for \d+(\.\d+)? s", str(info.value)), str(info.value)
    frames, _ = load_dump(str(tmp_path / "dump"))
    assert len(frames) == 5


def test_bad_parameters_are_rejected_at_creation(mjpg_clip):
    with pytest.raises(ValueError):
        VideoReader(mjpg_clip, read_timeout=0)
    with pytest.raises(ValueError, match="URL"):
        StreamReader("not a url")
    with pytest.raises(ValueError, match="fourcc"):
        VideoWriter("/tmp/x.mp4", fourcc="h264x")
    with pytest.raises(ValueError, match="index"):
        ImageFolderWriter("/tmp/x", pattern="frame_{n}.png")


@pytest.mark.timeout(60)
def test_unknown_codec_fails_naming_the_output(tmp_path):
    producer = MovingShapesProducer(W, H, count=3)
    writer = VideoWriter(str(tmp_path / "out.xyz"), fourcc="ZZZZ", name="writer")(producer)
    with pytest.raises(FlowError, match=r"out\.xyz"):
        run_flow(producer, [writer])


def test_video_display_without_a_display_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    display = VideoDisplay()
    with pytest.raises(RuntimeError, match="display"):
        display.open()


def test_json_lines_writer_writes_one_record_per_message(tmp_path):
    path = str(tmp_path / "r.jsonl")
    writer = JsonLinesWriter(path, keys=("detections",))
    writer.open()
    for i in range(3):
        writer.meta.clear()
        writer.meta.update(index=i, timestamp_ms=40.0 * i)
        writer.consume(np.full((i, 6), i, dtype=np.float32))
    writer.close()
    with open(path) as f:
        records = [json.loads(line) for line in f]
    assert [r["index"] for r in records] == [0, 1, 2]
    assert records[2]["detections"] == [[2.0] * 6, [2.0] * 6]
    assert records[1]["timestamp_ms"] == 40.0


# -- the original videoflow 0.2.10's readers ------------------------------------------------------
class PairDump(ConsumerNode):
    """Saves the frame of every ``(index, frame)`` value as ``<index>.npy``, and one JSON line
    per message: the value's index, the message's metadata, the frame's layout."""

    def __init__(self, folder: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.folder = folder

    def open(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        self._log = open(os.path.join(self.folder, "pairs.jsonl"), "a", buffering=1)  # noqa: SIM115

    def consume(self, value: Any) -> None:
        index, frame = value
        np.save(os.path.join(self.folder, f"{index:06d}.npy"), frame)
        record = {"value_index": index, "contiguous": bool(frame.flags.c_contiguous)}
        record.update((k, v) for k, v in self.meta.items() if isinstance(v, (int, float, str)))
        self._log.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._log.close()


def load_pairs(folder: str) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    with open(os.path.join(folder, "pairs.jsonl")) as f:
        records = sorted((json.loads(line) for line in f), key=lambda r: r["index"])
    frames = [np.load(os.path.join(folder, f"{r['value_index']:06d}.npy")) for r in records]
    return frames, records


#: videoflow 0.2.10's constructors (videoflow/producers/video.py of that release)
ORIGINAL_SIGNATURES = {
    VideostreamReader: [
        ("url_or_deviceid", inspect.Parameter.empty), ("swap_channels", True),
        ("nb_frames", -1), ("nb_retries", 0),
    ],
    VideoUrlReader: [("url", inspect.Parameter.empty), ("nb_frames", -1), ("nb_retries", 0)],
    VideoDeviceReader: [
        ("device_id", inspect.Parameter.empty), ("nb_frames", -1), ("nb_retries", 0),
    ],
    VideoFileReader: [
        ("video_file", inspect.Parameter.empty), ("swap_channels", False), ("nb_frames", -1),
    ],
}  # fmt: skip


@pytest.mark.parametrize("cls", list(ORIGINAL_SIGNATURES), ids=lambda c: c.__name__)
def test_original_readers_keep_the_original_arguments(cls):
    params = list(inspect.signature(cls).parameters.values())
    positional = [
        (p.name, p.default) for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    assert positional == ORIGINAL_SIGNATURES[cls]
    assert VideofileReader is VideoFileReader
    assert issubclass(cls, VideostreamReader)


@pytest.mark.timeout(90)
def test_original_file_reader_gives_index_from_1_and_bgr_frames(mjpg_clip, tmp_path):
    truth = decoded(mjpg_clip)
    reader = VideoFileReader(mjpg_clip)
    run_flow(reader, [PairDump(str(tmp_path / "a"))(reader)])
    frames, records = load_pairs(str(tmp_path / "a"))
    assert [r["value_index"] for r in records] == list(range(1, 31))
    assert all(r["contiguous"] for r in records)
    assert all(np.array_equal(f, t) for f, t in zip(frames, truth, strict=True))


@pytest.mark.timeout(90)
def test_original_readers_swap_channels_as_the_original_did(mjpg_clip, tmp_path):
    """swap_channels=True gives RGB (VideostreamReader's default, VideoFileReader's option),
    contiguous like the original's frames after their trip through a pickle."""
    truth = [t[..., ::-1] for t in decoded(mjpg_clip)][:5]
    for k, reader in enumerate(
        [VideoFileReader(mjpg_clip, True, 5), VideostreamReader(mjpg_clip, nb_frames=5)]
    ):
        run_flow(reader, [PairDump(str(tmp_path / str(k)))(reader)])
        frames, records = load_pairs(str(tmp_path / str(k)))
        assert [r["value_index"] for r in records] == [1, 2, 3, 4, 5]
        assert all(np.array_equal(f, t) for f, t in zip(frames, truth, strict=True))
        assert all(r["contiguous"] for r in records)


@pytest.mark.timeout(90)
def test_video_folder_reader_plays_the_videos_in_name_order(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    second = write_test_clip(str(folder / "b.avi"), 160, 120, nb_frames=4, fps=25, fourcc="MJPG")
    first = write_test_clip(str(folder / "a.avi"), W, H, nb_frames=3, fps=25, fourcc="MJPG")
    (folder / "notes.txt").write_text("not a video")
    reader = VideoFolderReader(str(folder))
    run_flow(reader, [PairDump(str(tmp_path / "d"))(reader)])
    frames, records = load_pairs(str(tmp_path / "d"))
    assert [r["value_index"] for r in records] == list(range(1, 8))
    assert [os.path.basename(r["path"]) for r in records] == ["a.avi"] * 3 + ["b.avi"] * 4
    truth = decoded(first) + decoded(second)
    assert all(np.array_equal(f, t) for f, t in zip(frames, truth, strict=True))
    with pytest.raises(FileNotFoundError, match="no videos"):
        VideoFolderReader(str(tmp_path / "d"))


def test_original_readers_reject_what_the_original_could_not_read(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gone\.avi"):
        VideoFileReader(str(tmp_path / "gone.avi"))
    with pytest.raises(ValueError, match="nb_retries"):
        VideoUrlReader("http://127.0.0.1:9/x", nb_retries=-1)
