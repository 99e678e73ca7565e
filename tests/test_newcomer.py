"""What a new user meets first: a run from a source checkout, and the errors of a first flow.

Each error test checks the message names the cause and the fix, and that nothing is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import videoflow
from videoflow.engine import bootstrap

PACKAGE = os.path.dirname(os.path.realpath(videoflow.__file__))


def source_tree_copy(root) -> str:
    """A checkout's ``videoflow/`` without its compiled extension, as a non-editable install
    leaves it next to the user; returns the folder that holds it."""
    checkout = root / "checkout"
    shutil.copytree(
        PACKAGE, checkout / "videoflow",
        ignore=shutil.ignore_patterns("*.so", "__pycache__"),
    )
    return str(checkout)


def run_script(
    root, body: str, *args: str, cwd: str, timeout: float = 90
) -> subprocess.CompletedProcess:
    """Run ``body`` as a script that lives outside ``cwd``: like a console script, the owner
    then imports the installed videoflow, not ``cwd/videoflow``."""
    script = root / "scripts" / "owner.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


OWNER = """\
    import multiprocessing as mp
    import multiprocessing.forkserver
    import sys

    from videoflow.consumers import CommandlineConsumer
    from videoflow.core import BATCH, Flow
    from videoflow.engine.runner import leftovers
    from videoflow.errors import FlowError
    from videoflow.processors import IdentityProcessor
    from videoflow.producers import IntProducer

    if __name__ == "__main__":
        if sys.argv[1:] == ["early-forkserver"]:  # another library started it from here first
            mp.set_forkserver_preload(["videoflow.engine.task"])
            multiprocessing.forkserver.ensure_running()
        a = IntProducer(0, 5)
        b = IdentityProcessor(nb_tasks=2)(a)
        flow = Flow([a], [CommandlineConsumer()(b)], flow_type=BATCH,
                    flow_options={"start_method": "forkserver"})
        flow.run()
        try:
            flow.join()
        except FlowError as exc:
            print("FlowError:", exc)
        entries, children = leftovers()
        print("left:", entries, children)
"""


@pytest.mark.timeout(120)
def test_a_flow_run_inside_a_source_checkout_uses_the_owners_copy(tmp_path):
    """The README's first command in a fresh clone: the owner runs the installed videoflow, the
    current folder holds the checkout's ``videoflow/`` (no compiled extension). Tasks used to
    import the checkout's copy and fail on a queue they could not open."""
    checkout = source_tree_copy(tmp_path)
    done = run_script(tmp_path, OWNER, cwd=checkout)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:5] == ["0", "1", "2", "3", "4"], done.stdout + done.stderr
    assert "FlowError" not in done.stdout
    assert "left: [] []" in done.stdout


@pytest.mark.timeout(120)
def test_tasks_running_another_copy_fail_with_one_sentence(tmp_path):
    """If tasks still get another copy (here: a forkserver started earlier by other code), the
    flow fails at start naming both copies and what to do, not with a queue error."""
    checkout = source_tree_copy(tmp_path)
    done = run_script(tmp_path, OWNER, "early-forkserver", cwd=checkout)
    assert done.returncode == 0, done.stderr
    message = done.stdout.split("FlowError: ", 1)[1].split("\nleft:")[0]
    assert os.path.join(checkout, "videoflow") in message
    assert PACKAGE in message
    assert "pip install -e ." in message
    assert "queue" not in message.lower() and "Traceback" not in message
    assert "\n" not in message.strip()
    assert "left: [] []" in done.stdout


def test_the_forkserver_preloads_no_package_the_current_folder_shadows(tmp_path, monkeypatch):
    monkeypatch.setattr(bootstrap, "FORKSERVER_USES_OWNER_PATH", False)
    modules = ["videoflow.engine.task", "numpy", "videoflow.producers"]
    monkeypatch.chdir(tmp_path)
    assert bootstrap.forkserver_preload(modules) == modules  # nothing here to shadow
    monkeypatch.chdir(source_tree_copy(tmp_path))
    assert bootstrap.forkserver_preload(modules) == ["numpy"]
    monkeypatch.chdir(os.path.dirname(PACKAGE))  # our own checkout shadows nothing
    assert bootstrap.forkserver_preload(modules) == modules


def test_a_task_with_another_transport_is_named():
    folder, transport = bootstrap.package_copy()
    assert bootstrap.copy_mismatch((folder, transport)) is None
    assert bootstrap.copy_mismatch(("", "")) is None  # no owner given: no check
    other = "pure Python" if transport == "native" else "native"
    message = bootstrap.copy_mismatch((folder, other))
    assert message is not None
    assert f"{transport} transport" in message and f"{other} transport" in message
    assert "VIDEOFLOW_NATIVE" in message
    message = bootstrap.copy_mismatch(("/elsewhere/videoflow", transport))
    assert message is not None and "/elsewhere/videoflow" in message and folder in message
