"""What a new user meets first: a run from a source checkout, and the errors of a first flow.

Each error test checks the message names the cause and the fix, and that nothing is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from typing import Any

import cv2
import numpy as np
import pytest
from video_helpers import run_flow

import videoflow
from videoflow.consumers import VoidConsumer
from videoflow.core import Flow, FunctionProcessorNode, ProcessorNode
from videoflow.engine import bootstrap
from videoflow.errors import FlowError, UnpicklableNodeError, read_only_write
from videoflow.producers import IntProducer
from videoflow.producers.shapes import MovingShapesProducer

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


# -- a node that cannot be pickled ------------------------------------------------------------


class HoldsALock(ProcessorNode):
    """Creates its lock in __init__: the lock would have to travel to the task, and cannot."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.lock = threading.Lock()

    def process(self, value: Any) -> Any:
        return value


def local_class_node() -> ProcessorNode:
    class Local(ProcessorNode):
        def process(self, value: Any) -> Any:
            return value

    return Local(name="local")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["forkserver", "fork"])
@pytest.mark.parametrize(
    ("make", "part"),
    [
        (lambda: HoldsALock(name="locked"), "its attribute 'lock'"),
        (local_class_node, "its class local_class_node.<locals>.Local"),
        (lambda: FunctionProcessorNode(lambda v: v, name="fn"), "its attribute '_fn'"),
    ],
)
def test_an_unpicklable_node_is_named_with_what_helps(make, part, method):
    """fork does not help (nodes are pickled under every start method): the message must not
    advise it, and must say what does."""
    a = IntProducer(0, 3)
    b = make()(a)
    flow = Flow([a], [VoidConsumer()(b)], flow_options={"start_method": method})
    with pytest.raises(UnpicklableNodeError) as info:
        flow.run()
    message = str(info.value)
    assert isinstance(info.value, ValueError)  # what the original videoflow API raised
    assert message.startswith(f"node {b.name!r} cannot be sent to its task processes: {part}")
    assert "module level" in message and "open()" in message
    assert "start_method='fork'" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    doc = FunctionProcessorNode.__doc__ or ""
    assert "every start method" in doc and "only works with the ``fork``" not in doc


# -- writing into an input frame --------------------------------------------------------------


class DrawsOnItsInput(ProcessorNode):
    """What a user of the original videoflow wrote: draw on the frame and pass it on."""

    def __init__(self, how: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.how = how

    def process(self, frame: np.ndarray) -> np.ndarray:
        if self.how == "opencv":
            cv2.rectangle(frame, (1, 1), (8, 8), (0, 0, 255), 2)
        elif self.how == "numpy":
            frame[0:4, 0:4] = 255
        else:
            np.add(frame, 1, out=frame)
        return frame


class DrawsOnACopy(ProcessorNode):
    """The fix the error message gives."""

    def process(self, frame: np.ndarray) -> np.ndarray:
        frame = frame.copy()
        cv2.rectangle(frame, (1, 1), (8, 8), (0, 0, 255), 2)
        return frame


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["opencv", "numpy", "ufunc"])
def test_writing_into_an_input_says_inputs_are_read_only_and_how_to_copy(how):
    a = MovingShapesProducer(64, 48, count=4, fps=None)
    b = DrawsOnItsInput(how, name="draw")(a)
    with pytest.raises(FlowError) as info:
        run_flow(a, [VoidConsumer()(b)])  # checks that nothing is left
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith("node 'draw' (task 0) wrote into a read-only array in process()")
    assert "read-only views of shared memory" in first_line and "frame.copy()" in first_line
    assert "Bad argument" not in first_line
    assert info.value.node == "draw"


@pytest.mark.timeout(60)
def test_drawing_on_a_copy_works():
    a = MovingShapesProducer(64, 48, count=4, fps=None)
    b = DrawsOnACopy(name="draw")(a)
    stats = run_flow(a, [VoidConsumer()(b)])
    assert stats.delivered == 4


def test_only_read_only_errors_get_the_hint():
    assert read_only_write("assignment destination is read-only") is not None
    assert read_only_write("img marked as output argument, but provided NumPy array marked as "
                           "readonly") is not None
    assert read_only_write("division by zero") is None


# -- the graph ---------------------------------------------------------------------------------


def test_zero_producers_is_not_called_multiple_producers():
    c = VoidConsumer()(IntProducer(0, 3))
    with pytest.raises(ValueError, match="needs a producer, got none") as info:
        Flow([], [c])
    assert "multiple" not in str(info.value) and "Flow([producer], [consumer])" in str(info.value)
