"""What a forced ending says, in the same words on every engine.

Both engines bound every ending the same way (``stop_timeout``, ``stall_timeout``; see
FlowConfig) and name, in the FlowError, each task that had not finished and what it was doing.
The process engine reads what a task is doing from the STATE counter the task publishes; the
Ray engine works it out from the calls it has in flight (engine/ray_watch.py). Either way the
words come from here: what a task does (``doing``), when it counts as stalled
(``stalled_after``), and the three errors (``stop_timeout_error``, ``stall_error``,
``close_timeout_error``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from videoflow.engine.control import BUSY_NS, IN, describe_state
from videoflow.errors import FlowError

STALL_AFTER = 2.0  # seconds in a node's code that make a task "stalled" when stall_timeout is 0
STALL_RATIO = 10  # ... and this many times the task's mean time per call
GAP = 2.0  # seconds between two looks at the tasks that mean the owner itself was not running


@dataclasses.dataclass(frozen=True)
class Unfinished:
    """A task that had not finished when an ending was forced, and what it was doing."""

    name: str
    worker: int
    doing: str

    @property
    def label(self) -> str:
        return f"{self.name!r} (task {self.worker})"


def doing(
    kind: str, row: list[int] | tuple[int, ...], seconds: float | None = None,
    stopped: bool = False, threads: Sequence[str] = (),
) -> str:
    """What the task whose counter row is ``row`` is doing, in words: its phase and message
    (control.describe_state), for how long when it is in a call of its node (``seconds``), and
    why it may not move."""
    text = describe_state(kind, row)
    if seconds is not None:
        text += f" for {seconds:.1f} s"
    if stopped:
        text += "; its process is stopped (SIGSTOP, or a debugger)"
    if threads:
        text += f"; threads keep its process alive: {', '.join(threads)}"
    return text


def stalled_after(stall_timeout: float, row: Sequence[int]) -> float:
    """Seconds in one call of its node's code after which a task counts as stalled (report):
    ``stall_timeout`` when set, else ``STALL_AFTER``, and never less than ``STALL_RATIO`` times
    the task's mean time per call (a node that always takes long is not stalled)."""
    mean = row[BUSY_NS] / 1e9 / max(1, row[IN])
    return max(stall_timeout or STALL_AFTER, STALL_RATIO * mean)


def skip_gap(gap: float, tasks: Iterable[Any]) -> float:
    """``gap`` seconds passed between two looks at the tasks: more than ``GAP`` means the
    owner itself was not running (Ctrl-Z, a debugger) and nothing could be seen meanwhile, so
    that time must not count towards a stall: the tasks' clocks (``since``, ``stopped_since``)
    move forward by it. Returns how far they moved (0.0 for a normal gap), for the owner's own
    clocks."""
    if gap <= GAP:
        return 0.0
    for task in tasks:
        task.since += gap
        task.stopped_since += gap
    return gap


def _listing(tasks: Sequence[Unfinished]) -> str:
    return "".join(f"\n  - {t.label}: {t.doing}" for t in tasks)


def stop_timeout_error(
    stop_timeout: float, stop_grace: float, left: Sequence[Unfinished]
) -> FlowError:
    """The flow had not ended ``stop_timeout`` seconds after stop(): ``left`` (those holding
    the flow up first) are aborted, and killed ``stop_grace`` seconds later."""
    first = left[0]
    return FlowError(
        f"the flow did not end within {stop_timeout:g} s of stop() (stop_timeout): "
        f"{len(left)} task(s) had not finished, and were aborted (and killed if still running "
        f"{stop_grace:g} s later, stop_grace):" + _listing(left),
        node=first.name, task=first.worker,
    )


def stall_error(
    stall_timeout: float, stuck: Unfinished | None, left: Sequence[Unfinished]
) -> FlowError:
    """No message moved for ``stall_timeout`` seconds: ``stuck`` is the task stuck in its
    node's code (or stopped) that long, None when no task is; ``left`` the tasks that had not
    finished, ``stuck`` among them."""
    if stuck is not None:
        left = [stuck, *(t for t in left if t != stuck)]
        what = f"{stuck.label} is stalled, {stuck.doing}"
    else:
        what = "no task is in its node's code"
    first = left[0]
    return FlowError(
        f"no message moved for {stall_timeout:g} s (stall_timeout): {what}. Tasks that had "
        "not finished (aborted):" + _listing(left),
        node=first.name, task=first.worker,
    )


def not_ended_error(what: str, fix: str, name: str, worker: int, stop_timeout: float) -> FlowError:
    """A task past its last message had not ended ``stop_timeout`` seconds later: ``what``
    did not happen, ``fix`` says what to change."""
    return FlowError(
        f"{what} within {stop_timeout:g} s of its last message (stop_timeout), so it was "
        f"killed: {fix}",
        node=name, task=worker,
    )


def close_timeout_error(name: str, worker: int, stop_timeout: float) -> FlowError:
    """A node's close() had not returned ``stop_timeout`` seconds after its last message."""
    return not_ended_error(f"node {name!r} (task {worker}) did not return from close()",
                           "make close() return", name, worker, stop_timeout)


__all__ = [
    "GAP", "STALL_AFTER", "STALL_RATIO", "Unfinished", "close_timeout_error", "doing",
    "not_ended_error", "skip_gap", "stall_error", "stalled_after", "stop_timeout_error",
]
