"""What a task process gets at start: the owner's copy of videoflow, and its node.

A task must run the very package the flow's owner runs: same files, same transport (native
ring queues or POSIX message queues), or the two sides cannot even open each other's queues.
Two things decide it:

- ``forkserver_preload``: on Python < 3.12.8 and 3.13.0 the forkserver ignores the owner's
  ``sys.path`` (CPython gh-117378) and imports its preloaded modules with the current folder
  first on its path. Run from a source checkout next to a non-editable install, it would import
  ``./videoflow`` (no compiled extension) while the owner runs the installed copy. A preloaded
  package that the current folder would shadow is therefore left out of the preload: tasks
  then import it after ``multiprocessing`` has given them the owner's ``sys.path``.
- ``copy_mismatch``: whatever the cause (a forkserver started earlier by other code, an
  environment changed between imports), each task compares its copy with the owner's before it
  touches a queue, and the flow fails with one sentence naming both.
- ``unpicklable_node``: a node travels to its tasks as a pickle, under every start method
  (fork too); when it does not pickle, the error names the part that does not and what helps.
- ``check_platform``: flows run on Linux only; elsewhere ``run()`` says so before it starts
  anything. ``set_process_title`` names each task process in ps and top.
- ``fork_safe``: a task forked from an owner whose OpenCV thread pool has run would hang in
  ``cv2.setNumThreads(1)``; the owner's pool is stopped around each fork.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import os
import pickle
import sys
from collections.abc import Iterator
from typing import Any

import videoflow
from videoflow import transport
from videoflow.errors import UnsupportedPlatformError

# The forkserver passes the owner's sys.path to its preload from 3.12.8 and 3.13.1 on.
FORKSERVER_USES_OWNER_PATH = sys.version_info >= (3, 13, 1) or (
    (3, 12, 8) <= sys.version_info < (3, 13)
)


def package_copy() -> tuple[str, str]:
    """This process's videoflow: (its folder, its transport), e.g. ("/venv/.../videoflow",
    "native"). Tasks compare theirs with the owner's."""
    folder = os.path.dirname(os.path.realpath(videoflow.__file__))
    return folder, "native" if transport.native is not None else "pure Python"


def _location(spec: importlib.machinery.ModuleSpec | None) -> str | None:
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return os.path.realpath(next(iter(spec.submodule_search_locations)))
    return os.path.realpath(spec.origin) if spec.origin else None


def _shadowed(top: str, folder: str) -> bool:
    """Would ``import top`` with ``folder`` first on the path find another copy than ours?"""
    theirs = _location(importlib.machinery.PathFinder.find_spec(top, [folder]))
    if theirs is None:
        return False
    module = sys.modules.get(top)
    try:
        ours = _location(module.__spec__ if module is not None else importlib.util.find_spec(top))
    except (ImportError, ValueError):
        ours = None
    return theirs != ours


def forkserver_preload(modules: list[str]) -> list[str]:
    """``modules`` minus those the forkserver would import from another copy than this
    process's (see the module docstring); the rest keep the speed of preloading."""
    if FORKSERVER_USES_OWNER_PATH or sys.flags.isolated or getattr(sys.flags, "safe_path", False):
        return list(modules)  # the server's path is the owner's, or has no current folder
    folder = os.getcwd()
    shadowed = {m.partition(".")[0] for m in modules if _shadowed(m.partition(".")[0], folder)}
    return [m for m in modules if m.partition(".")[0] not in shadowed]


def copy_mismatch(owner: tuple[str, str]) -> str | None:
    """None when this process runs the same videoflow as the owner's ``package_copy()``;
    otherwise the sentence that says which two copies were found and what to do."""
    mine = package_copy()
    if not owner[0] or mine == owner:
        return None
    if mine[0] != owner[0]:
        return (
            f"the flow's tasks imported videoflow from {mine[0]} ({mine[1]} transport) but this "
            f"process runs {owner[0]} ({owner[1]} transport): run from a folder that holds no "
            "other videoflow package, or install that source tree itself (pip install -e .)"
        )
    return (
        f"the flow's tasks use videoflow's {mine[1]} transport but this process uses its "
        f"{owner[1]} transport (from {mine[0]}): set VIDEOFLOW_NATIVE before videoflow is "
        "first imported, not between flows"
    )


def unpicklable_node(name: str, node: Any, exc: BaseException) -> str:
    """The error for a node that ``pickle`` refused with ``exc``: which part of it (the first
    attribute that does not pickle, else its class) and what helps."""
    part = f"its class {type(node).__qualname__}"
    try:
        state = node.__getstate__()
    except Exception:
        state = None
    for key, value in (state.items() if isinstance(state, dict) else ()):
        try:
            pickle.dumps(value, protocol=5)
        except Exception:
            part = f"its attribute {key!r} ({type(value).__name__})"
            break
    return (
        f"node {name!r} cannot be sent to its task processes: {part} cannot be pickled ({exc}). "
        "Nodes are pickled under every start method, fork included: define node classes and "
        "the functions they hold at module level (no lambdas, no functions defined inside "
        "functions), and create locks, open files, sockets, models and cv2 captures in open(), "
        "which runs in the task, not in __init__"
    )


def check_platform() -> None:
    """Raise UnsupportedPlatformError unless this is Linux, where a flow's pieces exist."""
    if not sys.platform.startswith("linux"):
        raise UnsupportedPlatformError(
            f"videoflow runs flows on Linux only, not on {sys.platform}: frames live in "
            "/dev/shm and tasks signal each other with Linux futexes or POSIX message queues; "
            "run the flow in a Linux container or virtual machine (Docker: docker run "
            "--shm-size=1g ...)"
        )


def set_process_title(title: str) -> None:
    """Show ``title`` for this process in ps, top and /proc/<pid>/cmdline (setproctitle, which
    also sets the kernel's 15-character name); without setproctitle, the kernel's name only."""
    try:
        import setproctitle
    except ImportError:
        try:
            with open("/proc/self/comm", "w") as comm:
                comm.write(title[:15])
        except OSError:
            pass
    else:
        setproctitle.setproctitle(title)


@contextlib.contextmanager
def fork_safe(start_method: str) -> Iterator[None]:
    """Around the start of a task process: with ``fork``, stop the owner's OpenCV thread pool
    first and give it back its size after.

    OpenCV's pthreads pool (the backend of the opencv-python wheels) does not survive fork: a
    child of an owner that ran a parallel OpenCV call (a blur, a resize) before ``run()``
    inherits a pool whose worker threads exist only in the owner, and hangs for ever in
    ``cv2.setNumThreads(1)``, which waits for them (4 runs in 5 here). A pool of one thread has
    no workers, so the child starts from an empty one. The owner's pool restarts lazily, at
    its next parallel call.
    """
    cv2 = sys.modules.get("cv2") if start_method == "fork" else None
    if cv2 is None:
        yield
        return
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)
