"""Does the main script start a flow while it is being imported, without a main guard?

The original videoflow started its tasks with ``fork``, so its users' scripts build and run
flows at module level, with no ``if __name__ == "__main__":``. Under ``forkserver`` or
``spawn`` every task runs the main script again to rebuild its namespace, and such a script
would start the flow again inside each task. This module answers, for the code that is
creating a flow now, whether that would happen; config.py chooses the start method with it.
"""

from __future__ import annotations

import ast
import functools
import os
import sys
import threading
from types import FrameType, ModuleType


def _reimported_by_children(main: ModuleType) -> str | None:
    """The file of ``__main__`` when spawn/forkserver children run it again, else None.

    Mirrors multiprocessing.spawn: a main module run by name is re-run unless it is a
    package's ``__main__``; one run from a path is re-run unless it is IPython's launcher;
    an interactive session, ``python -c`` and notebooks have no file to re-run.
    """
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if spec_name is not None and (spec_name == "__main__" or spec_name.endswith(".__main__")):
        return None
    path = getattr(main, "__file__", None)
    if not isinstance(path, str):
        return None
    if spec_name is None and os.path.splitext(os.path.basename(path))[0] == "ipython":
        return None
    return os.path.abspath(path)


def _module_frame(main: ModuleType, path: str) -> FrameType | None:
    """The frame running the top level of ``main``, on this thread's stack or, for a flow made
    in another thread, on the main thread's; None once the main script's top level is done."""
    stacks: list[FrameType | None] = [sys._getframe(1)]
    if threading.current_thread() is not threading.main_thread():
        stacks.append(sys._current_frames().get(threading.main_thread().ident or 0))
    for frame in stacks:
        while frame is not None:
            if (
                frame.f_globals is main.__dict__
                and frame.f_code.co_name == "<module>"
                and os.path.abspath(frame.f_code.co_filename) == path
            ):
                return frame
            frame = frame.f_back
    return None


def _is_main_test(test: ast.expr) -> str | None:
    """``"=="`` or ``"!="`` when ``test`` compares ``__name__`` with ``"__main__"``."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and len(test.comparators) == 1):
        return None
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    if len(names) != 1 or len(mains) != 1:
        return None
    if isinstance(test.ops[0], ast.Eq):
        return "=="
    if isinstance(test.ops[0], ast.NotEq):
        return "!="
    return None


def _span(body: list[ast.stmt]) -> tuple[int, int] | None:
    if not body:
        return None
    return body[0].lineno, body[-1].end_lineno or body[-1].lineno


@functools.lru_cache(maxsize=8)
def guarded_lines(path: str, mtime_ns: int) -> tuple[tuple[int, int], ...] | None:
    """Line ranges of ``path`` that run only when it is the main script; None if unreadable."""
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            op = _is_main_test(node.test)
            span = _span(node.body if op == "==" else node.orelse) if op else None
            if span is not None:
                spans.append(span)
    return tuple(spans)


def unguarded_main_line() -> tuple[str, int] | None:
    """The main script and its line that is creating a flow at import time, outside any
    ``if __name__ == "__main__":`` block, and that spawn/forkserver tasks would therefore run
    again; None when the main script is guarded there, is not being imported, or is not
    re-run by tasks. An unreadable script counts as unguarded (fork works for both)."""
    main = sys.modules.get("__main__")
    if main is None:
        return None
    path = _reimported_by_children(main)
    if path is None:
        return None
    frame = _module_frame(main, path)
    if frame is None:
        return None
    line = frame.f_lineno or 0
    try:
        spans = guarded_lines(path, os.stat(path).st_mtime_ns)
    except OSError:
        spans = None
    if spans is not None and any(first <= line <= last for first, last in spans):
        return None
    return path, line
