"""What a benchmark run measures (``Options``) and the helpers every section shares.

The sections (``matrix.py`` for handoff, scaling and realtime, ``filebench.py`` for file) import
this module and not each other, so ``matrix.py`` can run them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from videoflow.config import available_cpus

SECTIONS = ("handoff", "scaling", "realtime", "file", "join")
SIZES = {"480p": (480, 640), "720p": (720, 1280), "1080p": (1080, 1920), "4k": (2160, 3840)}
BASELINES = ("queue", "pipe", "pool", "single")
VIDEOFLOW = "videoflow"

Progress = Callable[[str], None]


class _HasFps(Protocol):
    @property
    def fps(self) -> float: ...


T = TypeVar("T", bound=_HasFps)


def parse_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` (width x height) or a name in ``SIZES`` -> (height, width)."""
    if text in SIZES:
        return SIZES[text]
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        known = ", ".join(SIZES)
        raise ValueError(f"frame size must be WIDTHxHEIGHT or one of {known}: {text!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"frame size must be positive: {text!r}")
    return h, w


def size_name(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"


@dataclasses.dataclass
class Options:
    """What ``run_matrix`` measures (the CLI maps its flags onto these)."""

    sections: Sequence[str] = SECTIONS
    sizes: Sequence[tuple[int, int]] = (SIZES["480p"], SIZES["720p"], SIZES["1080p"], SIZES["4k"])
    hops: Sequence[int] = (1, 3)
    duration: float = 1.0
    baselines: Sequence[str] = BASELINES
    nb_tasks: Sequence[int] | None = None  # scaling: None -> 1 .. usable cores
    scaling_size: tuple[int, int] = SIZES["1080p"]
    realtime_size: tuple[int, int] = SIZES["720p"]
    rate: float = 60.0  # realtime: producer frames per second
    cv2_threads: int | None = 1
    start_method: str | None = None
    repeat: int = 1  # runs per measurement; the fastest is kept (robust to a busy machine)
    engine: str = "process"  # the engine of the videoflow rows ("ray": tagged engine=ray)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("sections", "hops", "baselines", "nb_tasks"):
            if d[k] is not None:
                d[k] = list(d[k])
        d["sizes"] = [size_name(s) for s in self.sizes]
        d["scaling_size"] = size_name(self.scaling_size)
        d["realtime_size"] = size_name(self.realtime_size)
        return d


def core_counts(opts: Options) -> list[int]:
    """The nb_tasks values to measure: ``opts.nb_tasks``, else 1 .. ``available_cpus()``."""
    if opts.nb_tasks:
        return list(opts.nb_tasks)
    return list(range(1, available_cpus() + 1))


def best_of(repeat: int, run: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``run(*args, **kwargs)`` ``repeat`` times; keep the fastest (others' load on the machine
    only ever slows a run down)."""
    results = [run(*args, **kwargs) for _ in range(max(1, repeat))]
    return max(results, key=lambda r: r.fps)
