"""The ``videoflow`` command: info and demo, as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys

import cv2
import pytest
from conftest import wait_clean

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
    engines = r"^engines: process(, ray \(\d| \(ray: not installed; pip install)"
    assert re.search(engines, out, re.M), out
    assert re.search(r"^video writer for \.mp4: H\.264 by (libx264|h264_nvenc) ", out, re.M), out


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


# -- a user's mistakes: one line on stderr, a non-zero exit, the trace only with --debug --------


def videoflow_command(*argv: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command; fail if its flows left shared memory behind."""
    with subprocess.Popen(
        [sys.executable, "-m", "videoflow.cli", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
    ) as proc:
        out, err = proc.communicate(timeout=60)
    entries, _ = wait_clean(proc.pid)
    assert not entries, f"left behind: {entries}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


NO_FLOW = "print('a script that builds no flow')\n"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("argv", "said", "status"),
    [
        (["run", "missing.py"], "videoflow run: error: no such script: missing.py (in ", 1),
        (["bench", "missing.py"], "videoflow bench: error: no such script: missing.py", 1),
        (["demo", "--nb-tasks", "0"],
         "videoflow demo: error: argument --nb-tasks: expected a positive integer, got 0", 2),
        (["demo", "--frames", "-3"],
         "videoflow demo: error: argument --frames: expected a positive integer, got -3", 2),
        (["demo", "-o", "no/such/folder/out.mp4"],
         "videoflow demo: error: cannot write 'no/such/folder/out.mp4': folder", 1),
        (["run", "noflow.py"], "videoflow run: error: noflow.py ran no flow: videoflow run "
         "expects a script that builds a Flow and calls flow.run() and flow.join()", 1),
    ],
)
def test_user_errors_are_one_line_without_a_traceback(tmp_path, argv, said, status):
    (tmp_path / "noflow.py").write_text(NO_FLOW)
    done = videoflow_command(*argv, cwd=str(tmp_path))
    assert done.returncode == status, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(said), done.stderr
    assert "Traceback" not in done.stderr
    debug = videoflow_command("--debug", *argv, cwd=str(tmp_path))
    assert debug.returncode != 0
    if status == 1:  # usage errors (2) have no trace to show
        assert "Traceback" in debug.stderr, debug.stderr
    assert not list(tmp_path.glob("*.mp4"))


@pytest.mark.timeout(60)
def test_debug_goes_before_or_after_the_command(tmp_path):
    for argv in (["--debug", "run", "missing.py"], ["run", "--debug", "missing.py"]):
        done = videoflow_command(*argv, cwd=str(tmp_path))
        assert done.returncode == 1 and "Traceback" in done.stderr, done.stderr
        assert "UserError: no such script: missing.py" in done.stderr


@pytest.mark.timeout(60)
def test_a_failing_flow_is_its_error_not_the_cli_trace(tmp_path):
    """The FlowError's own text (cause, then the task's traceback) without the owner's trace."""
    done = videoflow_command("demo", "--frames", "3", "-o", "/proc/out.mp4", cwd=str(tmp_path))
    assert done.returncode == 1
    # /proc refuses the file: an OSError (which one depends on the encoder that opens it).
    assert re.match(r"videoflow demo: error: node 'writer' \(task 0\) raised \w*Error", done.stderr)
    assert "Traceback in the task process:" in done.stderr
    assert "cli.py" not in done.stderr  # no frame of the owner's side
