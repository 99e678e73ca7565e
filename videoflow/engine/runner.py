"""The owner of a running flow: starts every task process, watches them, ends them, cleans up.

One monitor thread waits on every task's event pipe and process sentinel at once
(``multiprocessing.connection.wait``), so an error report or a death is seen at once. The first
failure sets the abort flag, which every task sees within ``poll_interval``; tasks still alive
after ``stop_grace`` are killed. Whatever the ending, the flow's queues and shared-memory
segments are unlinked by their common name prefix before ``wait()`` returns.
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
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from videoflow.config import FlowConfig
from videoflow.engine.bootstrap import (
    check_platform,
    forkserver_preload,
    package_copy,
    unpicklable_node,
)
from videoflow.engine.logs import handle_forwarded, level_snapshot
from videoflow.engine.plan import (
    MERGE,
    PROCESSOR,
    Plan,
    StageSpec,
    assign_gpus,
    build_plan,
    visible_gpus,
)
from videoflow.engine.report import available_cpus
from videoflow.engine.stats import (
    ABORT,
    FLAGS,
    GO,
    ROW,
    STOP,
    FlowStats,
    NodeStats,
    node_stats,
    task_stats,
)
from videoflow.engine.task import TaskSpec, release_queued, task_main
from videoflow.errors import FlowError, UnpicklableNodeError, read_only_write
from videoflow.transport.names import (
    claim_prefix,
    list_entries,
    new_flow_prefix,
    owned_entries,
    release_prefix,
    sweep_dead_owners,
)
from videoflow.transport.queue import ControlQueue
from videoflow.transport.shm import PoolRegistry, SlotPool

log = logging.getLogger(__name__)
NODE_PACKAGES = ("videoflow.producers", "videoflow.processors", "videoflow.consumers")
_running: weakref.WeakSet[ProcessEngine] = weakref.WeakSet()


def _context(method: str) -> Any:
    ctx = mp.get_context(method)
    if method == "forkserver":
        # Imported once in the server, inherited by every task: cv2 alone costs a task ~0.2 s
        # of CPU, the node packages ~30 ms more. The forkserver skips a module that is missing,
        # and must not load one from another copy than ours (see engine/bootstrap.py).
        ctx.set_forkserver_preload(
            forkserver_preload(
                ["videoflow.engine.task", "numpy", "cv2", "setproctitle", *NODE_PACKAGES]
            )
        )
    return ctx


class _TaskHandle:
    def __init__(self, stage_name: str, worker: int, process: Any, conn: Connection) -> None:
        self.name = stage_name
        self.worker = worker
        self.process = process
        self.conn: Connection | None = conn
        self.attached = False
        self.ready = False
        self.done = False
        self.failed = False


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
        self._lock = threading.Lock()
        self._aborting = False
        self._kill_at: float | None = None
        self.control: Any = None  # the control block, made by start() for the plan's tasks
        # Set by start(): the plan, its settings and the flow's name prefix.
        self.config: FlowConfig
        self.realtime: bool
        self.plan: Plan
        self.prefix: str
        self._rows_at: int
        self._ctx: Any

    def _prepare(self, stages: Sequence[StageSpec], realtime: bool, config: FlowConfig) -> None:
        self.config = config
        self.realtime = realtime
        self.plan = build_plan(stages, config)
        self.prefix = new_flow_prefix()
        ntasks = len(self.plan.tasks)
        counters = sum(1 for link in self.plan.links if link.window)
        self._rows_at = FLAGS + counters
        self._ctx = _context(config.start_method)
        self.control = self._ctx.RawArray("q", self._rows_at + ROW * ntasks)

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
        # The node travels as node_bytes alone, unpickled inside the task's error handling: a
        # node class the task cannot import is then a FlowError "at load", not a dead process.
        bare = {
            s.index: dataclasses.replace(s, spec=dataclasses.replace(s.spec, node=None))
            for s in plan.stages
        }
        gpus = assign_gpus(plan, visible_gpus())
        log_levels = level_snapshot()
        environ = dict(os.environ)
        workers = sum(1 for stage, _ in plan.tasks if stage.spec.node is not None)
        opencv_threads = cfg.opencv_threads_per_task(workers, available_cpus())
        owner_copy = package_copy()
        claim_prefix(self.prefix)
        try:
            self._queues = [
                ControlQueue(
                    f"{self.prefix}.q{link.index}", create=True,
                    depth=cfg.queue_depth, message_size=cfg.message_size,
                )
                for link in plan.links
            ]
            row = self._rows_at
            for stage, worker in plan.tasks:
                inbox, outbox = stage.inbox, stage.outbox
                merge_counter = window_counter = -1
                if inbox is not None and inbox.senders > 1:
                    merge_counter = FLAGS + plan.links[inbox.index - 1].counter
                if outbox is not None and outbox.window:
                    window_counter = FLAGS + outbox.counter
                gpu = gpus.get((stage.index, worker))
                spec = TaskSpec(
                    stage=bare[stage.index],
                    worker=worker,
                    node_bytes=node_bytes[stage.index],
                    realtime=self.realtime,
                    config=cfg,
                    pool_prefix=self.prefix,
                    inbox_queue=self._queues[inbox.index].name if inbox else None,
                    outbox_queue=self._queues[outbox.index].name if outbox else None,
                    row=row,
                    inbox_window_counter=merge_counter,
                    outbox_window_counter=window_counter,
                    gpu=gpu,
                    cpu_fallback=(stage.index, worker) in gpus and gpu is None,
                    log_levels=log_levels,
                    environ=environ,
                    opencv_threads=opencv_threads,
                    owner_pid=os.getpid(),
                    owner_copy=owner_copy,
                )
                row += ROW
                reader, writer = self._ctx.Pipe(duplex=False)
                process = self._ctx.Process(
                    target=task_main,
                    args=(spec, writer, self.control),
                    name=f"videoflow:{stage.spec.name}[{worker}]",
                    daemon=True,
                )
                self._tasks.append(_TaskHandle(stage.spec.name, worker, process, reader))
                process.start()
                writer.close()
        except BaseException:
            self._abort_now()
            self._cleanup()
            self._done.set()
            raise
        _running.add(self)
        threading.Thread(target=self._monitor, name="videoflow-monitor", daemon=True).start()

    # -- control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Graceful stop: the producer stops and everything already produced drains."""
        if self.control is not None:
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
        for task in self._tasks:
            if task.process.is_alive():
                task.process.kill()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return self._started and not self._done.is_set()

    # -- monitor ---------------------------------------------------------------------------
    def _fail(self, err: FlowError) -> None:
        self.errors.append(err)
        self.abort()

    def _on_event(self, task: _TaskHandle, event: tuple[Any, ...]) -> None:
        what = event[0]
        if what == "log":
            handle_forwarded(event[1])
        elif what == "attached":
            task.attached = True
        elif what == "ready":
            task.ready = True
        elif what == "done":
            task.done = True
        elif what == "refused":  # the task cannot run this flow; the text says why
            task.failed = True
            self._fail(FlowError(event[1], node=task.name, task=task.worker))
        elif what == "error":
            _, phase, type_name, message, tb = event
            task.failed = True
            where = f" in {phase}()" if phase not in ("start", "load") else f" at {phase}"
            what = f"raised {type_name}{where}: {message}"
            hint = read_only_write(message)
            if hint is not None:
                what = f"wrote into a read-only array{where}: {hint}"
            self._fail(
                FlowError(
                    f"node {task.name!r} (task {task.worker}) {what}",
                    node=task.name, task=task.worker, remote_traceback=tb,
                )
            )

    def _on_exit(self, task: _TaskHandle) -> None:
        code = task.process.exitcode
        if task.failed or task.done or self._aborting:
            return
        if code is not None and code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited unexpectedly with code {code}"
        self._fail(
            FlowError(
                f"task {task.worker} of node {task.name!r} {how}",
                node=task.name, task=task.worker, exitcode=code,
            )
        )

    def _monitor(self) -> None:
        try:
            self._watch()
        except BaseException as exc:  # never leave join() waiting on a dead monitor
            log.exception("videoflow monitor failed")
            self.errors.append(FlowError(f"flow monitor failed: {exc}", node="<engine>"))
            self._abort_now()
        finally:
            self.ended_at = time.monotonic()
            for task in self._tasks:
                task.process.join(timeout=5)
            self._cleanup()
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
            ready = wait([*alive, *conns], timeout=0.2)
            for obj in ready:
                if obj in conns:
                    self._read(conns, obj)
            for obj in ready:
                if obj in alive:
                    task = alive.pop(obj)
                    task.process.join(timeout=1)
                    conn = task.conn
                    while conn is not None and conn in conns and conn.poll():  # last events first
                        self._read(conns, conn)
                    conns.pop(conn, None)
                    self._on_exit(task)
            if not queues_unlinked and all(t.attached for t in self._tasks):
                for queue in self._queues:
                    queue.unlink()
                queues_unlinked = True
            if not self.control[GO] and all(t.ready for t in self._tasks):
                self.started_at = time.monotonic()
                self.control[GO] = 1
            if not self.control[GO] and time.monotonic() > start_deadline and not self._aborting:
                slow = next(t for t in self._tasks if not t.ready)
                self._fail(
                    FlowError(
                        f"node {slow.name!r} (task {slow.worker}) did not open within "
                        f"{self.config.start_timeout:g} s",
                        node=slow.name, task=slow.worker,
                    )
                )
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                for task in alive.values():
                    if task.process.is_alive():
                        task.process.kill()

    def _cleanup(self) -> None:
        registry = PoolRegistry()
        for queue in self._queues:
            try:  # an abort leaves messages in the queues: give their slots back
                release_queued(queue, registry)
            except Exception:
                log.exception("could not release the slots of the messages left in a queue")
            queue.unlink()
            queue.close()
        if any(t.process.exitcode for t in self._tasks):
            # A killed task cannot give back the slots it held; every task has ended, so no
            # one can reach them any more: the owner releases them, and counts them apart.
            self.slots_reclaimed = self._reclaim_pools()
        self.pool_slots_in_use = sum(self._pool_occupancy().values())
        release_prefix(self.prefix)
        for task in self._tasks:
            if task.conn is not None:
                task.conn.close()

    # -- statistics ------------------------------------------------------------------------
    def _reclaim_pools(self) -> int:
        reclaimed = 0
        for name in list_entries(self.prefix):
            with contextlib.suppress(Exception):
                reclaimed += SlotPool.attach(name).reclaim()
        return reclaimed

    def _pool_occupancy(self) -> dict[str, int]:
        """Slots in use now, per pool of this flow (pools are read by name, never kept open)."""
        in_use: dict[str, int] = {}
        for name in list_entries(self.prefix):
            try:
                in_use[name] = SlotPool.attach(name).occupancy()
            except Exception:
                continue
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
        started, ended = self.started_at, self.ended_at
        elapsed = 0.0 if started is None else max(0.0, (ended or now) - started)
        slots: dict[str, int] = {}
        pools = self._pool_occupancy() if running else {}
        cut = len(self.prefix) + 1
        for name, used in pools.items():
            owner = name[cut:].split(".", 1)[0]  # "<stage>-<worker>"
            slots[owner] = slots.get(owner, 0) + used
        failed: dict[tuple[str, int], int] = {}
        for err in list(self.errors):
            failed[(err.node, err.task)] = failed.get((err.node, err.task), 0) + 1
        nodes: list[NodeStats] = []
        dropped = 0
        at = self._rows_at
        for stage in self.plan.stages:
            spec = stage.spec
            tasks = []
            for worker in range(spec.nb_tasks):
                tasks.append(
                    task_stats(
                        spec.name, worker, rows[at : at + ROW],
                        errors=failed.get((spec.name, worker), 0),
                        slots_in_use=slots.get(f"{stage.index}-{worker}") if running else None,
                        elapsed_s=elapsed,
                    )
                )
                at += ROW
            dropped += sum(t.dropped for t in tasks)
            if spec.kind != MERGE:
                nodes.append(
                    node_stats(
                        spec.name, spec.kind, tasks,
                        inbox_queued=self._queued(stage.inbox.index) if stage.inbox else None,
                        one_task=spec.kind != PROCESSOR or spec.one_task,
                        elapsed_s=elapsed,
                    )
                )
        return FlowStats(
            nodes=tuple(nodes),
            produced=nodes[0].messages_in,
            delivered=nodes[-1].messages_in,
            dropped=dropped,
            running=running,
            pool_slots_in_use=self.pool_slots_in_use,
            slots_reclaimed=self.slots_reclaimed,
            errors=sum(failed.values()),
            elapsed_s=elapsed,
        )


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
def _shutdown_running() -> None:
    """At interpreter exit, tear down flows still running (their tasks are daemons anyway)."""
    for engine in list(_running):
        engine.abort()
        if not engine.wait(engine.config.stop_grace + 2):
            engine.kill()
            engine.wait(5)
