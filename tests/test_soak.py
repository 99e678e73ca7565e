"""Soak: a flow runs for 10 minutes (``pytest -m slow``); memory and /dev/shm must stay flat.

Every second the test samples the resident memory of the owner and of every task process
(VmRSS, and RssAnon: private memory, where a leak shows; VmRSS also counts the pool pages a
process has touched) and the bytes of this flow's segments in /dev/shm. After a warm-up, the
last minute must not be above the first minute after warm-up by more than a small margin.
``VIDEOFLOW_SOAK_SECONDS`` shortens the run; ``VIDEOFLOW_SOAK_REPORT`` names a file for the
samples (JSON lines).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import statistics
import time

import pytest
from conftest import own_entries
from nodes import CheckingCounter, CopyProcessor, DictOfArrays, JitterProcessor, UnwrapDict

from videoflow.core import BATCH, Flow
from videoflow.producers import SyntheticFrameProducer
from videoflow.transport.names import SHM_DIR

SECONDS = float(os.environ.get("VIDEOFLOW_SOAK_SECONDS", "600"))
MiB = 2**20


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) of ``pid`` in bytes; (0, 0) once it is gone."""
    rss = anon = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, anon


def shm_bytes() -> int:
    total = 0
    for name in own_entries():
        with contextlib.suppress(OSError):
            total += os.stat(os.path.join(SHM_DIR, name)).st_blocks * 512
    return total


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 120)
def test_soak_memory_and_shared_memory_stay_flat(tmp_path):
    out = str(tmp_path / "counts.txt")
    a = SyntheticFrameProducer((240, 320, 3), count=None, fps=200, name="source")
    b = CopyProcessor(nb_tasks=3, name="copy")(a)
    c = DictOfArrays(name="wrap")(b)
    d = UnwrapDict(name="unwrap")(c)
    e = JitterProcessor(0.002, nb_tasks=2, name="jitter")(d)
    f = CheckingCounter(out, name="check")(e)
    flow = Flow([a], [f], flow_type=BATCH)
    flow.run()
    samples = []
    report = os.environ.get("VIDEOFLOW_SOAK_REPORT")
    sink = open(report, "w") if report else None  # noqa: SIM115
    t0 = time.monotonic()
    try:
        while (elapsed := time.monotonic() - t0) < SECONDS:
            tasks = {p.name: p.pid for p in mp.active_children()}
            sample = {
                "t": round(elapsed, 1),
                "owner": memory(os.getpid()),
                "tasks": {name: memory(pid) for name, pid in tasks.items()},
                "shm": shm_bytes(),
                "in_use": sum(t.slots_in_use or 0 for n in flow.stats().nodes for t in n.tasks),
                "delivered": flow.stats().delivered,
            }
            samples.append(sample)
            if sink:
                sink.write(json.dumps(sample) + "\n")
                sink.flush()
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0 - elapsed)))
    finally:
        flow.stop()
        flow.join(timeout=30)
        if sink:
            sink.close()
    stats = flow.stats()
    with open(out) as f:
        count, bad, unordered = map(int, f.read().split()[:3])
    assert stats.produced == stats.delivered == count > 0
    assert bad == 0 and unordered == 0
    assert stats.pool_slots_in_use == 0

    warm = max(5, len(samples) // 10)  # pools and caches fill during the first tenth
    window = max(3, len(samples) // 10)
    first, last = samples[warm : warm + window], samples[-window:]
    # A pool reserves a slot when a burst first needs it (bounded by the plan), so the high-water
    # mark may still step up by a slot or two after warm-up; a leak grows without bound.
    series = {"/dev/shm (max)": (lambda r: r["shm"], max, 2 * MiB)}
    for i, what in ((0, "rss"), (1, "anon")):
        series[f"owner {what}"] = (lambda r, i=i: r["owner"][i], statistics.median, 8 * MiB)
        for name in sorted(samples[-1]["tasks"]):
            series[f"{name} {what}"] = (
                lambda r, n=name, i=i: r["tasks"].get(n, (0, 0))[i], statistics.median, 4 * MiB
            )
    grew = []
    print(f"\nsoak: {len(samples)} samples, {count} frames")
    print("MiB, after warm-up -> at the end (medians of a tenth of the run; /dev/shm: maxima)")
    for key, (get, level, margin) in series.items():
        before = level(get(r) for r in first)
        after = level(get(r) for r in last)
        print(f"  {key:36s} {before / MiB:8.1f} -> {after / MiB:8.1f}")
        if after - before > margin:
            grew.append(key)
    assert not grew, f"grew during the soak: {grew}"
