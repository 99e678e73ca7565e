"""The Ray engine: the same Flow on a Ray cluster, one actor per task, the owner as the driver.

Every task of the flow (a node with nb_tasks = K has K) is a classic Ray actor. One thread of
the flow's owner, the driver, is the only submitter: for message ``seq`` it calls ``take`` on
the producer actor, then ``call`` on actor ``seq % K`` of every later stage. Every call returns
one (metadata, output) pair, and a stage gets the ref of the previous stage's pair (the
metadata it carries on) and of its other parents'. A Ray actor runs the calls of one submitter
in submission order, and each message's calls are chained by refs, so every stage sees the
messages in order whatever K is and however long each call takes: no reorder buffer is needed,
and the last stage's results complete in order.

Several producers: the driver runs the plan's segments (engine/plan.py), one stream per
producer and one per JOIN, and every JOIN with the plan's ``Aligner`` (engine/align.py) on the
metadata of its inputs' messages, which the last stage of each such stream returns as an object
of its own; a set goes on as one more message of the JOIN's stream (``Streams.pair``, and
docs/architecture.md for why the driver and not an actor). A node that skips when busy learns
from the driver which later calls wait for it (``ahead``, REALTIME).

At most ``window`` messages are in flight per stream: the driver waits for the oldest before
it submits another, so the object store holds a bounded number of frames. A producer calls
``next()`` in a thread of its own: one value per take waiting in BATCH, so it runs at most a
window ahead and nothing is dropped; in REALTIME as fast as the source gives values, keeping
only the newest value not yet taken and counting the ones it replaced as dropped: a flow that
cannot keep up skips frames instead of queueing them, and ``produced == delivered + dropped``
holds.

``stop()`` stops the producer, interrupting a ``next()`` in progress (StopRequested raised in
the producer's thread, as the process engine's STOP_SIGNAL does); what it produced drains,
every actor closes its node and is then killed. Every ending is bounded as on the process
engine: a stop that has not ended the flow after ``stop_timeout``, a ``close()`` that has not
returned ``stop_timeout`` after the last call, and (with ``stall_timeout``) a task stuck in
one call fail the flow with a FlowError naming each task concerned and what it was doing, in
the words of engine/endings.py. The driver knows what each actor is doing from the calls it
has in flight (``Watchdog.observe``): an actor runs its calls in order, so its oldest call that has
not returned is the one it runs once that call's arguments are ready. Whatever the ending,
the driver fetches every result it has not (``_settle``), so Ray logs no "Unhandled error".

A node raising travels as a marker in place of the message's metadata and ends the flow with
a FlowError naming the node, with the traceback from the actor. A dead actor ends it likewise,
unless ``max_restarts`` was given: then Ray restarts a processor's actor (its node is opened
again) and retries the calls it had, and the chain of refs still delivers every message
exactly once and in order. Producers and consumers are never restarted: their side effects
(frames read from a camera, lines written to a file) cannot be replayed exactly once.

This module owns the engine (the Engine protocol), the start (connecting, the actors), the
driver loop and the endings (closes, kills, results nobody fetched) and the counters. What the
driver tracks, and its streams and JOINs (building, submitting, pairing), are in
engine/ray_streams.py; the watchdog (what every task is doing, endings that take too long) in
engine/ray_watch.py; the actor's side in engine/ray_actor.py.

``import ray`` happens in ``start()``: importing videoflow never imports Ray (nor do
ray_streams.py and ray_watch.py, which get the module from the driver).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import importlib.util
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from videoflow.config import DROP_NEWEST
from videoflow.engine.control import IN, P_ENDED, ControlLayout, StageRows
from videoflow.engine.plan import GPU, PROCESSOR, PRODUCER, Plan, StageSpec, build_plan
from videoflow.engine.ray_streams import (
    END,
    Streams,
    Task,
    control,
    default_window,
    failure_error,
    fetched,
)
from videoflow.engine.ray_watch import Watchdog
from videoflow.engine.stats import FlowStats
from videoflow.errors import FlowError

if TYPE_CHECKING:
    from videoflow.config import FlowConfig

log = logging.getLogger(__name__)

INSTALL_HINT = 'the Ray engine needs Ray, which is not installed: pip install "videoflow-shm[ray]"'
STATS_WAIT = 1.0  # seconds stats() waits for the actors' counters while the flow runs
STATS_FRESH = 0.5  # seconds during which stats() reuses the counters it last asked for
GONE_WITHIN = 5.0  # seconds to wait for the processes of killed local actors to exit
SETTLE_WITHIN = 3.0  # seconds to wait for the results of calls to killed actors (see _settle)
_running: weakref.WeakSet[RayEngine] = weakref.WeakSet()
_exit_hook = False


def ray_available() -> bool:
    """True when Ray can be imported (without importing it)."""
    return importlib.util.find_spec("ray") is not None


class RayEngine:
    """Runs a flow on Ray: one actor per task, the flow's owner as the only submitter.

    address:       the cluster to use (``"HEAD:6379"``, ``"ray://head:10001"``, ``"auto"``);
                   None: the ``ray_address`` flow option, else RAY_ADDRESS, else a local Ray
                   instance started when this process is not connected to one yet. A process
                   already connected (``ray.init`` called before) keeps its connection.
    max_restarts:  restarts Ray may give each processor actor that dies (0: a dead actor ends
                   the flow with a FlowError). Calls in flight are retried on the restarted
                   actor, which opens its node again; messages still arrive once, in order.
    window:        messages in flight at most, per stream: a producer's, or a JOIN's sets
                   (default: see ``default_window``).
    runtime_env:   Ray runtime environment for the actors (``pip``, ``py_modules``,
                   ``env_vars``, ...), e.g. to ship the modules that define your nodes.
    actor_options: per node name, extra ``ray.remote`` options for its actors, e.g.
                   ``{"detector": {"num_gpus": 1, "resources": {"camera-box": 1}}}``. By
                   default an actor reserves no CPU (``num_cpus=0``, like a task process) and
                   a GPU node's actor one GPU while the cluster has GPUs left.
    init_options:  extra ``ray.init`` keyword arguments when this engine connects.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        max_restarts: int = 0,
        window: int | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        actor_options: Mapping[str, Mapping[str, Any]] | None = None,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not ray_available():
            raise ImportError(INSTALL_HINT)
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < -1:
            raise ValueError(f"max_restarts must be -1 (no limit) or >= 0, got {max_restarts!r}")
        if window is not None and (not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be a positive integer, got {window!r}")
        self.address = address
        self.max_restarts = max_restarts
        self.window = window
        self.runtime_env = dict(runtime_env) if runtime_env else None
        self.actor_options = {k: dict(v) for k, v in (actor_options or {}).items()}
        self.init_options = dict(init_options or {})
        self.errors: list[FlowError] = []
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._polled_at = -STATS_FRESH  # monotonic time stats() last asked the actors
        self._stages: list[StageSpec] = []
        self._tasks: list[Task] = []
        self._plan: Plan | None = None
        self._turn = 0  # the stream the driver looks at first when several have messages
        self._by_actor: dict[str, Task] = {}
        self._realtime = False
        self._config: FlowConfig | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._killed = threading.Event()
        self._started = False
        self._stop_deadline: float | None = None  # stop() + stop_timeout
        # Refs of calls whose results nobody fetched (_settle); shared with the streams and
        # the watchdog, so never replaced, only changed in place.
        self._loose: list[Any] = []
        self._streams = Streams(self._fail, self._loose)  # its streams, JOINs, messages
        self._watchdog: Watchdog  # what its tasks do (start)

    # -- Engine protocol -------------------------------------------------------------------
    def start(self, stages: Sequence[StageSpec], realtime: bool, config: FlowConfig) -> None:
        """Connect to Ray, check the flow, create its actors and return; the driver thread
        waits for them to open their nodes, then runs the flow."""
        if self._started:
            raise RuntimeError("this RayEngine was already started: an engine runs one flow")
        self._started = True
        self._stages, self._realtime, self._config = list(stages), realtime, config
        self._watchdog = Watchdog(self._tasks, config, realtime, self._streams.flight,
                                  self._loose, self._fail, self._abort)
        try:
            self._check(self._stages)
            self._plan = build_plan(self._stages, config)  # segments and joins, or a clear error
            unknown = set(self.actor_options) - {s.name for s in self._stages}
            if unknown:
                raise ValueError("actor_options names nodes that are not in the flow: "
                                 f"{', '.join(sorted(unknown))}")
            node_bytes = [self._pickle(spec) for spec in self._stages]
            self._create_actors(self._connect(), node_bytes)
            self._streams.build(self._plan, self._tasks, realtime, self.window,
                                config.queue_depth)
        except BaseException:  # nothing left behind, and wait() does not wait for a driver
            self._kill_actors()
            self._done.set()
            raise
        _running.add(self)
        threading.Thread(target=self._drive, name="videoflow-ray-driver", daemon=True).start()

    def stop(self) -> None:
        """Graceful end: the producer stops (a ``next()`` in progress is interrupted), what it
        produced drains, every node closes; after ``stop_timeout`` the stop becomes an abort
        and a FlowError names the tasks that had not finished."""
        with self._lock:
            if self._stop_deadline is None and self._config is not None:
                self._stop_deadline = time.monotonic() + self._config.stop_timeout
        self._stop.set()


    def abort(self) -> None:
        """Immediate end: the producer stops at once, nothing more is submitted, nodes close
        and every actor is killed ``stop_grace`` seconds later at most."""
        self._abort.set()

    def kill(self) -> None:
        """Kill every actor of the flow now (the second Ctrl-C)."""
        self._killed.set()
        self._abort.set()
        self._kill_actors()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return self._started and not self._done.is_set()

    # -- start -----------------------------------------------------------------------------
    def _check(self, stages: list[StageSpec]) -> None:
        """What the plan (built next, as the process engine builds it) does not check."""
        if not stages or stages[0].kind != PRODUCER:
            raise ValueError("the Ray engine runs flows that start with a producer")

    @staticmethod
    def _pickle(spec: StageSpec) -> bytes:
        from ray import cloudpickle

        try:
            return bytes(cloudpickle.dumps(spec.node))
        except Exception as exc:
            raise ValueError(
                f"node {spec.name!r} cannot be sent to its Ray actor ({exc}); keep what it "
                "holds before open() picklable (open files, models and locks in open())"
            ) from exc

    def _connect(self) -> Any:
        global _exit_hook
        try:
            import ray
        except ImportError as exc:
            raise ImportError(INSTALL_HINT) from exc
        if ray.is_initialized():
            if self.address is not None:
                log.debug("already connected to Ray: address %r not used", self.address)
        else:
            assert self._config is not None
            address = self.address or self._config.ray_address or None
            options: dict[str, Any] = {"address": address, "log_to_driver": True}
            if address is None and not os.environ.get("RAY_ADDRESS"):
                options["include_dashboard"] = False  # a local instance: no dashboard process
            options.update(self.init_options)
            ray.init(**options)
        if not _exit_hook:  # registered after ray.init's own hook, so it runs before it
            atexit.register(_shutdown_running)
            _exit_hook = True
        return ray

    def _gpus_left(self, ray: Any) -> int:
        try:
            return int(ray.cluster_resources().get("GPU", 0))
        except Exception:
            return 0

    def _create_actors(self, ray: Any, node_bytes: list[bytes]) -> None:
        from videoflow.engine.ray_actor import CONTROL, NodeActor

        assert self._config is not None
        # Only producers and nodes that skip when busy have a second thread, for control
        # calls (stop, abort, stats; ``ahead``) that must not wait behind the calls queued on
        # them. The other actors run every call in their main thread, in order: a concurrency
        # group costs each call a hand-over between threads (4-5 % of the frame rate at 1080p
        # through 3 hops, measured).
        node_actor = ray.remote(NodeActor)
        control_actor = ray.remote(concurrency_groups={CONTROL: 1})(NodeActor)
        gpus = self._gpus_left(ray)
        # REALTIME drops happen at the producers only (nothing queues elsewhere): by the
        # policy of the queue in front of the stage after each (engine/plan.py link_policy).
        assert self._plan is not None
        drops = {stage.spec.node_id: stage.outbox.drop for stage in self._plan.stages
                 if stage.spec.kind == PRODUCER and stage.outbox is not None}
        for index, spec in enumerate(self._stages):
            drop_newest = drops.get(spec.node_id, self._config.realtime_drop) == DROP_NEWEST
            threaded = spec.kind == PRODUCER or (spec.skip_when_busy and self._realtime)
            user = self.actor_options.get(spec.name, {})
            for worker in range(spec.nb_tasks):
                options: dict[str, Any] = {"num_cpus": 0}
                if spec.kind == PROCESSOR and self.max_restarts:
                    options["max_restarts"] = self.max_restarts
                    options["max_task_retries"] = -1
                if self.runtime_env:
                    options["runtime_env"] = self.runtime_env
                cpu_fallback = False
                if spec.device_type == GPU and "num_gpus" not in user:
                    if gpus > 0:
                        options["num_gpus"] = 1
                        gpus -= 1
                    else:
                        cpu_fallback = True
                        log.warning("no GPU left for task %d of node %r: it runs on the CPU",
                                    worker, spec.name)
                options.update(user)
                actor_class = control_actor if threaded else node_actor
                handle = actor_class.options(**options).remote(
                    node_bytes[index], dataclasses.replace(spec, node=None), worker,
                    self._realtime, drop_newest, cpu_fallback,
                )
                task = Task(index, spec, worker, handle, handle._actor_id.hex(), control=threaded)
                if threaded and spec.kind != PRODUCER:
                    task.ahead = handle.ahead.options(concurrency_group=CONTROL)
                self._tasks.append(task)
                self._by_actor[task.actor_id] = task

    # -- the driver ------------------------------------------------------------------------
    def _drive(self) -> None:
        import ray

        graceful = False
        try:
            if self._open(ray) and self._go(ray):
                graceful = self._pump(ray)
            self._finish(ray, graceful)
        except BaseException as exc:  # never leave join() waiting on a dead driver
            log.exception("videoflow Ray driver failed")
            self.errors.append(FlowError(f"Ray driver failed: {exc}", node="<engine>"))
            self._kill_actors()
        finally:
            self.ended_at = time.monotonic()
            try:
                self._settle(ray)
            finally:
                _running.discard(self)
                self._done.set()

    def _settle(self, ray: Any) -> None:
        """Fetch (and drop) the result of every call whose result the driver did not fetch:
        calls in flight when the flow was torn down, closes cut short, control calls. Ray logs
        "Unhandled error" for an error result (a call to a killed actor, a message that could
        not be sent) dropped unseen; the FlowError has said what went wrong. The actors are
        gone by now, so their pending calls fail at once."""
        flight = self._streams.flight
        refs = [ref for ref in flight if ref is not END]
        refs += [ref for message in flight.values() for _, ref, _ in message.calls]
        refs += [t.close_ref for t in self._tasks if t.close_ref is not None and not t.closed]
        refs += self._loose
        flight.clear()
        self._loose.clear()
        fetched(ray, list(dict.fromkeys(refs)), SETTLE_WITHIN)  # each ref once

    def _fail(self, err: FlowError, task: Task | None = None) -> None:
        """Record ``err`` and abort; after a kill (a second Ctrl-C) what fails next is the
        kill's doing, and not recorded."""
        if self._killed.is_set():
            self._abort.set()
            return
        with self._lock:
            self.errors.append(err)
        if task is not None:
            task.failed = True
        self._abort.set()

    def _task_of(self, exc: BaseException) -> Task | None:
        """The task an exception from Ray is about: by its actor id, else by the actor's
        ``repr`` in its text (Ray names every actor a task error went through there, the one
        where it started last)."""
        actor_id = getattr(exc, "actor_id", None) or getattr(exc, "_actor_id", None)
        if isinstance(actor_id, bytes):
            actor_id = actor_id.hex()
        if actor_id and actor_id in self._by_actor:
            return self._by_actor[actor_id]
        text = str(exc)
        found = [(text.rfind(f"repr={t.spec.name}[{t.worker}])"), t) for t in self._tasks]
        at, task = max(found, key=lambda pair: pair[0], default=(-1, None))
        return task if at >= 0 else None

    def _ray_error(self, ray: Any, exc: BaseException, task: Task | None = None) -> FlowError:
        """A FlowError for an exception Ray raised in the driver (an actor died, a value could
        not be serialized, an object was lost), naming the node when it can."""
        task = self._task_of(exc) or task
        node, worker = (task.spec.name, task.worker) if task else ("<engine>", 0)
        if task is not None:
            task.failed = True
        detail = str(exc).strip()
        if isinstance(exc, ray.exceptions.RayActorError):
            if task is not None:
                task.dead = True
            if task is not None and task.spec.kind == PROCESSOR and not self.max_restarts:
                hint = " (RayEngine(max_restarts=N) restarts a processor's actors)"
            else:
                hint = ""
            return FlowError(
                f"task {worker} of node {node!r} died: its Ray actor is gone{hint}\n{detail}",
                node=node, task=worker,
            )
        if isinstance(exc, ray.exceptions.RayTaskError):
            return FlowError(
                f"node {node!r} (task {worker}) failed in Ray: "
                f"{type(exc.cause).__name__}: {exc.cause}",
                node=node, task=worker, remote_traceback=getattr(exc, "traceback_str", ""),
            )
        return FlowError(f"node {node!r} (task {worker}) failed in Ray: {detail}",
                         node=node, task=worker)

    def _harvest(
        self, ray: Any, pending: dict[Any, Task], timeout: float
    ) -> list[tuple[Task, Any]] | None:
        """The results among ``pending`` (ref -> task) ready within ``timeout``, taken out of
        it; None when one of them raised (an actor died...): the flow has then failed."""
        if not pending:
            return []
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        ready = []
        for ref in done:
            task = pending.pop(ref)
            try:
                ready.append((task, ray.get(ref)))
            except Exception as exc:
                self._fail(self._ray_error(ray, exc, task), task)
                return None
        return ready

    def _open(self, ray: Any) -> bool:
        """Wait until every actor has opened its node; False when the flow cannot go on."""
        assert self._config is not None
        pending = {control(task, "info").remote(): task for task in self._tasks}
        deadline = time.monotonic() + self._config.start_timeout
        poll = self._config.poll_interval
        while pending:
            if self._abort.is_set():
                self._loose += pending
                return False
            ready = self._harvest(ray, pending, poll)
            if ready is None:
                self._loose += pending
                return False
            for task, info in ready:
                task.info = info
                if info.failure is not None:
                    self._fail(failure_error(info.failure), task)
                    self._loose += pending
                    return False
            if pending and time.monotonic() > deadline:
                self._loose += pending
                task = next(iter(pending.values()))
                self._fail(FlowError(
                    f"node {task.spec.name!r} (task {task.worker}) did not open within "
                    f"{self._config.start_timeout:g} s (its Ray actor may be waiting for "
                    "resources no node of the cluster has: see actor_options)",
                    node=task.spec.name, task=task.worker,
                ), task)
                return False
        return True

    def _go(self, ray: Any) -> bool:
        """Share the CPUs of each machine among the flow's actors on it (OpenCV threads), start
        the clocks, then the producer's loop; False when an actor died meanwhile."""
        assert self._config is not None
        on_node = collections.Counter(t.info.node_id for t in self._tasks if t.info)
        # Frame ages compare clocks: counted by consumers on the machine of every producer.
        producer_ips = {t.info.ip if t.info else None for t in self._tasks
                        if t.spec.kind == PRODUCER}
        calls = []
        for task in reversed(self._tasks):  # the producer last
            info = task.info
            assert info is not None
            threads = self._config.opencv_threads_per_task(on_node[info.node_id], info.cpus)
            if self._stop.is_set() and task.spec.kind == PRODUCER:
                calls.append(control(task, "stop").remote())
            calls.append(control(task, "go").remote(threads, producer_ips == {info.ip}))
        try:
            ray.get(calls, timeout=self._config.start_timeout)
        except Exception as exc:
            self._loose += calls
            self._fail(self._ray_error(ray, exc))
            return False
        self.started_at = time.monotonic()
        return True

    # -- the driver loop: submit, pair, take in (the streams themselves: ray_streams.py) ----
    def _pump(self, ray: Any) -> bool:
        """Run the flow until every producer has ended and every message has arrived (True),
        or until an abort, a kill or a failure (False)."""
        assert self._config is not None
        streams = self._streams
        streams.object_ref = ray.ObjectRef
        producers = [seg for seg in streams.segments if seg.join is None]
        roots = [seg for seg in streams.segments if seg.parent < 0]
        poll = self._config.poll_interval
        stop_sent = False
        self._watchdog.begin()
        while True:
            self._watch(ray)
            if self._abort.is_set():
                return False
            if self._stop.is_set() and not stop_sent:
                for seg in producers:
                    self._loose.append(control(seg.chain[0][1][0], "stop").remote())
                stop_sent = True
            for seg in producers:
                while not seg.ending and len(seg.inflight) + len(seg.arrived) < seg.window:
                    streams.submit(seg)
            timeout = streams.pair(poll) if streams.joins else poll
            if timeout is None:
                return False
            for seg in streams.segments:  # the end of a JOIN's stream: nothing to wait for
                while seg.inflight and seg.inflight[0][0] is END:
                    streams.came_back(seg, None)
            if all(seg.ended and not seg.inflight for seg in roots):
                return True
            if not self._wait_oldest(ray, timeout):
                return False

    def _wait_oldest(self, ray: Any, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the oldest message in flight of any stream and
        take it in (each stream's messages come back in order); False on a failure.

        One get per message, as a hand-written driver does; the timeout only bounds how long
        a stop, an abort, a kill or a JOIN's deadline waits to be seen. An actor that dies
        fails the calls queued for it, and every actor has calls queued while messages are in
        flight, so a death reaches this wait too."""
        heads = [seg for seg in self._streams.segments if seg.inflight]
        if not heads:
            time.sleep(timeout)  # a JOIN waits for its deadline, or for room after it
            return True
        seg = heads[0]
        if len(heads) > 1:
            self._turn = turn = (self._turn + 1) % len(heads)  # no stream served first always
            heads = heads[turn:] + heads[:turn]
            refs = [s.inflight[0][0] for s in heads]
            ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
            if not ready:
                return True
            seg, timeout = heads[refs.index(ready[0])], 0
        try:
            value = ray.get(seg.inflight[0][0], timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            return True
        except Exception as exc:
            self._fail(self._ray_error(ray, exc))
            return False
        return self._streams.came_back(seg, value if seg.parent >= 0 else value[0])

    def _watch(self, ray: Any) -> None:
        """Let the watchdog look at what every task is doing, and fail the flow if an ending
        takes too long or a task is stalled (ray_watch.py)."""
        self._watchdog.watch(ray, self._streams.delivered, self._stop_deadline)

    # -- finishing ------------------------------------------------------------------------
    def _finish(self, ray: Any, graceful: bool) -> None:
        """Close every node (after the calls queued on its actor), then kill the actors.
        Graceful: the closes have ``stop_timeout`` (and the flow what is left of the stop
        deadline after a stop()); a close() that has not returned by then fails the flow,
        named. Otherwise (and once the flow has failed) the producer stops at once and the
        closes get ``stop_grace``. A kill cuts either short."""
        assert self._config is not None
        if self._killed.is_set():
            self._kill_actors()
            return
        grace, poll = self._config.stop_grace, self._config.poll_interval
        live = [t for t in self._tasks if not t.dead]
        for producer in (t for t in live if t.spec.kind == PRODUCER and not graceful):
            # The producers stop at once; the calls already queued on the other actors still
            # run (or return at once after a failure) before their close.
            self._loose.append(control(producer, "abort").remote())
        closes: dict[Any, Task] = {}
        for task in live:
            task.close_ref = task.handle.close.remote(grace)
            closes[task.close_ref] = task
        deadline = None if graceful else time.monotonic() + grace
        while closes and not self._killed.is_set():
            if deadline is None and self._abort.is_set():
                deadline = time.monotonic() + grace
            if deadline is not None and time.monotonic() >= deadline:
                break
            for task, (row, failure) in self._harvest(ray, closes, poll) or ():
                task.row, task.closed, task.phase, task.seq = row, True, P_ENDED, -1
                if failure is not None and not task.failed:
                    self._fail(failure_error(failure), task)
            if deadline is None:
                self._watch(ray)
                self._watchdog.check_closes(time.monotonic())
        self._kill_actors()

    def _kill_actors(self) -> None:
        """Kill every actor of the flow and wait for the processes of those on this machine
        to exit; one that Ray has not ended within ``GONE_WITHIN`` seconds (a busy machine
        delays its kill) is killed here, known by its pid and start time."""
        try:
            import ray
        except ImportError:
            return
        here = None  # this machine's address (several Ray nodes may share a machine)
        with contextlib.suppress(Exception):
            here = ray.util.get_node_ip_address()
        local: dict[int, int] = {}
        for task in self._tasks:
            with contextlib.suppress(Exception):
                ray.kill(task.handle, no_restart=True)
            if task.info is not None and task.info.ip == here and task.info.started:
                local[task.info.pid] = task.info.started
        for last_resort in (False, True):
            deadline = time.monotonic() + (1.0 if last_resort else GONE_WITHIN)
            while local and time.monotonic() < deadline:
                local = {pid: t for pid, t in local.items() if process_started(pid) == t}
                if local:
                    time.sleep(0.02)
            if not local or last_resort:
                break
            log.warning("Ray did not end %d actor(s) of the flow within %g s: killing them",
                        len(local), GONE_WITHIN)
            for pid in local:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    # -- what it ran on, and its counters --------------------------------------------------
    def placement(self) -> dict[tuple[str, int], str]:
        """The Ray node id each task runs on, keyed by (node name, task), once open."""
        return {(t.spec.name, t.worker): t.info.node_id for t in self._tasks if t.info}

    def actor_pids(self) -> list[int]:
        """Process ids of the flow's actors (on their own machines), once open."""
        return [t.info.pid for t in self._tasks if t.info]

    def stats(self) -> FlowStats:
        """A snapshot of the counters: while the flow runs, asked of every actor unless they
        were asked less than ``STATS_FRESH`` seconds ago (when not all of them answer within
        ``STATS_WAIT`` seconds, the previous snapshot's rows stay); final once the flow has
        ended. The actors count for themselves: a flow nobody asks about pays nothing for its
        counters."""
        if self.running and self.started_at is not None:
            now = time.monotonic()
            if now - self._polled_at >= STATS_FRESH:
                self._polled_at = now
                self._poll_counters(STATS_WAIT)
        running = self.running
        now = time.monotonic()
        started = self.started_at
        seen = self.ended_at or now  # what the tasks were doing: as last seen
        elapsed = 0.0 if started is None else max(0.0, seen - started)
        failed: dict[tuple[str, int], int] = {}
        for err in list(self.errors):
            failed[(err.node, err.task)] = failed.get((err.node, err.task), 0) + 1
        if not self._stages:
            return FlowStats(nodes=(), produced=0, delivered=0, dropped=0, running=running)
        layout = ControlLayout.of_specs(self._stages)
        tasks = list(self._tasks)

        by_task = {(t.stage, t.worker): t for t in tasks}

        def queued(stage: StageRows) -> int | None:
            if not running or stage.spec.kind == PRODUCER:
                return None
            mine = [t for t in tasks if t.stage == stage.index]
            return max(0, sum(t.submitted for t in mine) - sum(t.row[IN] for t in mine))

        def what(stage: StageRows, worker: int, row: Any) -> tuple[str, float, bool]:
            task = by_task[(stage.index, worker)]
            watchdog = self._watchdog
            return (watchdog.doing(task, seen), watchdog.doing_s(task, seen),
                    watchdog.stalled(task, seen, self.started_at is not None))

        snapshot = FlowStats.from_block(
            layout.pack({(t.stage, t.worker): t.counters() for t in tasks}), layout,
            running=running, elapsed_s=elapsed, errors=failed, inbox_queued=queued,
            doing=what, pool_slots_in_use=None if running else 0,
        )
        # The driver runs the JOINs (no actor, no row): their counters come from its Aligners.
        assert self._plan is not None
        joins = self._streams.join_stats(self._plan.stages, self._tasks)
        return dataclasses.replace(snapshot, joins=joins)

    def _poll_counters(self, timeout: float) -> None:
        """Ask the actors for their counters, the last stage first and the producer last, so
        that a snapshot never shows more messages delivered than produced. An actor answers
        after the calls queued on it (a producer at once, and what it is doing too), so this
        takes up to ``timeout``; the rows are kept only if every live actor answered in time:
        a snapshot stays whole."""
        import ray

        deadline = time.monotonic() + timeout
        answers: list[tuple[Task, Any]] = []
        for index in reversed(range(len(self._stages))):
            pending = {control(t, "look" if t.spec.kind == PRODUCER else "stats").remote(): t
                       for t in self._tasks if t.stage == index and t.info and not t.dead}
            left = max(0.0, deadline - time.monotonic())
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=left)
            if len(done) < len(pending):
                self._loose += pending
                return
            try:
                answers += [(pending[ref], ray.get(ref)) for ref in done]
            except Exception:  # a dead actor: the driver reports it
                self._loose += pending
                return
        for task, answer in answers:
            if task.spec.kind == PRODUCER:
                task.looked(answer)
            else:
                task.row = answer


def process_started(pid: int) -> int | None:
    """When process ``pid`` of this machine started (clock ticks since boot, from /proc), or
    None when it is gone, a zombie, or /proc is not there: with the pid it names one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _shutdown_running() -> None:
    """At interpreter exit, before Ray disconnects: end the Ray flows still running."""
    for engine in list(_running):
        engine.abort()
        if not engine.wait(10):
            engine.kill()
            engine.wait(5)


__all__ = ["INSTALL_HINT", "RayEngine", "default_window", "ray_available"]
