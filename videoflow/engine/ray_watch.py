"""The Ray engine's watchdog: what every task is doing, and the endings that take too long.

The driver (engine/ray_engine.py) knows what each actor is doing from the calls it has in
flight (``Watchdog.observe``): an actor runs its calls in order, so its oldest call that has
not returned is the one it runs once that call's arguments are ready; a producer says it
itself (``look``). From that the watchdog words what each task is doing as the process engine
does (engine/endings.py), and fails the flow when a stop has not ended it ``stop_timeout``
after stop(), when a ``close()`` has not returned ``stop_timeout`` after the task's last call,
or (with ``stall_timeout``) when a task is stuck in one call or nothing moves at all.

Ray is not imported here: the driver passes in the ``ray`` module it imported.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from videoflow.engine.control import (
    IN_NODE_CODE,
    P_BETWEEN,
    P_CLOSE,
    P_CONSUME,
    P_ENDED,
    P_NEXT,
    P_PROCESS,
    PHASE_SPAN,
    ROW,
    STATE,
)
from videoflow.engine.endings import (
    Unfinished,
    close_timeout_error,
    doing,
    skip_gap,
    stall_error,
    stalled_after,
    stop_timeout_error,
)
from videoflow.engine.plan import CONSUMER, PRODUCER
from videoflow.engine.ray_streams import Message, Task, control, fetched

if TYPE_CHECKING:
    from videoflow.config import FlowConfig

LOOK_WAIT = 1.0  # seconds a forced ending waits for a producer to say what it is doing
TICK = 0.2  # seconds between the driver's looks at what every task is doing
LOOSE_KEPT = 256  # unfetched results of fire-and-forget calls kept before the done ones go


class Watchdog:
    """Watches the tasks of one flow for its driver thread (and words what they do for
    ``stats()``).

    tasks:  the flow's actors, as the driver tracks them (the watchdog sets what each does).
    flight: the messages in flight of every stream (ray_streams.Streams.flight).
    loose:  the driver's refs whose results nobody fetched yet; the watchdog adds its
            ``look`` calls that did not answer, and fetches the done ones when there are many.
    fail:   records a FlowError and aborts the flow; ``aborted`` is set once it is aborting.
    """

    def __init__(self, tasks: Sequence[Task], config: FlowConfig, realtime: bool,
                 flight: dict[Any, Message], loose: list[Any],
                 fail: Callable[..., None], aborted: threading.Event) -> None:
        self.tasks = tasks
        self.config = config
        self.realtime = realtime
        self.flight = flight
        self.loose = loose
        self.fail = fail
        self.aborted = aborted
        self.looked_at = 0.0  # the driver's last look at the tasks (observe)
        self.moved_at = 0.0  # when a message last moved (stall watchdog)
        self._signature: tuple[Any, ...] = ()

    def begin(self) -> None:
        """The flow runs from now: the clocks of the looks and of the stall start."""
        self.looked_at = self.moved_at = time.monotonic()

    def watch(self, ray: Any, delivered: int, stop_deadline: float | None) -> None:
        """Every ``TICK``: look at what every task is doing; past ``stop_deadline`` (stop() +
        ``stop_timeout``), or with a task stalled for ``stall_timeout``, fail the flow naming
        them (which aborts it). ``delivered``: the messages that came back to the driver."""
        now = time.monotonic()
        if now - self.looked_at < TICK:
            return
        self.observe(ray, now)
        if not self.aborted.is_set():
            self._check_stop(ray, now, stop_deadline)
        if not self.aborted.is_set():
            self._check_stall(ray, now, delivered)

    def observe(self, ray: Any, now: float) -> None:
        """What every task is doing, from the calls in flight: an actor runs its calls in the
        order they were made, so its oldest call that has not returned is the one it runs,
        once that call's arguments are ready (else it waits for them); an actor with no call
        left waits for input, or has closed. A change of what it does restarts its clock.

        A long gap since the last look means this process was not running (Ctrl-Z, a
        debugger): nothing could be seen meanwhile, so that time does not count."""
        self.moved_at += skip_gap(now - self.looked_at, self.tasks)
        self.looked_at = now
        if len(self.loose) > LOOSE_KEPT:  # fire-and-forget calls (ahead, stop): done ones go
            loose = self.loose[:]
            del self.loose[:len(loose)]  # the list is shared: what was added meanwhile stays
            self.loose += fetched(ray, loose, 0)
        refs = [ref for message in self.flight.values() for _, ref, _ in message.calls]
        refs += [t.close_ref for t in self.tasks if t.close_ref is not None and not t.closed]
        ready: set[Any] = set()
        if refs:
            with contextlib.suppress(Exception):
                ready = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
        seen: dict[int, tuple[int, int]] = {}
        for message in self.flight.values():
            first = message.calls[0][0] if message.calls else None
            source = first if first is not None and first.spec.kind == PRODUCER else None
            for task, ref, args in message.calls:
                if id(task) in seen or ref in ready:
                    continue
                if all(arg in ready for arg in args):
                    phase = {PRODUCER: P_NEXT, CONSUMER: P_CONSUME}.get(task.spec.kind, P_PROCESS)
                else:
                    phase = P_BETWEEN  # waiting for the input of that message
                seen[id(task)] = (phase, message.seq)
                task.source = source
        here = _this_ip(ray)
        for task in self.tasks:
            state = seen.get(id(task))
            if state is None and task.close_ref is not None:
                done = task.closed or task.close_ref in ready
                state = (P_ENDED if done else P_CLOSE, -1)
            if state is None:
                state = (P_BETWEEN, -1)
            if state != (task.phase, task.seq):
                task.phase, task.seq = state
                task.since = now
            if task.info is not None and task.info.ip == here and not task.dead:
                stopped = _process_stopped(task.info.pid)
                if stopped and not task.stopped:
                    task.stopped_since = now
                task.stopped = stopped

    def _look(self, ray: Any) -> None:
        """Ask every producer what it is doing and which messages its latest takes got (for
        the words of a forced ending); one that does not answer keeps its previous answer."""
        asked = {control(t, "look").remote(): t for t in self.tasks
                 if t.spec.kind == PRODUCER and not t.dead and t.info is not None}
        if not asked:
            return
        done, _ = ray.wait(list(asked), num_returns=len(asked), timeout=LOOK_WAIT)
        for ref in asked:
            if ref not in done:
                self.loose.append(ref)
                continue
            with contextlib.suppress(Exception):
                asked[ref].looked(ray.get(ref))

    def _index(self, task: Task) -> int:
        """The message index (``meta["index"]``) of the message ``task`` holds: the driver's
        number for it in BATCH; in REALTIME, where the producer drops messages, what its take
        got (-1 when unknown)."""
        if not self.realtime or task.seq < 0:
            return task.seq
        first, indices = task.source.taken if task.source is not None else (0, [])
        at = task.seq - first
        return indices[at] if 0 <= at < len(indices) else -1

    def doing(self, task: Task, now: float) -> str:
        """What ``task`` is doing, in the process engine's words (engine/endings.py). The
        producer says it itself (``look``); the driver knows for the others."""
        look = task.look
        if look is not None and not task.closed:
            row, took, when = look
            phase = row[STATE] % PHASE_SPAN
            return doing(task.spec.kind, row, took + now - when if phase in IN_NODE_CODE
                         else None, task.stopped)
        row = [0] * ROW
        message = self._index(task) if task.phase != P_BETWEEN else -1
        row[STATE] = message * PHASE_SPAN + task.phase
        seconds = now - task.since if task.phase in IN_NODE_CODE else None
        return doing(task.spec.kind, row, seconds, task.stopped)

    @staticmethod
    def doing_s(task: Task, now: float) -> float:
        """For how long ``task`` has been doing what it does (as far as the driver saw)."""
        look = task.look
        if look is not None and not task.closed:
            return look[1] + now - look[2]
        return now - task.since if task.since else 0.0

    def stalled(self, task: Task, now: float, started: bool) -> bool:
        """Its process is stopped, or it has been in its node's code far longer than usual
        (``started``: the flow's clocks have started)."""
        if task.stopped:
            return True
        producer = task.spec.kind == PRODUCER
        if not started or (producer and task.look is None):
            return False
        phase = task.row[STATE] % PHASE_SPAN if producer else task.phase
        return (phase in IN_NODE_CODE
                and self.doing_s(task, now) >= stalled_after(self.config.stall_timeout, task.row))

    def _unfinished(self, ray: Any, now: float) -> list[Unfinished]:
        """The tasks with a call that has not returned (those in their node's code, or
        stopped, first), each with what it is doing."""
        self._look(ray)
        left = [t for t in self.tasks if t.pending and not t.dead]
        left.sort(key=lambda t: not (t.stopped or t.phase in IN_NODE_CODE))
        return [Unfinished(t.spec.name, t.worker, self.doing(t, now)) for t in left]

    def _check_stop(self, ray: Any, now: float, deadline: float | None) -> None:
        """Past ``stop_timeout`` after stop() (``deadline``): fail (and so abort) the flow,
        naming the tasks that had not finished."""
        if deadline is None or now < deadline:
            return
        left = self._unfinished(ray, now)
        if left:
            self.fail(stop_timeout_error(self.config.stop_timeout, self.config.stop_grace,
                                         left))

    def _check_stall(self, ray: Any, now: float, delivered: int) -> None:
        """With stall_timeout: fail the flow when a task has been stuck that long (in its
        node's code, or its process stopped), or when nothing at all moved that long."""
        timeout = self.config.stall_timeout
        if not timeout:
            return
        signature = (delivered, *((t.phase, t.seq, t.stopped) for t in self.tasks))
        if signature != self._signature:
            self._signature, self.moved_at = signature, now
        stuck = [
            t for t in self.tasks if not t.dead and (
                (t.stopped and now - t.stopped_since >= timeout)
                or (t.phase in IN_NODE_CODE and now - t.since >= timeout))
        ]
        if not stuck and now - self.moved_at < timeout:
            return
        left = self._unfinished(ray, now)
        if not left:
            return
        first = None
        if stuck:
            task = min(stuck, key=lambda t: t.stopped_since if t.stopped else t.since)
            first = Unfinished(task.spec.name, task.worker, self.doing(task, now))
            left = [u for u in left if (u.name, u.worker) != (first.name, first.worker)]
        self.fail(stall_error(timeout, first, left))

    def check_closes(self, now: float) -> None:
        """A close() that has not returned ``stop_timeout`` seconds after the task's last call
        fails the flow, naming it; its actor is killed with the others."""
        timeout = self.config.stop_timeout
        for task in self.tasks:
            if (task.phase == P_CLOSE and not task.failed and not task.dead
                    and now - task.since >= timeout):
                self.fail(close_timeout_error(task.spec.name, task.worker, timeout), task)


_here: list[str] = []


def _this_ip(ray: Any) -> str | None:
    """This machine's address in the Ray cluster (several Ray nodes may share a machine)."""
    if not _here:
        with contextlib.suppress(Exception):
            _here.append(ray.util.get_node_ip_address())
    return _here[0] if _here else None


def _process_stopped(pid: int) -> bool:
    """Process ``pid`` of this machine is stopped (SIGSTOP, a debugger)."""
    from videoflow.engine.runner import process_state

    return process_state(pid) in ("T", "t")
