"""Shared fixtures: every test checks that it leaves no process and no shared memory behind."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import pytest

from videoflow.engine.runner import leftovers
from videoflow.transport.names import MQUEUE_DIR, SHM_DIR, owned_entries

own_entries = owned_entries  # this test process's flows' "vf." segments and queues
wait_clean = leftovers  # (entries, live children) after waiting for them to go


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail a test that leaves a child process or a /dev/shm entry of its flows."""
    yield
    entries, children = wait_clean()
    for child in children:  # gone before the next test, which would fail on them too
        child.kill()
        child.join(10)
    for entry in entries:
        for folder in (SHM_DIR, MQUEUE_DIR):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, entry))
    assert not children, f"child processes left behind: {children}"
    assert not entries, f"shared memory / queues left behind: {entries}"


@pytest.fixture
def output_file(tmp_path):
    return str(tmp_path / "out.txt")


def read_lines(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().split()


def wait_for(
    predicate: Callable[[], object], seconds: float = 60.0, what: str = "the condition"
) -> None:
    """Wait until ``predicate()`` is true; fail naming ``what`` after ``seconds`` (a liveness
    bound for a loaded machine, never a figure the test measures)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not come within {seconds} s"
        time.sleep(0.02)
