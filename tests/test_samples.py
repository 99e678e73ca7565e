"""The samples/ scripts and the demo, each run on a short generated clip."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import wait_clean
from video_helpers import MjpegServer, assert_clean

from videoflow.demo import run_demo
from videoflow.processors.vision import hog_available, iou_matrix
from videoflow.producers import write_test_clip
from videoflow.producers.shapes import person_box

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_sample(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run samples/<name> as a script; fail with its output if it fails or leaves anything."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "samples", name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    entries, _ = wait_clean(proc.pid)
    assert not entries, f"{name} left shared memory behind: {entries}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


def frame_count(path: str) -> tuple[int, tuple[int, int]]:
    cap = cv2.VideoCapture(path)
    count, size = 0, (0, 0)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        count, size = count + 1, (frame.shape[1], frame.shape[0])
    cap.release()
    return count, size


@pytest.fixture
def clip(tmp_path):
    return write_test_clip(str(tmp_path / "in.avi"), 320, 240, 30, 25, "MJPG", with_person=True)


@pytest.mark.timeout(90)
def test_make_test_clip(tmp_path):
    out = str(tmp_path / "clip.mp4")
    result = run_sample(
        "make_test_clip.py", out, "--width", "160", "--height", "120", "--frames", "12"
    )
    assert result.returncode == 0, result.stdout
    assert frame_count(out) == (12, (160, 120))


@pytest.mark.timeout(90)
def test_blur_video(clip, tmp_path):
    out = str(tmp_path / "blurred.mp4")
    result = run_sample("blur_video.py", clip, out, "--ksize", "9")
    assert result.returncode == 0, result.stdout
    assert "blurred 30 frames" in result.stdout
    assert frame_count(out) == (30, (320, 240))


@pytest.mark.timeout(90)
def test_people_tracking(clip, tmp_path):
    out, jsonl = str(tmp_path / "tracked.avi"), str(tmp_path / "tracked.jsonl")
    result = run_sample("people_tracking.py", clip, out, "--jsonl", jsonl)
    assert result.returncode == 0, result.stdout
    assert frame_count(out) == (30, (320, 240))
    with open(jsonl) as f:
        records = [json.loads(line) for line in f]
    assert [r["index"] for r in records] == list(range(30))
    assert sum(1 for r in records if r["tracks"]) >= 20
    if hog_available():  # the person sprite is found and keeps one id
        ids = set()
        for r in records[5:]:
            truth = np.array([person_box(r["index"], 320, 240)], dtype=np.float32)
            for row in r["tracks"]:
                if iou_matrix(truth, np.array([row[:4]])).item() > 0.3:
                    ids.add(row[6])
        assert len(ids) == 1, ids


@pytest.mark.timeout(90)
def test_camera_realtime_from_a_stream_prints_drop_counters(tmp_path):
    out = str(tmp_path / "camera.avi")
    with MjpegServer(nb_frames=20, stall=False) as server:
        result = run_sample(
            "camera_realtime.py", server.url, "--seconds", "20", "--output", out, "--no-reconnect"
        )
    assert result.returncode == 0, result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert "produced=20" in last and "dropped=" in last, result.stdout
    delivered = int(last.split("delivered=")[1].split()[0])
    assert frame_count(out)[0] == delivered


@pytest.mark.timeout(90)
def test_camera_realtime_reports_a_missing_device():
    result = run_sample("camera_realtime.py", "/dev/video-videoflow-none", "--seconds", "5")
    assert result.returncode == 1
    assert "video-videoflow-none" in result.stdout


@pytest.mark.timeout(90)
def test_run_demo_counts_every_frame(tmp_path):
    out = str(tmp_path / "demo.avi")
    stats = run_demo(out, nb_frames=12, nb_tasks=2)
    assert_clean()
    assert stats.produced == stats.delivered == 12
    blur = [n for n in stats.nodes if n.nb_tasks == 2]
    assert len(blur) == 1 and blur[0].messages_in == 12
    assert frame_count(out) == (12, (1280, 720))


@pytest.mark.timeout(120)
def test_multi_camera_sends_each_cameras_result_to_its_own_writer_in_order(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "samples"))
    try:
        from multi_camera import camera_of, read_barcode
    finally:
        sys.path.pop(0)
    out = str(tmp_path / "cams")
    result = run_sample(
        "multi_camera.py", out, "--cameras", "4", "--frames", "30", "--size", "320x180",
        "--batch", "--measure", timeout=110,
    )
    assert result.returncode == 0, result.stdout
    written = {}  # BATCH: every frame that joined a set reaches its writer
    for line in result.stdout.splitlines():
        if line.startswith("cam") and "joined a set" in line:
            written[int(line[3])] = int(line.split(": ")[1].split()[0])
    assert sorted(written) == [0, 1, 2, 3], result.stdout
    for k in range(4):
        cap = cv2.VideoCapture(os.path.join(out, f"cam{k}.avi"))
        indices = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert camera_of(frame, 4) == k, f"cam{k}.avi holds a frame of another camera"
            indices.append(read_barcode(frame))
        cap.release()
        # Every frame of camera k that went out in a set, in the order it was taken.
        assert len(indices) == written[k] and written[k] >= 15, (k, indices)
        assert indices == sorted(set(indices)) and max(indices) < 30, (k, indices)
    assert "model cost per frame: batch 1" in result.stdout
