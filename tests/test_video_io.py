"""Video producers and consumers: round trips through real flows, and every bad input."""

from __future__ import annotations

import json
import os
import time

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
from videoflow.core import REALTIME
from videoflow.errors import FlowError
from videoflow.processors import GaussianBlur
from videoflow.producers import (
    ImageFolderReader,
    ImageProducer,
    MovingShapesProducer,
    VideoDeviceReader,
    VideofileReader,
    VideoUrlReader,
    write_test_clip,
)

W, H = 320, 240


@pytest.fixture
def mjpg_clip(tmp_path):
    return write_test_clip(str(tmp_path / "clip.avi"), W, H, nb_frames=30, fps=25, fourcc="MJPG")


@pytest.mark.timeout(60)
def test_mjpg_file_round_trip_count_size_content_and_metadata(mjpg_clip, tmp_path):
    reader = VideofileReader(mjpg_clip)
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
    reader = VideofileReader(mjpg_clip, nb_frames=7)
    stats = run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])
    assert stats.produced == stats.delivered == 7


@pytest.mark.timeout(60)
def test_mp4v_written_by_a_flow_reads_back(tmp_path):
    path = str(tmp_path / "blurred.mp4")
    producer = MovingShapesProducer(W, H, count=40)
    blur = GaussianBlur(ksize=5, nb_tasks=2)(producer)
    stats = run_flow(producer, [VideoWriter(path, fps=25, fourcc="mp4v")(blur)])
    assert stats.delivered == 40
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
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
    producer = ImageProducer(path, nb_frames=3)
    run_flow(producer, [FrameDump(str(tmp_path / "dump"))(producer)])
    frames, _ = load_dump(str(tmp_path / "dump"))
    assert len(frames) == 3
    assert all(np.array_equal(f, expected_frame(5, W, H)) for f in frames)


@pytest.mark.timeout(60)
def test_realtime_file_flow_accounts_for_every_frame(mjpg_clip, tmp_path):
    reader = VideofileReader(mjpg_clip)
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
        VideofileReader(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        ImageProducer(str(tmp_path / "nope.png"))
    with pytest.raises(FileNotFoundError, match="nodir"):
        ImageFolderReader(str(tmp_path / "nodir"))
    with pytest.raises(FileNotFoundError, match="nodir"):
        VideoWriter(str(tmp_path / "nodir" / "out.mp4"))


@pytest.mark.timeout(60)
def test_not_a_video_fails_the_flow_naming_the_file(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 100)
    reader = VideofileReader(str(path), name="reader")
    with pytest.raises(FlowError, match=r"notes\.mp4") as info:
        run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])
    assert info.value.node == "reader"


@pytest.mark.timeout(60)
def test_file_removed_before_the_run_fails_the_flow(mjpg_clip, tmp_path):
    reader = VideofileReader(mjpg_clip)
    os.remove(mjpg_clip)
    with pytest.raises(FlowError, match=r"clip\.avi"):
        run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])


@pytest.mark.timeout(60)
def test_truncated_video_is_an_error_not_an_empty_run(mjpg_clip, tmp_path):
    path = str(tmp_path / "head.avi")
    with open(mjpg_clip, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read(600))
    reader = VideofileReader(path)
    with pytest.raises(FlowError, match=r"head\.avi"):
        run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])


@pytest.mark.timeout(60)
def test_unreachable_url_fails_fast_naming_it(tmp_path):
    url = "http://127.0.0.1:9/nothing-here.mjpg"
    reader = VideoUrlReader(url, open_timeout=3.0)
    t0 = time.monotonic()
    with pytest.raises(FlowError, match=r"nothing-here\.mjpg"):
        run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])
    assert time.monotonic() - t0 < 20


@pytest.mark.timeout(60)
def test_missing_device_fails_naming_it(tmp_path):
    reader = VideoDeviceReader("/dev/video-videoflow-test")
    with pytest.raises(FlowError, match="video-videoflow-test"):
        run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])


@pytest.mark.timeout(60)
def test_stream_that_ends_delivers_its_frames(tmp_path):
    with MjpegServer(nb_frames=6, stall=False) as server:
        reader = VideoUrlReader(server.url, read_timeout=5.0)
        stats = run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])
    assert stats.delivered == 6
    frames, metas = load_dump(str(tmp_path / "dump"))
    assert frames[0].shape == (120, 160, 3)
    assert metas[0]["timestamp_ms"] == pytest.approx(time.time() * 1000, abs=60_000)


@pytest.mark.timeout(60)
def test_stalled_stream_ends_with_an_error_after_read_timeout(tmp_path):
    with MjpegServer(nb_frames=5, stall=True) as server:
        reader = VideoUrlReader(server.url, read_timeout=1.0, name="camera")
        t0 = time.monotonic()
        with pytest.raises(FlowError, match="stalled") as info:
            run_flow(reader, [FrameDump(str(tmp_path / "dump"))(reader)])
        elapsed = time.monotonic() - t0
    assert info.value.node == "camera"
    assert elapsed < 15
    frames, _ = load_dump(str(tmp_path / "dump"))
    assert len(frames) == 5


def test_bad_parameters_are_rejected_at_creation(mjpg_clip):
    with pytest.raises(ValueError):
        VideofileReader(mjpg_clip, read_timeout=0)
    with pytest.raises(ValueError, match="URL"):
        VideoUrlReader("not a url")
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
