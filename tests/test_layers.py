"""The package's import structure: public paths, internal layers, no import circles.

Read from the source (every ``import`` and ``from ... import``, at module level or inside a
function), so a lazy import that closes a circle counts as much as a top-level one.
"""

from __future__ import annotations

import ast
import pathlib

import videoflow

PACKAGE = pathlib.Path(videoflow.__file__).parent


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def imports_of(module: str) -> set[str]:
    """The videoflow modules ``module`` imports (a package only when a name is taken from its
    ``__init__``, not when a submodule is)."""
    deps: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("videoflow"):
            base = node.module or ""
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
            deps |= subs
            if len(subs) < len(node.names):
                deps.add(base)
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names if a.name.startswith("videoflow")}
    return {d for d in deps if d in MODULES and d != module}


def reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        for dep in imports_of(todo.pop()):
            if dep == goal:
                return True
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return False


def test_result_types_are_public():
    from videoflow.core import FlowStats, NodeStats, Report, TaskStats
    from videoflow.engine.report import Report as InternalReport
    from videoflow.engine.stats import FlowStats as InternalStats

    assert Report is InternalReport and FlowStats is InternalStats
    assert {"FlowStats", "NodeStats", "TaskStats", "Report"} <= set(videoflow.core.__all__)
    assert NodeStats.__doc__ and TaskStats.__doc__


def test_internal_packages_say_so():
    import videoflow.engine
    import videoflow.transport

    for package in (videoflow.engine, videoflow.transport):
        assert "Internal" in (package.__doc__ or ""), package.__name__


def test_demo_and_benchmark_use_public_paths_only():
    users = ["videoflow.demo", *(m for m in MODULES if m.startswith("videoflow.benchmark"))]
    for module in users:
        internal = sorted(
            d for d in imports_of(module)
            if d.startswith(("videoflow.engine", "videoflow.transport"))
        )
        assert not internal, f"{module} imports internal modules: {internal}"


def test_no_import_circles_in_stats_report_and_benchmark():
    assert not reaches("videoflow.engine.stats", "videoflow.engine.report")
    assert reaches("videoflow.engine.report", "videoflow.engine.stats")
    assert not reaches("videoflow.benchmark.filebench", "videoflow.benchmark.matrix")
    for module in (m for m in MODULES if m.startswith("videoflow.benchmark.")):
        assert not reaches(module, module), f"{module} imports itself through others"


def test_segment_names_are_built_in_one_module():
    """Only transport/names.py spells out the layout of a flow's entry names."""
    for module, path in MODULES.items():
        if module == "videoflow.transport.names":
            continue
        text = path.read_text()
        for pattern in ('f"vf.', "f'vf.", ".q{", "pool_prefix}.", "prefix) + 1"):
            assert pattern not in text, f"{module} builds or parses a name itself: {pattern}"
