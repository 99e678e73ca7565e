"""Shared fixtures: every test checks that it leaves no process and no shared memory behind."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import pytest

from videoflow.transport.names import MQUEUE_DIR, SHM_DIR, list_entries


def own_entries(pid: int | None = None) -> list[str]:
    """Shared-memory segments and queues of flows owned by ``pid`` (default: this process)."""
    prefix = f"vf.{os.getpid() if pid is None else pid}."
    return list_entries(prefix, SHM_DIR) + list_entries(prefix, MQUEUE_DIR)


def wait_clean(pid: int | None = None, seconds: float = 5.0) -> tuple[list[str], list[object]]:
    """Wait up to ``seconds`` for our entries and children to be gone; return what is left."""
    deadline = time.monotonic() + seconds
    while True:
        entries, children = own_entries(pid), mp.active_children()
        if (not entries and not children) or time.monotonic() > deadline:
            return entries, children
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail a test that leaves a child process or a /dev/shm entry of its flows."""
    yield
    entries, children = wait_clean()
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
