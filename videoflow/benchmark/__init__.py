"""Throughput benchmarking of videoflow, as a library (``videoflow bench`` is its command).

    from videoflow.benchmark import run_matrix, bench_flow
    result = run_matrix(sections=["handoff"], duration=0.5)   # -> BenchResult
    print(result.find("handoff", "videoflow", size="1920x1080", hops=1).fps)
    result.save("bench.json")                                 # validates against SCHEMA

    result = bench_flow("my_flow.py")   # or bench_flow(make_flow): a function returning a Flow

The matrix (``matrix.py``, its file section in ``filebench.py``) measures videoflow against
baselines (``baselines.py``) in the same run, as ``options.py`` says; ``result.py`` holds the
result types, their JSON schema (checked with the jsonschema package) and ``compare``.
"""

from videoflow.benchmark.matrix import run_matrix
from videoflow.benchmark.options import SECTIONS, SIZES, Options
from videoflow.benchmark.result import (
    SCHEMA,
    BenchResult,
    Change,
    Row,
    compare,
    machine_info,
    validate,
)
from videoflow.benchmark.userflow import bench_flow

__all__ = [
    "SCHEMA",
    "SECTIONS",
    "SIZES",
    "BenchResult",
    "Change",
    "Options",
    "Row",
    "bench_flow",
    "compare",
    "machine_info",
    "run_matrix",
    "validate",
]
