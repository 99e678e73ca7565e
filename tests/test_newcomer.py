"""What a new user meets first: a run from a source checkout, and the errors of a first flow.

Each error test checks the message names the cause and the fix, and that nothing is left.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import pytest
import scripts
from nodes import RecordingConsumer
from video_helpers import run_flow

import videoflow
from videoflow import cli
from videoflow.consumers import VoidConsumer
from videoflow.consumers.video import desktop_opencv_command
from videoflow.core import Flow, FunctionProcessorNode, ProcessorNode
from videoflow.engine import bootstrap
from videoflow.errors import (
    FlowError,
    UnpicklableNodeError,
    UnsupportedPlatformError,
)
from videoflow.processors import IdentityProcessor
from videoflow.producers import IntProducer

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
) -> scripts.Ran:
    """Run ``body`` as a script that lives outside ``cwd``: like a console script, the owner
    then imports the installed videoflow, not ``cwd/videoflow``."""
    script = root / "scripts" / "owner.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(textwrap.dedent(body))
    return scripts.run_script(script, *args, cwd=cwd, timeout=timeout)


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


class OpensALock(HoldsALock):
    """Makes a lock in open(), named transient: a copy of an opened node still travels."""

    transient = ("opened",)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.lock = None  # type: ignore[assignment]
        self.opened: Any = None

    def open(self) -> None:
        self.opened = threading.Lock()

    def process(self, value: Any) -> Any:
        assert self.opened is not None, "open() ran in the task"
        return value + 1


class OpensTwo(OpensALock):
    """A subclass lists only its own transient attributes; its base's still count."""

    transient = ("other",)

    def open(self) -> None:
        super().open()
        self.other = threading.Lock()


@pytest.mark.timeout(60)
def test_the_attributes_open_makes_stay_behind_when_named_transient(tmp_path):
    node = OpensTwo(name="opens")
    node.open()
    copy = pickle.loads(pickle.dumps(node))
    assert copy.opened is None and copy.other is None and copy.name == "opens"
    assert node.opened is not None  # the owner's object is untouched
    a = IntProducer(0, 4)
    b = node(a)
    path = tmp_path / "out.txt"
    run_flow(a, [RecordingConsumer(str(path))(b)])
    assert path.read_text().split() == ["1", "2", "3", "4", "5"]


OPENCV_FIRST = """
    import cv2, numpy as np
    from videoflow.consumers import CommandlineConsumer
    from videoflow.core import BATCH, Flow
    from videoflow.processors import IdentityProcessor
    from videoflow.producers import IntProducer

    image = np.random.default_rng(0).integers(0, 255, (2000, 2000, 3), np.uint8)
    for run in range(3):
        for _ in range(5):
            cv2.GaussianBlur(image, (21, 21), 0)  # OpenCV's thread pool runs in the owner
        a = IntProducer(0, 2)
        flow = Flow([a], [CommandlineConsumer()(IdentityProcessor(nb_tasks=2)(a))], BATCH)
        flow.run()
        flow.join()
"""


@pytest.mark.timeout(120)
def test_an_unguarded_script_that_used_opencv_first_runs_its_flows(tmp_path):
    """Unguarded, the script's flows fork their tasks; OpenCV's thread pool, busy in the owner
    just before, used to hang the forked tasks in cv2.setNumThreads (5 runs in 6)."""
    done = scripts.run_script(scripts.write_script(tmp_path, OPENCV_FIRST), timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1", "2"] * 3


class Ghost(ProcessorNode):
    """Pickled as __main__.Ghost: the owner finds it there, a task's __main__ does not (a
    class defined in a notebook or an interactive session)."""

    def process(self, value: Any) -> Any:
        return value


@pytest.mark.timeout(60)
def test_a_node_class_the_tasks_cannot_import_is_an_error_at_load(monkeypatch):
    monkeypatch.setattr(Ghost, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "Ghost", Ghost, raising=False)
    a = IntProducer(0, 3)
    b = Ghost(name="ghost")(a)
    with pytest.raises(FlowError) as info:
        run_flow(a, [VoidConsumer()(b)])
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith(
        "node 'ghost' (task 0) could not be unpickled in its task process: AttributeError"
    )
    assert "Ghost" in first_line


# -- the graph ---------------------------------------------------------------------------------


def test_zero_producers_is_not_called_multiple_producers():
    c = VoidConsumer()(IntProducer(0, 3))
    with pytest.raises(ValueError, match="needs a producer, got none") as info:
        Flow([], [c])
    assert "multiple" not in str(info.value) and "Flow([producer], [consumer])" in str(info.value)


# -- what a newcomer finds ---------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def specifiers(text: str) -> set[str]:
    return {s.strip() for s in text.split(",") if s.strip()}


def pyproject_opencv_spec() -> set[str]:
    match = re.search(r'"opencv-python-headless([^"]*)"', read("pyproject.toml"))
    assert match, "pyproject.toml no longer depends on opencv-python-headless"
    return specifiers(match.group(1))


def test_the_documented_desktop_opencv_swap_matches_pyproject():
    """Two packages owning cv2 break each other: the swap the docs give must uninstall the
    headless build and pin the desktop build to the versions pyproject.toml accepts."""
    wanted = pyproject_opencv_spec()
    documented = re.findall(
        r'pip uninstall -y opencv-python-headless && pip install "opencv-python([^"]*)"',
        read("docs", "guide.md"),
    )
    assert documented, "docs/guide.md no longer documents the desktop OpenCV swap"
    for spec in documented:
        assert specifiers(spec) == wanted
    command = desktop_opencv_command()
    assert command.startswith("pip uninstall -y opencv-python-headless && pip install ")
    assert specifiers(command.split('"opencv-python', 1)[1].rstrip('"')) == wanted


def test_display_backend_is_read_from_opencv_and_told(monkeypatch, capsys):
    import videoflow.consumers.video as video

    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  Video I/O:\n  GUI:   NONE\n")
    assert video.gui_backend() is None
    assert "opencv-python-headless" in (video.display_problem() or "")
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:        GTK3\n")
    assert video.gui_backend() == "GTK3"
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert "DISPLAY" in (video.display_problem() or "")
    monkeypatch.setenv("DISPLAY", ":0")
    assert video.display_problem() is None
    assert cli.main(["info"]) == 0
    assert "display: GTK3 (VideoDisplay can open windows)" in capsys.readouterr().out


def test_the_package_says_it_is_typed_and_licensed():
    assert os.path.isfile(os.path.join(PACKAGE, "py.typed"))
    assert re.search(r'videoflow\s*=\s*\[[^\]]*"py\.typed"', read("pyproject.toml"))
    assert re.search(r'^license\s*=\s*"MIT"$', read("pyproject.toml"), re.M)
    assert re.search(r'^license-files\s*=\s*\["LICENSE"\]$', read("pyproject.toml"), re.M)
    assert read("LICENSE").startswith("MIT License\n")
    assert "## [0.1.0]" in read("CHANGELOG.md")


@pytest.mark.timeout(60)
def test_each_task_process_is_named_in_ps(tmp_path):
    a = IntProducer(0, None, 0.005, name="source")
    b = IdentityProcessor(nb_tasks=2, name="blur")(a)
    c = VoidConsumer(name="sink")(b)
    flow = Flow([a], [c], flow_options={"progress": False})
    flow.run()
    try:
        while flow.stats().delivered < 3:
            time.sleep(0.01)
        titles = {}
        for child in mp.active_children():
            with open(f"/proc/{child.pid}/cmdline", "rb") as f:
                titles[child.pid] = f.read().replace(b"\0", b" ").decode().strip()
        assert sorted(titles.values()) == [
            "videoflow: blur[0]", "videoflow: blur[1]", "videoflow: sink[0]",
            "videoflow: source[0]",
        ]
        for pid, title in titles.items():
            with open(f"/proc/{pid}/comm") as f:
                assert f.read().strip() == title[:15]  # the kernel's name, for top and pgrep
    finally:
        flow.stop()
        flow.join(30)


@pytest.mark.timeout(30)
def test_a_flow_elsewhere_than_linux_says_linux_only(monkeypatch):
    a = IntProducer(0, 3)
    flow = Flow([a], [VoidConsumer()(a)])
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(UnsupportedPlatformError) as info:
        flow.run()
    message = str(info.value)
    assert "Linux only, not on darwin" in message and "/dev/shm" in message
    assert "container" in message


@pytest.mark.parametrize("page", ["README.md", "docs/guide.md"])
def test_the_links_of_the_docs_lead_somewhere(page):
    text = read(page)
    folder = os.path.dirname(os.path.join(ROOT, page))
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, re.M)
    }
    for target in re.findall(r"\]\(([^)]+)\)", text):
        if target.startswith("http"):
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert os.path.exists(os.path.join(folder, path)), f"{page}: {target}"
        elif anchor:
            assert anchor in headings, f"{page}: #{anchor}"
    if page == "README.md":
        for needed in ("docs/guide.md", "samples/", "videoflow bench", "docs/architecture.md"):
            assert needed in text.split("## Where next", 1)[1].split("\n## ", 1)[0]


def test_no_file_of_the_checkout_holds_a_merge_conflict_marker():
    """A merge resolved in haste once left <<<<<<< blocks in docs/architecture.md."""
    root = os.path.dirname(PACKAGE)
    if not os.path.isdir(os.path.join(root, ".git")):
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "-C", root, "ls-files", "*.py", "*.md", "*.toml", "*.c", "*.h", ".ci/run"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    marker = re.compile(r"^(<{7}|>{7})( |$)|^={7}$", re.M)
    marked = [p for p in listed if marker.search(Path(root, p).read_text(errors="replace"))]
    assert not marked, f"merge conflict markers in {marked}"
