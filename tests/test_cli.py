"""The ``videoflow`` command: info and demo, as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import cv2
import pytest

from videoflow import cli
from videoflow.config import FlowConfig
from videoflow.transport import native_status


def test_info_says_what_is_in_use(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"native extension: {native_status()}" in out
    assert f"start method: {FlowConfig.from_options().start_method} " in out
    assert "/dev/shm: " in out and "GiB free" in out
    assert f"threads: {FlowConfig.from_options().opencv_threads_rule()}" in out


@pytest.mark.timeout(60)
def test_info_into_a_closed_pipe_exits_quietly():
    cmd = f"{sys.executable} -m videoflow.cli info | head -1"
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30)
    assert done.stdout.startswith("videoflow ")
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(120)
def test_demo_writes_a_video_and_reports_per_node_counts(tmp_path, capsys):
    output = tmp_path / "demo.mp4"
    assert cli.main(["demo", "--frames", "12", "--no-progress", "-o", str(output)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {output}" in out
    assert "12 produced, 12 delivered, 0 dropped" in out
    assert "bottleneck:" in out
    cap = cv2.VideoCapture(str(output))
    try:
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
        assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (
            1280,
            720,
        )
    finally:
        cap.release()
