"""Which engine runs a flow: the registry of engine names and the one place a choice is made.

A flow's engine comes from, first to last: the ``engine`` argument of ``Flow`` (a name or an
object that satisfies ``videoflow.engine.base.Engine``), ``flow_options={"engine": name}``,
the ``VIDEOFLOW_ENGINE`` environment variable, and the default ``"process"``. The last three
all land in ``FlowConfig.engine``. A name maps to a factory that is called only when that
engine is chosen, so the optional ones (Ray) are imported only by the flows that use them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from videoflow.engine.base import Engine

if TYPE_CHECKING:
    from videoflow.config import FlowConfig

RAY_INSTALL = 'pip install "videoflow-shm[ray]"'


def _process_engine() -> Engine:
    from videoflow.engine.runner import ProcessEngine

    return ProcessEngine()


def _ray_engine() -> Engine:
    try:
        module = importlib.import_module("videoflow.engine.ray_engine")
    except ImportError as exc:
        raise ImportError(
            f"the 'ray' engine needs Ray, which could not be imported ({exc}); "
            f"install it with: {RAY_INSTALL}"
        ) from exc
    engine: Engine = module.RayEngine()
    return engine


_FACTORIES: dict[str, Callable[[], Engine]] = {
    "process": _process_engine,
    "ray": _ray_engine,
}


def engine_names() -> list[str]:
    """The names an engine can be chosen by, sorted."""
    return sorted(_FACTORIES)


def register_engine(name: str, factory: Callable[[], Engine]) -> None:
    """Make ``factory`` (called with no argument, once per flow) the engine named ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an engine name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"the factory of engine {name!r} must be callable")
    _FACTORIES[name] = factory


def check_engine_name(name: object) -> str:
    """``name`` when it names a registered engine; a ValueError listing the known ones if not."""
    if not isinstance(name, str) or name not in _FACTORIES:
        raise ValueError(
            f"unknown engine {name!r}; known engines: {', '.join(engine_names())} "
            "(or pass an object that implements videoflow.engine.base.Engine)"
        )
    return name


def make_engine(choice: str | Engine | None, config: FlowConfig) -> Engine:
    """The engine for one flow: ``choice`` when given (a name or an instance), else the one
    ``config.engine`` names."""
    if choice is None:
        choice = config.engine
    if isinstance(choice, str):
        return _FACTORIES[check_engine_name(choice)]()
    if not isinstance(choice, Engine):
        raise TypeError(
            f"engine must be a name ({', '.join(engine_names())}) or an object with name, "
            "start, stop, abort, kill, wait, running, errors and stats "
            f"(videoflow.engine.base.Engine); got {type(choice).__name__}"
        )
    return choice


__all__ = ["check_engine_name", "engine_names", "make_engine", "register_engine"]
