"""The owner of a running flow: starts every task process, watches them, ends them, cleans up.

One monitor thread waits on every task's event pipe and process sentinel at once
(``multiprocessing.connection.wait``), so an error report or a death is seen at once, and looks
at every task's published phase a few times a second. The first failure sets the abort flag,
which every task sees within ``poll_interval``; tasks still alive after ``stop_grace`` are
killed. Every ending is bounded: a stop that has not ended the flow after ``stop_timeout``
becomes an abort, a task that does not exit ``stop_timeout`` after its last message is killed,
and (when ``stall_timeout`` is set) a flow whose messages stop moving fails; each time the
FlowError names the tasks concerned and what they were doing. Whatever the ending, the flow's
queues and shared-memory segments are unlinked by their common name prefix, and its processes
and pipes closed, before ``wait()`` returns.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, ClassVar

from videoflow.config import FlowConfig, available_cpus
from videoflow.engine.bootstrap import (
    check_platform,
    fork_safe,
    forkserver_preload,
    package_copy,
    unpicklable_node,
)
from videoflow.engine.control import (
    ABORT,
    DROPPED,
    GO,
    IN,
    IN_NODE_CODE,
    OUT,
    P_CLOSE,
    P_ENDED,
    P_NEXT,
    ROW,
    STATE,
    STOP,
    ControlLayout,
    StageRows,
    describe_state,
    state_phase,
)
from videoflow.engine.endings import (
    Unfinished,
    close_timeout_error,
    doing,
    not_ended_error,
    skip_gap,
    stall_error,
    stalled_after,
    stop_timeout_error,
)
from videoflow.engine.join_task import JoinTask, JoinWiring
from videoflow.engine.logs import handle_forwarded, level_snapshot
from videoflow.engine.plan import (
    JOIN,
    MERGE,
    PRODUCER,
    Plan,
    Stage,
    StageSpec,
    assign_gpus,
    build_plan,
    visible_gpus,
)
from videoflow.engine.stats import FlowStats
from videoflow.engine.task import STOP_SIGNAL, NodeParcel, TaskSpec, release_queued, task_main
from videoflow.errors import FlowError, UnpicklableNodeError, read_only_write
from videoflow.transport import message
from videoflow.transport.names import (
    claim_prefix,
    flow_pools,
    new_flow_prefix,
    owned_entries,
    queue_name,
    release_prefix,
    sweep_dead_owners,
)
from videoflow.transport.queue import ControlQueue
from videoflow.transport.shm import PoolRegistry, SlotPool

log = logging.getLogger(__name__)
NODE_PACKAGES = ("videoflow.producers", "videoflow.processors", "videoflow.consumers")
TICK = 0.2  # seconds between the monitor's looks at the tasks' phases (it wakes on events too)
SERVER_LOST = 255  # the exit code multiprocessing gives a forkserver task it lost track of
_running: weakref.WeakSet[ProcessEngine] = weakref.WeakSet()
# A forked child has no monitor thread: the flows it inherited are not its to finish at exit.
os.register_at_fork(after_in_child=_running.clear)


def _context(method: str) -> Any:
    ctx = mp.get_context(method)
    if method == "forkserver":
        # Imported once in the server, inherited by every task: cv2 alone costs a task ~0.2 s
        # of CPU, the node packages ~30 ms more. The forkserver skips a module that is missing,
        # and must not load one from another copy than ours (see engine/bootstrap.py).
        ctx.set_forkserver_preload(
            forkserver_preload(
                ["videoflow.engine.task", "videoflow.engine.join_task", "numpy", "cv2",
                 "setproctitle", *NODE_PACKAGES]
            )
        )
    return ctx


def forkserver_pid() -> int | None:
    """The pid of multiprocessing's forkserver in this process, if it runs (a private
    attribute of multiprocessing, read defensively)."""
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    return pid if isinstance(pid, int) else None


def process_state(pid: int) -> str:
    """The kernel's one-letter state of process ``pid`` (R, S, D, T: stopped, t: traced,
    Z: zombie...), or "" when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return ""
    return data.rsplit(b")", 1)[1].split()[0].decode()


def _gone(pid: int) -> bool:
    return process_state(pid) in ("", "Z", "X")


class _TaskHandle:
    """The owner's view of one task: its process, its event pipe, what it reported, and what
    the monitor saw of its published phase."""

    def __init__(
        self, stage: Stage, worker: int, row: int, process: Any, conn: Connection
    ) -> None:
        self.name = stage.spec.name
        self.kind = stage.spec.kind
        self.worker = worker
        self.row = row  # start of its counter row in the control block
        self.process = process
        self.pid: int | None = None
        self.conn: Connection | None = conn
        self.attached = False
        self.ready = False
        self.done = False
        self.failed = False
        self.exited = False  # its sentinel fired
        self.exitcode: int | None = None
        self.killed = False
        self.threads: tuple[str, ...] = ()  # threads that kept its process alive at the end
        self.state: int | None = None  # the STATE counter last seen, since when
        self.since = 0.0
        self.stopped = False  # its process was last seen stopped (SIGSTOP, a debugger)
        self.stopped_since = 0.0  # ... since then
        self.ending_since: float | None = None  # first seen past its last message
        self.signaled: int | None = None  # STATE when STOP_SIGNAL was sent to it

    @property
    def label(self) -> str:
        return f"{self.name!r} (task {self.worker})"


class ProcessEngine:
    """The default engine (``Flow(..., engine="process")``): one OS process per task, frames
    in shared-memory slot pools, one monitor thread in the flow's owner. Implements
    ``videoflow.engine.base.Engine``; an instance runs one flow once."""

    name = "process"

    def __init__(self) -> None:
        self.started_at: float | None = None  # monotonic time every task was ready
        self.ended_at: float | None = None  # monotonic time the last task ended
        self.errors: list[FlowError] = []
        self.pool_slots_in_use: int | None = None
        self.slots_reclaimed = 0
        self._started = False
        self._tasks: list[_TaskHandle] = []
        self._queues: list[ControlQueue] = []
        self._done = threading.Event()
        self._lock = threading.RLock()
        self._aborting = False
        self._kill_at: float | None = None
        self._stop_deadline: float | None = None  # stop() + stop_timeout
        self._moved_at = 0.0  # when a message last moved (stall watchdog)
        self._signature: tuple[Any, ...] = ()
        self._looked_at = time.monotonic()  # the last _observe()
        self._server_pid: int | None = None  # the forkserver the tasks were forked from
        self._server_died = False
        self.control: Any = None  # the control block, made by start() for the plan's tasks
        # Set by start(): the plan, its settings and the flow's name prefix.
        self.config: FlowConfig
        self.realtime: bool
        self.plan: Plan
        self.prefix: str
        self.layout: ControlLayout  # where the flags, counters, rows and JOIN blocks are
        self._joins: JoinWiring
        self._ctx: Any

    def _prepare(self, stages: Sequence[StageSpec], realtime: bool, config: FlowConfig) -> None:
        self.config = config
        self.realtime = realtime
        self.plan = build_plan(stages, config)
        self.prefix = new_flow_prefix()
        self.layout = ControlLayout.of(self.plan)
        self._joins = JoinWiring(self.layout)
        self._ctx = _context(config.start_method)
        self.control = self._ctx.RawArray("q", self.layout.size)

    @property
    def description(self) -> str:
        """The flow in words, for messages: its nodes in chain order and its type."""
        nodes = " -> ".join(s.spec.name for s in self.plan.stages if s.spec.kind != MERGE)
        return f"{'REALTIME' if self.realtime else 'BATCH'} flow {nodes}"

    # -- start -----------------------------------------------------------------------------
    def _node_bytes(self, spec: StageSpec) -> bytes | None:
        if spec.node is None:
            return None
        try:
            return pickle.dumps(spec.node, protocol=5)
        except Exception as exc:
            raise UnpicklableNodeError(unpicklable_node(spec.name, spec.node, exc)) from None

    def start(self, stages: Sequence[StageSpec], realtime: bool, config: FlowConfig) -> None:
        """Build the plan, create the queues and start every task; returns at once."""
        if self._started:
            raise RuntimeError("this engine already ran a flow: an engine runs one flow once")
        self._started = True
        try:
            check_platform()
            self._prepare(stages, realtime, config)
        except BaseException:
            self._done.set()
            raise
        sweep_dead_owners()
        plan, cfg = self.plan, self.config
        node_bytes = {s.index: self._node_bytes(s.spec) for s in plan.stages}
        gpus = assign_gpus(plan, visible_gpus())
        log_levels = level_snapshot()
        environ = dict(os.environ)
        workers = sum(1 for stage, _ in plan.tasks if stage.spec.node is not None)
        opencv_threads = cfg.opencv_threads_per_task(workers, available_cpus())
        if cfg.profile:  # every task writes its profile there: a bad path fails here, at run()
            os.makedirs(cfg.profile, exist_ok=True)
        owner_copy = package_copy()
        claim_prefix(self.prefix)
        try:
            self._queues = [
                ControlQueue(
                    queue_name(self.prefix, link.index), create=True,
                    depth=link.depth(self.realtime, cfg), message_size=cfg.message_size,
                )
                for link in plan.links
            ]
            queue_names = [queue.name for queue in self._queues]
            self._joins.open(self._ctx)
            for stage, worker in plan.tasks:
                inbox, outbox = stage.inbox, stage.outbox
                rows = self.layout.stages[stage.index]
                row = rows.row(worker)
                gpu = gpus.get((stage.index, worker))
                # The node travels once, as bytes, unpickled in the task after its
                # environment is set (CUDA_VISIBLE_DEVICES...): not in the stage as well.
                bare = dataclasses.replace(stage, spec=dataclasses.replace(stage.spec, node=None))
                spec = TaskSpec(
                    stage=bare,
                    worker=worker,
                    node=NodeParcel(node_bytes[stage.index]),
                    realtime=self.realtime,
                    config=cfg,
                    pool_prefix=self.prefix,
                    inbox_queue=self._queues[inbox.index].name if inbox else None,
                    outbox_queue=self._queues[outbox.index].name if outbox else None,
                    row=row,
                    inbox_window_counter=rows.inbox_counter,
                    outbox_window_counter=rows.outbox_counter,
                    gpu=gpu,
                    cpu_fallback=(stage.index, worker) in gpus and gpu is None,
                    log_levels=log_levels,
                    environ=environ,
                    opencv_threads=opencv_threads,
                    owner_pid=os.getpid(),
                    **self._joins.task_fields(stage, queue_names),
                    owner_copy=owner_copy,
                )
                reader, writer = self._ctx.Pipe(duplex=False)
                cls = JoinTask if stage.spec.kind == JOIN else None
                process = self._ctx.Process(
                    target=task_main,
                    args=(spec, writer, self.control, cls),
                    name=f"videoflow:{stage.spec.name}[{worker}]",
                    daemon=True,
                )
                task = _TaskHandle(stage, worker, row, process, reader)
                self._tasks.append(task)
                try:
                    with fork_safe(cfg.start_method):
                        process.start()
                finally:
                    writer.close()
                task.pid = process.pid
                if cfg.start_method == "forkserver" and self._server_pid is None:
                    self._server_pid = forkserver_pid()
        except BaseException:
            self._abort_now()
            self._close_tasks()
            self._cleanup()
            self._done.set()
            raise
        _running.add(self)
        threading.Thread(target=self._monitor, name="videoflow-monitor", daemon=True).start()

    # -- control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Graceful stop: the producer stops (interrupted if it waits in next()) and what it
        produced drains; after ``stop_timeout`` the stop becomes an abort."""
        if self.control is None or self._done.is_set():
            return
        with self._lock:
            if self._stop_deadline is None:
                self._stop_deadline = time.monotonic() + self.config.stop_timeout
            self.control[STOP] = 1

    def abort(self) -> None:
        """Immediate stop: tasks leave at their next check; stragglers are killed."""
        if self.control is None:
            return
        with self._lock:
            if not self._aborting:
                self._aborting = True
                self._kill_at = time.monotonic() + self.config.stop_grace
            self.control[ABORT] = 1

    def kill(self) -> None:
        """Kill every task now (second Ctrl-C)."""
        self.abort()
        self._kill_at = time.monotonic()
        self._abort_now()

    def _abort_now(self) -> None:
        if self.control is not None:
            self.control[ABORT] = 1
        for task in list(self._tasks):
            self._kill(task)

    def _kill(self, task: _TaskHandle) -> None:
        with self._lock:
            if task.process is not None and task.process.is_alive():
                task.process.kill()
                task.killed = True

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return self._started and not self._done.is_set()

    # -- what the tasks are doing ------------------------------------------------------------
    def _row(self, task: _TaskHandle) -> list[int]:
        return self.control[task.row : task.row + ROW]

    def _observe(self, now: float) -> None:
        """Note every change of a task's published phase, and whether its process is stopped.

        A long gap since the last look means this process was not running (Ctrl-Z, a debugger):
        nothing could be seen meanwhile, so that time does not count towards a stall."""
        with self._lock:
            self._moved_at += skip_gap(now - self._looked_at, self._tasks)
            self._looked_at = now
            for task in self._tasks:
                state = self.control[task.row + STATE]
                if state != task.state:
                    task.state, task.since = state, now
                if not task.exited and task.pid is not None:
                    stopped = process_state(task.pid) in ("T", "t")
                    if stopped and not task.stopped:
                        task.stopped_since = now
                    task.stopped = stopped

    def _in_node_code(self, task: _TaskHandle) -> bool:
        return state_phase(self.control[task.row + STATE])[0] in IN_NODE_CODE

    def _stalled(self, task: _TaskHandle, row: Sequence[int], now: float) -> bool:
        """Its process is stopped, or it has been in its node's code far longer than usual."""
        if task.stopped:
            return True
        if not self._in_node_code(task) or task.state != row[STATE]:
            return False
        return now - task.since >= stalled_after(self.config.stall_timeout, row)

    def _doing(self, task: _TaskHandle, now: float | None) -> str:
        """What ``task`` is doing, in words, with how long (unless ``now`` is None) and why
        it may not move."""
        seconds = None
        if now is not None and self._in_node_code(task) and task.state is not None:
            seconds = now - task.since
        return doing(task.kind, self._row(task), seconds, task.stopped, task.threads)

    def _unfinished(self) -> list[_TaskHandle]:
        """Tasks whose process has not exited, those that hold the flow up first."""
        left = [t for t in self._tasks if not t.exited]
        return sorted(left, key=lambda t: not (t.stopped or self._in_node_code(t)))

    def _listing(self, tasks: list[_TaskHandle], now: float) -> list[Unfinished]:
        return [Unfinished(t.name, t.worker, self._doing(t, now)) for t in tasks]

    # -- monitor ---------------------------------------------------------------------------
    def _fail(self, err: FlowError) -> None:
        self.errors.append(err)
        self.abort()

    # One handler per event kind (transport/message.py lists the kinds and their fields);
    # a new kind is one more method and one more row in _EVENTS.
    def _on_log(self, task: _TaskHandle, record: dict[str, Any]) -> None:
        handle_forwarded(record)

    def _on_attached(self, task: _TaskHandle) -> None:
        task.attached = True

    def _on_ready(self, task: _TaskHandle) -> None:
        task.ready = True

    def _on_done(self, task: _TaskHandle) -> None:
        task.done = True

    def _on_threads(self, task: _TaskHandle, names: Sequence[str]) -> None:
        task.threads = tuple(names)

    def _on_refused(self, task: _TaskHandle, text: str) -> None:
        task.failed = True  # the task cannot run this flow (engine/bootstrap.py); text says why
        self._fail(FlowError(text, node=task.name, task=task.worker))

    def _on_error(
        self, task: _TaskHandle, phase: str, type_name: str, text: str, tb: str
    ) -> None:
        task.failed = True
        if phase == "load":
            what = f"could not be unpickled in its task process: {type_name}: {text}"
        else:
            where = {"start": " at start", "join": " while pairing its inputs"}.get(
                phase, f" in {phase}()"
            )
            what = f"raised {type_name}{where}: {text}"
            hint = read_only_write(text)
            if hint is not None:
                what = f"wrote into a read-only array{where}: {hint}"
        self._fail(
            FlowError(
                f"node {task.name!r} (task {task.worker}) {what}",
                node=task.name, task=task.worker, remote_traceback=tb,
            )
        )

    _EVENTS: ClassVar[dict[str, Callable[..., None]]] = {
        message.LOG: _on_log,
        message.ATTACHED: _on_attached,
        message.READY: _on_ready,
        message.DONE: _on_done,
        message.THREADS: _on_threads,
        message.REFUSED: _on_refused,
        message.ERROR: _on_error,
        message.THREADS: _on_threads,
    }

    def _on_event(self, task: _TaskHandle, event: message.Event) -> None:
        handler = self._EVENTS.get(message.event_kind(event))
        if handler is None:  # a task of another videoflow version: say so, do not stop
            log.warning("task %s[%d] sent an unknown event %r", task.name, task.worker, event)
            return
        handler(self, task, *message.event_fields(event))

    def _on_exit(self, task: _TaskHandle) -> None:
        code = task.exitcode
        if task.failed or task.done or self._aborting:
            return
        if self._server_pid is not None and code == SERVER_LOST and self._server_gone():
            self._server_died = True
            self._fail(
                FlowError(
                    f"the forkserver process (pid {self._server_pid}) died: it is the parent "
                    "of every task of the flow, which were lost with it; no node is to blame "
                    "(was it killed? the next flow starts a new one)",
                    node="<forkserver>", exitcode=code,
                )
            )
            return
        if code is not None and code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited unexpectedly with code {code}"
        doing = describe_state(task.kind, self._row(task))
        self._fail(
            FlowError(
                f"task {task.worker} of node {task.name!r} {how} ({doing})",
                node=task.name, task=task.worker, exitcode=code,
            )
        )

    def _server_gone(self) -> bool:
        """Whether the forkserver died. Its tasks' sentinels close as it exits, a moment
        before the kernel shows it as a zombie: give it that moment."""
        assert self._server_pid is not None
        deadline = time.monotonic() + 1.0
        while not _gone(self._server_pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _monitor(self) -> None:
        try:
            self._watch()
        except BaseException as exc:  # never leave join() waiting on a dead monitor
            log.exception("videoflow monitor failed")
            self.errors.append(FlowError(f"flow monitor failed: {exc}", node="<engine>"))
            self._abort_now()
        finally:
            self.ended_at = time.monotonic()
            try:
                self._close_tasks()
                self._cleanup()
                # The final counters, as a plain list: the shared control block goes back to
                # multiprocessing's heap now, not when the gc finds the flow.
                self.control = list(self.control)
            finally:
                _running.discard(self)
                self._done.set()

    def _read(self, conns: dict[Any, _TaskHandle], conn: Any) -> None:
        task = conns[conn]
        try:
            event = conn.recv()
        except (EOFError, OSError):
            del conns[conn]
            return
        self._on_event(task, event)

    def _watch(self) -> None:
        start_deadline = time.monotonic() + self.config.start_timeout
        queues_unlinked = False
        alive = {t.process.sentinel: t for t in self._tasks}
        conns: dict[Any, _TaskHandle] = {t.conn: t for t in self._tasks}
        while alive:
            ready = wait([*alive, *conns], timeout=TICK)
            for obj in ready:
                if obj in conns:
                    self._read(conns, obj)
            for obj in ready:
                if obj in alive:
                    task = alive.pop(obj)
                    task.process.join(timeout=1)
                    task.exitcode = task.process.exitcode
                    task.exited = True
                    conn = task.conn
                    while conn is not None and conn in conns and conn.poll():  # last events first
                        self._read(conns, conn)
                    conns.pop(conn, None)
                    self._on_exit(task)
            now = time.monotonic()
            self._observe(now)
            if not queues_unlinked and all(t.attached for t in self._tasks):
                for queue in self._queues:
                    queue.unlink()
                queues_unlinked = True
            if not self.control[GO] and all(t.ready for t in self._tasks):
                self.started_at = now
                self._moved_at = now
                self.control[GO] = 1
            if not self.control[GO] and now > start_deadline and not self._aborting:
                slow = next(t for t in self._tasks if not t.ready)
                self._fail(
                    FlowError(
                        f"node {slow.name!r} (task {slow.worker}) did not open within "
                        f"{self.config.start_timeout:g} s ({self._doing(slow, now)})",
                        node=slow.name, task=slow.worker,
                    )
                )
            if not self._aborting:
                self._check_stop(now)
            if not self._aborting:
                self._check_endings(now)
            if not self._aborting:
                self._check_stall(now)
            if self._kill_at is not None and now >= self._kill_at:
                for task in alive.values():
                    self._kill(task)

    def _check_stop(self, now: float) -> None:
        """After stop(): interrupt producers that wait in next(); past stop_timeout, abort."""
        deadline = self._stop_deadline
        if deadline is None:
            return
        for producer in self._tasks:
            if producer.kind != PRODUCER:
                continue
            state = self.control[producer.row + STATE]
            if (
                not producer.exited and producer.pid is not None and producer.signaled != state
                and state_phase(state)[0] == P_NEXT
            ):
                producer.signaled = state
                with contextlib.suppress(OSError):
                    os.kill(producer.pid, STOP_SIGNAL)
        if now < deadline:
            return
        left = self._unfinished()
        if left:
            cfg, listing = self.config, self._listing(left, now)
            self._fail(stop_timeout_error(cfg.stop_timeout, cfg.stop_grace, listing))

    def _check_endings(self, now: float) -> None:
        """A task past its last message (in close(), or ended) must exit within stop_timeout;
        one that does not is killed and named, with the threads that kept it alive."""
        timeout = self.config.stop_timeout
        for task in self._tasks:
            if task.exited or task.failed:
                continue
            phase = state_phase(self.control[task.row + STATE])[0]
            if not (task.done or phase in (P_CLOSE, P_ENDED)):
                continue
            if task.ending_since is None:
                task.ending_since = now
                continue
            if now - task.ending_since < timeout:
                continue
            if phase == P_CLOSE and not task.done:
                error = close_timeout_error(task.name, task.worker, timeout)
            else:
                fix = (
                    f"threads kept it alive: {', '.join(task.threads)}; make them daemon "
                    "threads, or stop and join them in close()"
                    if task.threads else "something in it kept it from exiting"
                )
                error = not_ended_error(
                    f"the process of node {task.name!r} (task {task.worker}) did not exit", fix,
                    task.name, task.worker, timeout,
                )
            task.failed = True
            self._fail(error)
            self._kill(task)

    def _stuck(self, task: _TaskHandle, now: float, timeout: float) -> bool:
        """Its process has been stopped, or it has been in one call of its node's code, for
        ``timeout`` seconds at least."""
        if task.exited or task.state is None:
            return False
        if task.stopped and now - task.stopped_since >= timeout:
            return True
        return self._in_node_code(task) and now - task.since >= timeout

    def _check_stall(self, now: float) -> None:
        """With stall_timeout: fail the flow when a task has been stuck that long (in its
        node's code, or its process stopped), or when nothing at all moved that long."""
        timeout = self.config.stall_timeout
        if not timeout or not self.control[GO]:
            return
        signature = tuple(
            (*(self.control[t.row + i] for i in (IN, OUT, DROPPED, STATE)), t.exited)
            for t in self._tasks
        )
        if signature != self._signature:
            self._signature, self._moved_at = signature, now
        stuck = [t for t in self._tasks if self._stuck(t, now, timeout)]
        if not stuck and now - self._moved_at < timeout:
            return
        left = self._unfinished()
        if not left:
            return
        listing = self._listing(left, now)
        first = None
        if stuck:  # (a realtime flow drops around a stuck task: its counters still move)
            task = min(stuck, key=lambda t: t.stopped_since if t.stopped else t.since)
            first = listing[left.index(task)]
        self._fail(stall_error(timeout, first, listing))

    def _close_tasks(self) -> None:
        """Once the tasks have ended: reap and close every process and pipe of the flow, so
        that a finished flow holds no descriptor (not even until the garbage collector runs)."""
        if self._server_died:  # orphans of the forkserver: they leave on their own, or die
            deadline = time.monotonic() + self.config.stop_grace
            pids = [t.pid for t in self._tasks if t.pid is not None]
            while any(not _gone(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.02)
            for pid in pids:
                if not _gone(pid):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        for task in self._tasks:
            with self._lock:  # from here on, _kill() leaves this task to this loop
                process, task.process = task.process, None  # its arguments hold the node
            if process is not None:
                if process.is_alive():
                    process.join(timeout=5)
                if process.is_alive():
                    process.kill()
                    process.join(timeout=5)
                if task.exitcode is None:
                    task.exitcode = process.exitcode
                task.exited = True
                with contextlib.suppress(ValueError):  # still alive after a kill: leave it
                    process.close()
            if task.conn is not None:
                task.conn.close()
                task.conn = None

    def _cleanup(self) -> None:
        registry = PoolRegistry()
        for queue in self._queues:
            try:  # an abort leaves messages in the queues: give their slots back
                release_queued(queue, registry)
            except Exception:
                log.exception("could not release the slots of the messages left in a queue")
            queue.unlink()
            queue.close()
        del registry
        if any(state_phase(self.control[t.row + STATE])[0] != P_ENDED for t in self._tasks):
            # A task that died (a signal, os._exit) could not give back the slots it held;
            # every task has ended, so no one can reach them any more: the owner releases
            # them, and counts them apart.
            self.slots_reclaimed = self._reclaim_pools()
        self.pool_slots_in_use = sum(self._pool_occupancy().values())
        release_prefix(self.prefix)
        self._joins.close()
        killed = [t.label for t in self._tasks if t.killed and not t.failed]
        if killed and not self.errors:
            log.warning("videoflow: killed %s, still running %g s after the abort",
                        ", ".join(killed), self.config.stop_grace)

    # -- statistics ------------------------------------------------------------------------
    def _reclaim_pools(self) -> int:
        reclaimed = 0
        for pool in flow_pools(self.prefix):
            with contextlib.suppress(Exception):
                reclaimed += SlotPool.attach(pool.entry).reclaim()
        return reclaimed

    def _pool_occupancy(self) -> dict[tuple[int, int], int]:
        """Slots in use now, per task (stage index, worker) that has pools (pools are read by
        name, never kept open)."""
        in_use: dict[tuple[int, int], int] = {}
        for pool in flow_pools(self.prefix):
            try:
                used = SlotPool.attach(pool.entry).occupancy()
            except Exception:
                continue
            task = (pool.stage or 0, pool.worker or 0)
            in_use[task] = in_use.get(task, 0) + used
        return in_use

    def _queued(self, index: int) -> int | None:
        if self._done.is_set():
            return None
        try:
            return len(self._queues[index])
        except Exception:  # closed by the cleanup meanwhile
            return None

    def stats(self) -> FlowStats:
        """A snapshot of the counters; reads the control block, queues and pools, no task."""
        if self.control is None:
            raise RuntimeError("the engine has not started a flow: no statistics yet")
        running = self.running
        rows = list(self.control)
        now = time.monotonic()
        if running:
            self._observe(now)
        started, ended = self.started_at, self.ended_at
        seen = now if ended is None else ended
        elapsed = 0.0 if started is None else max(0.0, seen - started)
        slots = self._pool_occupancy() if running else {}
        failed: dict[tuple[str, int], int] = {}
        for err in list(self.errors):
            failed[(err.node, err.task)] = failed.get((err.node, err.task), 0) + 1
        handles = self._tasks

        def doing(stage: StageRows, worker: int, row: Sequence[int]) -> tuple[str, float, bool]:
            i = stage.first + worker
            task = handles[i] if i < len(handles) else None  # none: its start failed
            if task is None:
                return describe_state(stage.spec.kind, row), 0.0, False
            return (
                self._doing(task, None),
                seen - task.since if task.state else 0.0,
                self._stalled(task, row, seen),
            )

        def queued(stage: StageRows) -> int | None:
            inbox = self.plan.stages[stage.index].inbox
            return self._queued(inbox.index) if inbox else None

        return FlowStats.from_block(
            rows, self.layout, running=running, elapsed_s=elapsed, errors=failed, slots=slots,
            doing=doing, inbox_queued=queued, pool_slots_in_use=self.pool_slots_in_use,
            slots_reclaimed=self.slots_reclaimed,
        )

    # -- interpreter exit --------------------------------------------------------------------
    def finish_at_exit(self) -> None:
        """At interpreter exit, with the flow still running: a BATCH flow is waited for, so
        that everything its producer makes is delivered (as concurrent.futures waits for its
        work); a REALTIME flow is stopped gracefully. A warning names the flow either way.
        Ctrl-C while waiting stops it, a second Ctrl-C kills it."""
        if self._done.is_set():
            return
        if self.realtime:
            log.warning("videoflow: the %s was still running at interpreter exit: stopping it "
                        "(call flow.join() before the end of the script)", self.description)
            self.stop()
        else:
            log.warning("videoflow: the %s was still running at interpreter exit: waiting "
                        "for it to deliver everything (call flow.join() before the end of the "
                        "script; Ctrl-C stops it)", self.description)
        interrupted = False
        while True:
            try:
                if self._done.wait(0.1):
                    break
            except KeyboardInterrupt:
                if interrupted:
                    self.kill()
                    self._done.wait(self.config.stop_grace + 5)
                    break
                interrupted = True
                self.stop()
        if self.errors:  # no join() will raise it: say it here
            log.error("videoflow: the %s failed at interpreter exit: %s", self.description,
                      self.errors[0])


def leftovers(pid: int | None = None, seconds: float = 5.0) -> tuple[list[str], list[Any]]:
    """What the flows run by ``pid`` (default: this process) left behind: its "vf." segments
    and queues, and this process's live children, after waiting up to ``seconds`` for them to
    go. Both lists are empty after any clean ending; tests and benchmarks assert it."""
    deadline = time.monotonic() + seconds
    while True:
        entries, children = owned_entries(pid), mp.active_children()
        if (not entries and not children) or time.monotonic() > deadline:
            return entries, children
        time.sleep(0.05)


@atexit.register
def _finish_running() -> None:
    """At interpreter exit, finish the flows still running (engine.finish_at_exit)."""
    for engine in list(_running):
        engine.finish_at_exit()
