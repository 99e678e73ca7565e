"""Flows run the way users run them: as a script in an interpreter of its own.

The test side writes a script from a template (``write_script``), starts it and waits until its
flow is under way (``start_script``), signals it (``interrupt``), or runs it to its end
(``run_script``), and never leaves it running. The script side calls ``join_and_report`` from
its ``__main__`` block: it prints ``running``, joins, turns Ctrl-C into exit code 130, and
prints one ``stats`` line the test reads back with ``script_stats``. ``descendants`` and
``wait_gone`` follow the processes a script started.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from videoflow.engine.runner import process_state

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

#: The first lines of every flow script: the tests' modules importable, and Ctrl-C as in a
#: terminal even when the tests run in a background job (where SIGINT starts out ignored).
PRELUDE = f"""\
import signal, sys
sys.path.insert(0, {TESTS_DIR!r})
signal.signal(signal.SIGINT, signal.default_int_handler)
"""


def write_script(folder: Path, template: str, /, **fields: Any) -> Path:
    """``PRELUDE`` plus ``template`` (dedented, then ``str.format``-ed with ``fields``) as
    ``folder/flow.py``."""
    path = folder / "flow.py"
    path.write_text(PRELUDE + textwrap.dedent(template).format(**fields))
    return path


def join_and_report(flow: Any, report: Callable[[Any], Any], *pids: int) -> None:
    """In a script: print ``running`` (and ``pids``), join ``flow``, print ``stats`` followed
    by ``report(flow.stats())`` as JSON, and exit 0, or 130 after a Ctrl-C."""
    print("running", *pids, flush=True)
    try:
        flow.join()
        code = 0
    except KeyboardInterrupt:
        code = 130
    print("stats", json.dumps(report(flow.stats())), flush=True)
    sys.exit(code)


def script_stats(stdout: str) -> Any:
    """What the script's ``join_and_report`` printed after ``stats``."""
    return json.loads(stdout.split("stats", 1)[1].strip().splitlines()[0])


def _popen(
    script: Path, args: Sequence[str], cwd: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=cwd,
        text=True,
        env=None if env is None else {**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


class Ran(subprocess.CompletedProcess):
    """A script that ended: ``returncode``, ``stdout``, ``stderr``, and the ``pid`` it ran as
    (what its flow's /dev/shm names carry)."""

    def __init__(self, proc: subprocess.Popen, stdout: str, stderr: str) -> None:
        super().__init__(proc.args, proc.returncode, stdout, stderr)
        self.pid = proc.pid


def run_script(
    script: Path,
    *args: str,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    meanwhile: Callable[[subprocess.Popen], None] | None = None,
) -> Ran:
    """Run ``script`` with ``args`` to its end (killed after ``timeout`` seconds), in ``cwd``
    with ``env`` added to the environment, calling ``meanwhile(proc)`` once it started."""
    proc = _popen(script, args, cwd, env)
    try:
        if meanwhile is not None:
            meanwhile(proc)
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        _end(proc)
    return Ran(proc, stdout, stderr)


@contextlib.contextmanager
def start_script(
    script: Path, progress: Callable[[], int], at_least: int, seconds: float = 30
) -> Iterator[tuple[subprocess.Popen, list[str]]]:
    """``script`` started, once it said ``running`` and ``progress()`` reached ``at_least``;
    yields the process and the words after ``running``. Killed on the way out if the test
    left it running, so that a failed test leaves no flow behind (its tasks follow it)."""
    proc = _popen(script, ())
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline().split()
        if not first or first[0] != "running":
            _end(proc)
            raise AssertionError(f"the script did not start: {proc.stderr.read()}")
        deadline = time.monotonic() + seconds
        while progress() < at_least and time.monotonic() < deadline:
            time.sleep(0.01)
        assert progress() >= at_least, f"the flow did not get going ({progress()} < {at_least})"
        yield proc, first[1:]
    finally:
        _end(proc)


def interrupt(proc: subprocess.Popen, timeout: float = 30) -> tuple[str, str, float]:
    """Ctrl-C once; the script's stdout and stderr once it ended, and the time the signal went."""
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    stdout, stderr = proc.communicate(timeout=timeout)
    return stdout, stderr, sent


def read_until(stream: Any, text: str, seconds: float) -> str:
    """Lines of ``stream`` up to the first that holds ``text`` (all, if it never comes)."""
    deadline = time.monotonic() + seconds
    got = ""
    while text not in got and (left := deadline - time.monotonic()) > 0:
        if not select.select([stream], [], [], left)[0]:
            break
        line = stream.readline()
        if not line:
            break
        got += line
    return got


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (zombies count as gone)."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_gone(pids: set[int], seconds: float) -> set[int]:
    """Wait up to ``seconds`` for ``pids`` to exit; returns those still alive."""
    deadline = time.monotonic() + seconds
    while (left := alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (a zombie counts as gone)."""
    return {pid for pid in pids if process_state(pid) not in ("", "Z")}
