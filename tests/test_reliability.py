"""Reliability across the machine: a full /dev/shm at any point, flows in other PID namespaces.

Both need root (a private tmpfs mounted over /dev/shm, a new PID namespace) and `unshare`;
CI runs as root. Each script runs in its own process, so what it leaves is checked in the
namespace it ran in.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _can_unshare(*flags: str) -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", *flags, "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


needs_mount_ns = pytest.mark.skipif(
    not _can_unshare("-m"), reason="needs root and unshare -m (a private /dev/shm)"
)
needs_pid_ns = pytest.mark.skipif(
    not _can_unshare("-p", "-f"), reason="needs root and unshare -p (a PID namespace)"
)

FRAMES_FLOW = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from videoflow.core import Flow, ProducerNode, ProcessorNode, ConsumerNode
    from videoflow.core.constants import BATCH

    class Frames(ProducerNode):
        def __init__(self, n, delay, until=None):
            super().__init__()
            self.n, self.delay, self.until, self.i = n, delay, until, 0
        def next(self):
            if self.i == self.n or (self.until and os.path.exists(self.until)):
                raise StopIteration
            self.i += 1
            time.sleep(self.delay)
            return np.full((64, 64, 3), self.i % 251, np.uint8)

    class Brighten(ProcessorNode):
        def process(self, frame):
            return frame + 1

    class Count(ConsumerNode):
        def __init__(self, path):
            super().__init__()
            self.path = path
        def open(self):
            self.seen = 0
        def consume(self, frame):
            assert int(frame[0, 0, 0]) == (self.seen + 1) % 251 + 1
            self.seen += 1
        def close(self):
            with open(self.path, "w") as f:
                f.write(str(self.seen))

    if __name__ == "__main__":
        n, delay, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
        a = Frames(n, delay, *sys.argv[4:])  # (the file whose creation ends it)
        b = Brighten(nb_tasks=2)(a)
        c = Count(out)(b)
        flow = Flow([a], [c], flow_type=BATCH)
        try:
            flow.run()
            print("running", os.getpid(), flush=True)
            flow.join()
            stats = flow.stats()
            print("ok", stats.pool_slots_in_use, stats.produced, flush=True)
        except Exception as exc:
            print("error", type(exc).__name__, exc, flush=True)
    """
)


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "frames_flow.py"
    path.write_text(FRAMES_FLOW)
    return path


@needs_mount_ns
@pytest.mark.timeout(120)
def test_a_full_dev_shm_is_an_error_never_sigbus(tmp_path):
    """From a /dev/shm too small for the first queue to one too small for the last pool: each
    run ends with PoolExhaustedError or success, never a signal, and leaves /dev/shm empty."""
    script = _script(tmp_path)
    outcomes = set()
    for kib in (4, 12, 20, 28, 40, 56, 72, 96, 128, 192, 256, 512):
        shell = (
            f"mount -t tmpfs -o size={kib}k tmpfs /dev/shm && cd {ROOT} && "
            f"{sys.executable} {script} 20 0 {tmp_path / 'count'}; rc=$?; "
            "echo left: $(ls -A /dev/shm); exit $rc"
        )
        run = subprocess.run(
            ["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=60
        )
        out = run.stdout
        assert run.returncode == 0, f"{kib} KiB: exit {run.returncode}\n{out}\n{run.stderr}"
        assert "left: \n" in out or out.rstrip().endswith("left:"), f"{kib} KiB: {out}"
        # At start: PoolExhaustedError itself; once running: a FlowError naming it and the node.
        assert "ok 0" in out or "PoolExhaustedError" in out, f"{kib} KiB: {out}"
        outcomes.add("ok" if "ok 0" in out else "full")
    assert outcomes == {"ok", "full"}, "the sizes no longer span a failing and a working flow"


@needs_pid_ns
@pytest.mark.timeout(120)
def test_flows_in_other_pid_namespaces_are_never_swept(tmp_path):
    """A flow whose owner pid means nothing here (another PID namespace, same /dev/shm) keeps
    its segments while flows started in a third namespace sweep at every run."""
    script = _script(tmp_path)
    # Use up some pids so the long flow's owner pid is not alive in the sweepers' namespace.
    burn = "for i in $(seq 60); do /bin/true; done; "
    long_out, until = tmp_path / "long", tmp_path / "enough"
    # It runs until the sweeps are over (however slow a busy machine makes them).
    victim = subprocess.Popen(
        ["unshare", "-p", "-f", "sh", "-c",
         f"{burn}cd {ROOT} && {sys.executable} {script} 100000 0.01 {long_out} {until}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert victim.stdout is not None
        word, pid = victim.stdout.readline().split()
        assert word == "running"
        prefix = f"vf.{pid}."
        def pools_and_lock() -> set[str]:  # its queues go by design once every task opened them
            return {
                n for n in os.listdir("/dev/shm")
                if n.startswith(prefix) and not n.rsplit(".", 1)[-1].startswith("q")
            }

        deadline = time.monotonic() + 20
        while len(entries := pools_and_lock()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)  # pools are made at the first frames
        assert len(entries) >= 3, f"the long flow has no pools in /dev/shm: {entries}"
        for i in range(3):
            sweeper = subprocess.run(
                ["unshare", "-p", "-f", "sh", "-c",
                 f"cd {ROOT} && exec {sys.executable} {script} 5 0 {tmp_path / f's{i}'}"],
                capture_output=True, text=True, timeout=60,
            )
            assert "ok 0" in sweeper.stdout, sweeper.stdout + sweeper.stderr
        still = pools_and_lock()
        assert entries <= still, f"a sweep removed a live flow's entries: {entries - still}"
        assert victim.poll() is None, "the long flow ended during the sweeps"
        until.touch()
        out, err = victim.communicate(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    assert "ok 0" in out, out + err
    assert long_out.read_text() == out.split()[-1]  # every frame it made arrived


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("reorder_window", -100, "reorder_window must be an integer from 0 to"),
        ("stop_grace", float("nan"), "stop_grace must be a number of seconds"),
        ("poll_interval", float("inf"), "poll_interval must be a number of seconds"),
        ("start_timeout", float("nan"), "start_timeout must be a number of seconds"),
        ("debug", "no", "debug must be True or False, got 'no'"),
        ("progress", 1, "progress must be True or False"),
        ("queue_depth", "4", "queue_depth must be an integer from 1 to 64, got '4'"),
        ("queue_depth", 4.0, "queue_depth must be an integer"),
        ("queue_depth", True, "queue_depth must be an integer"),
        ("message_size", 10**9, "message_size must be an integer from 512"),
        ("inline_max", 4000, "inline_max must be at most half of message_size"),
        ("opencv_threads", -2, "opencv_threads must be an integer from -1"),
    ],
)
def test_options_are_checked_when_the_flow_is_made(option, value, says):
    from videoflow.consumers import VoidConsumer
    from videoflow.core import Flow
    from videoflow.producers import IntProducer

    a = IntProducer(0, 3)
    c = VoidConsumer()(a)
    with pytest.raises(ValueError, match=re.escape(says)):
        Flow([a], [c], flow_options={option: value})


def test_environment_options_name_the_variable(monkeypatch):
    from videoflow.config import FlowConfig

    monkeypatch.setenv("VIDEOFLOW_QUEUE_DEPTH", "four")
    with pytest.raises(ValueError, match="VIDEOFLOW_QUEUE_DEPTH='four' is not a int"):
        FlowConfig.from_options()
    monkeypatch.setenv("VIDEOFLOW_QUEUE_DEPTH", "0")
    with pytest.raises(ValueError, match="queue_depth must be an integer from 1"):
        FlowConfig.from_options()


def test_nb_tasks_is_bounded_by_the_machine():
    from videoflow.core import ProcessorNode
    from videoflow.core.node import max_tasks

    assert max_tasks() >= 64
    with pytest.raises(ValueError, match=f"nb_tasks must be an integer from 1 to {max_tasks()}"):
        ProcessorNode(nb_tasks=10**4)
    with pytest.raises(ValueError, match="nb_tasks must be an integer"):
        ProcessorNode(nb_tasks=0)
    assert ProcessorNode(nb_tasks=max_tasks()).nb_tasks == max_tasks()


def test_a_forgotten_super_init_is_named():
    from videoflow.core import ProcessorNode
    from videoflow.producers import IntProducer

    class Forgetful(ProcessorNode):
        def __init__(self) -> None:
            self.threshold = 3

    with pytest.raises(TypeError, match=r"Forgetful.__init__ did not call super\(\).__init__\(\)"):
        Forgetful()(IntProducer(0, 3))
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        _ = Forgetful().missing
