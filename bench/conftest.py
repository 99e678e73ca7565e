"""pytest-benchmark suite of videoflow: ``pytest bench/ --benchmark-only``.

The measurements are videoflow.benchmark's (the code of ``videoflow bench``); these tests run
them, keep the figures in the benchmark's ``extra_info`` (saved by ``--benchmark-json``), print
them at the end and assert the targets as ratios. Nothing here runs in CI.
"""

from __future__ import annotations

from typing import Any

import pytest

from videoflow.benchmark import Row
from videoflow.engine.runner import leftovers

_rows: list[Row] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-duration", type=float, default=2.0,
                     help="seconds each measured pipeline runs (default 2)")
    parser.addoption("--bench-repeat", type=int, default=3,
                     help="runs per measurement, the fastest kept (default 3)")


@pytest.fixture
def duration(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--bench-duration"))


@pytest.fixture
def repeat(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--bench-repeat"))


@pytest.fixture(autouse=True)
def no_leaks():
    yield
    entries, children = leftovers()
    assert not children, f"child processes left behind: {children}"
    assert not entries, f"shared memory / queues left behind: {entries}"


@pytest.fixture
def keep(benchmark: Any) -> Any:
    """``keep(rows)``: record rows in the benchmark's extra_info and the end-of-run table;
    returns them indexed by impl."""

    def record(rows: list[Row]) -> dict[str, Row]:
        for row in rows:
            _rows.append(row)
            benchmark.extra_info[row.key] = row.to_dict()
        return {row.impl: row for row in rows}

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _rows:
        return
    from videoflow.benchmark.cli import format_table

    terminalreporter.write_sep("-", "videoflow benchmark figures")
    terminalreporter.write_line(format_table(_rows))
