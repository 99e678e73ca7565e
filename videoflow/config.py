"""Every tunable number of the engine and transport, in one config object.

``Flow(..., flow_options={...})`` and the ``VIDEOFLOW_*`` environment variables both land here;
nothing else in the package hard-codes a queue size, a slot count or a timeout.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

from videoflow import mainguard
from videoflow.engine.engines import check_engine_name

START_METHODS = ("forkserver", "spawn", "fork")
DROP_OLDEST, DROP_NEWEST = "oldest", "newest"
REALTIME_DROPS = (DROP_OLDEST, DROP_NEWEST)


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Engine settings. Defaults are chosen for video frames on a few cores.

    queue_depth:       messages a control queue holds (POSIX message queues: at most msg_max,
                       10 on a stock kernel for unprivileged users).
    message_size:      largest control message in bytes; bigger payloads go to a slot as a blob.
    inline_max:        a value whose pickle is at most this many bytes rides inside the message.
    oob_min:           a buffer of at least this many bytes inside a value goes out of band.
    reorder_window:    extra in-flight messages a multi-task node may have beyond 2 * nb_tasks.
    join_pending:      messages a JOIN stage may hold per input while it waits for the others
                       (0, the default: queue_depth + 2). A full buffer holds back only that
                       input's stream.
    poll_interval:     seconds between checks of stop/abort flags while a task waits.
    stop_grace:        seconds the parent waits for tasks to exit after an abort before killing.
    stop_timeout:      seconds an ending may take before it is forced: from ``flow.stop()`` (or
                       the first Ctrl-C) to the end of the flow, and from a task's last message
                       to the exit of its process (its ``close()``, then its threads). Past it,
                       the stop becomes an abort (and stop_grace later, a kill), the task is
                       killed, and ``join()`` raises a FlowError naming the tasks that had not
                       finished and what they were doing.
    stall_timeout:     0 (default: off), or seconds after which a stalled flow fails with a
                       FlowError naming the stalled task: a task that has been in one call of
                       its node's code (or whose process has been stopped) that long, or a flow
                       in which nothing moved that long. Set it above the longest call a node
                       may make; a live source that sends nothing for that long stalls too.
    start_timeout:     seconds tasks have to open their node and report ready.
    start_method:      multiprocessing start method (forkserver, spawn or fork). Left unset,
                       ``Flow`` picks forkserver, or fork for a script that starts its flow
                       at import without a main guard (see ``choose_start_method``).
    debug:             check slot generations on every read, of every message after each call
                       and of every frame a node keeps, and fill released slots with 0xDB (a
                       view read after its slot went back shows 0xDB); costs time per message.
    progress:          draw a progress line on stderr while the flow runs (only on a terminal).
    opencv_threads:    threads OpenCV may use in each task (cv2.setNumThreads, and the FFmpeg
                       decoder of the file readers). 0 (default): the CPUs shared out over the
                       flow's tasks, at least 1 each, so that N tasks on N cores do not each run
                       a pool of N threads fighting for the same cores; -1: OpenCV's own default.
                       An OPENCV_FOR_THREADS_NUM set in the environment is kept when this is 0.
    engine:            the engine that runs the flow by name: "process" (one OS process per
                       task, the default), "ray" (needs the ray extra) or a registered name
                       (videoflow.engine.engines.register_engine). ``Flow(..., engine=...)``
                       also takes an engine object.
    profile:           a directory: every task runs under cProfile and writes
                       ``<node>.<worker>.prof`` there when it ends (videoflow.engine.profiling;
                       ``videoflow bench --profile`` reads them). "" (default): no profiling.
    realtime_drop:     which message a full queue of a REALTIME flow drops: "oldest" (default:
                       the queued message goes and the new one is sent, so a node that becomes
                       free takes the freshest frame; GStreamer's leaky=downstream) or "newest"
                       (the new message goes; the ones already queued wait their turn). A node
                       may choose for the queue in front of it (``realtime_drop=`` of
                       ProcessorNode and ConsumerNode).
    realtime_depth:    messages a queue holds in a REALTIME flow where it drops the oldest: 1
                       (default) keeps one frame waiting, the newest; more absorbs bursts at
                       the cost of older frames. Queues that drop the newest, and every queue
                       of a BATCH flow, hold ``queue_depth``.
    ray_address:       the Ray engine's cluster ("HEAD:6379", "ray://head:10001", "auto"); empty:
                       RAY_ADDRESS, else a local instance. A RayEngine(address=...) wins.
    """

    queue_depth: int = 4
    message_size: int = 4096
    inline_max: int = 1024
    oob_min: int = 4096
    reorder_window: int = 4
    join_pending: int = 0
    poll_interval: float = 0.1
    stop_grace: float = 3.0
    stop_timeout: float = 5.0
    stall_timeout: float = 0.0
    start_timeout: float = 60.0
    start_method: str = "forkserver"
    debug: bool = False
    progress: bool = True
    opencv_threads: int = 0
    engine: str = "process"
    profile: str = ""
    realtime_drop: str = DROP_OLDEST
    realtime_depth: int = 1
    ray_address: str = ""

    def __post_init__(self) -> None:
        for name, (kind, low, high) in _RANGES.items():
            _check(name, getattr(self, name), kind, low, high)
        for name in ("debug", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"flow option {name} must be True or False, got {getattr(self, name)!r}"
                )
        if self.inline_max > self.message_size // 2:
            raise ValueError(
                f"flow option inline_max must be at most half of message_size "
                f"({self.message_size // 2}), got {self.inline_max}"
            )
        if self.start_method not in START_METHODS:
            raise ValueError(
                f"flow option start_method must be one of {', '.join(START_METHODS)}, "
                f"got {self.start_method!r}"
            )
        check_engine_name(self.engine)
        if not isinstance(self.profile, str):
            raise ValueError(
                f"flow option profile must be a directory (a str), or \"\" for none, "
                f"got {self.profile!r}"
            )
        check_realtime_drop(self.realtime_drop, "flow option realtime_drop")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> FlowConfig:
        """Build a config from environment variables, then ``options`` (which win)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name, field in fields.items():
            env = os.environ.get(f"VIDEOFLOW_{name.upper()}")
            if env is not None:
                values[name] = _parse(env, field.type, name)
        for name, value in (options or {}).items():
            if name not in fields:
                raise ValueError(
                    f"unknown flow option {name!r}; known options: {', '.join(sorted(fields))}"
                )
            values[name] = value
        values["start_method"] = choose_start_method(values.get("start_method"))
        return cls(**values)

    def _opencv_mode(self) -> str:
        """Which rule sets OpenCV's threads in tasks: fixed, default, environment or share."""
        if self.opencv_threads > 0:
            return "fixed"
        if self.opencv_threads == -1:
            return "default"
        return "environment" if "OPENCV_FOR_THREADS_NUM" in os.environ else "share"

    def opencv_threads_rule(self) -> str:
        """How tasks set OpenCV's threads, in words (``videoflow info``)."""
        return {
            "fixed": f"{self.opencv_threads} per task",
            "default": "OpenCV's default in each task",
            "environment": f"OPENCV_FOR_THREADS_NUM={os.environ.get('OPENCV_FOR_THREADS_NUM')} "
            "(environment)",
            "share": "the CPUs divided among a flow's tasks, at least 1 each",
        }[self._opencv_mode()]

    def opencv_threads_per_task(self, nb_tasks: int, cpus: int) -> int | None:
        """Threads each of ``nb_tasks`` task processes gives OpenCV on ``cpus`` CPUs, or None
        to leave OpenCV's setting alone."""
        mode = self._opencv_mode()
        if mode == "fixed":
            return self.opencv_threads
        if mode == "share":
            return max(1, cpus // max(1, nb_tasks))
        return None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else every CPU of the machine): what
    the tasks share OpenCV's threads over, what ``report()`` judges CPU use against, and what
    ``videoflow bench`` scales up to."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_start_method(requested: str | None) -> str:
    """The start method for a flow being created now, ``requested`` being the one the user set
    (flow_options or VIDEOFLOW_START_METHOD), or None.

    forkserver by default. A main script that creates the flow while it is being imported,
    outside ``if __name__ == "__main__":`` (the original videoflow's examples do), would be run
    again by every forkserver or spawn task and start the flow once more there; it gets fork,
    the original's method. Asking for forkserver or spawn in such a script is a ValueError
    that names the guard, raised before any process starts.
    """
    unguarded = mainguard.unguarded_main_line()
    if requested is None:
        return "forkserver" if unguarded is None else "fork"
    if unguarded is not None and requested in ("forkserver", "spawn"):
        path, line = unguarded
        raise ValueError(
            f"{path} starts a flow at line {line} when it is imported, so start_method="
            f"{requested!r} would start it again in every task: put that code under "
            "`if __name__ == \"__main__\":`, or leave start_method unset to use fork"
        )
    return requested


# Accepted ranges, inclusive: (type, lowest, highest). Floats must also be finite.
_RANGES: dict[str, tuple[type, float, float]] = {
    "queue_depth": (int, 1, 64),
    "message_size": (int, 512, 1 << 20),
    "inline_max": (int, 1, 1 << 19),
    "oob_min": (int, 1, 1 << 30),
    "reorder_window": (int, 0, 4096),
    "join_pending": (int, 0, 4096),
    "poll_interval": (float, 0.001, 10.0),
    "stop_grace": (float, 0.01, 3600.0),
    "stop_timeout": (float, 0.01, 86400.0),
    "stall_timeout": (float, 0.0, 86400.0),
    "start_timeout": (float, 0.1, 86400.0),
    "opencv_threads": (int, -1, 1024),
    "realtime_depth": (int, 1, 64),
}


def check_realtime_drop(value: object, what: str) -> None:
    """Raise ValueError unless ``value`` names a drop policy ("oldest" or "newest")."""
    if value not in REALTIME_DROPS:
        raise ValueError(
            f"{what} must be {DROP_OLDEST!r} (keep the freshest frame) or {DROP_NEWEST!r} "
            f"(keep the queued frames), got {value!r}"
        )


def _check(name: str, value: Any, kind: type, low: float, high: float) -> None:
    """Raise ValueError naming the option and its accepted range when ``value`` is outside."""
    accepted = (
        f"an integer from {low} to {high}" if kind is int
        else f"a number of seconds from {low:g} to {high:g}"
    )
    if name == "opencv_threads":
        accepted += " (-1: OpenCV's default, 0: share the CPUs among the tasks)"
    elif name == "stall_timeout":
        accepted += " (0: off)"
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float) if kind is float else int)
        and math.isfinite(value)
        and low <= value <= high
    )
    if not ok:
        raise ValueError(f"flow option {name} must be {accepted}, got {value!r}")


def _parse(text: str, type_name: Any, name: str) -> Any:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            return text.strip().lower() in ("1", "true", "yes", "on")
    except ValueError:
        raise ValueError(
            f"environment variable VIDEOFLOW_{name.upper()}={text!r} is not a {kind}"
        ) from None
    return text
