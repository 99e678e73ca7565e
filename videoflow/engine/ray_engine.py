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
of its own; a set goes on as one more message of the JOIN's stream (``_pair``, and
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
has in flight (``_observe``): an actor runs its calls in order, so its oldest call that has
not returned is the one it runs once that call's arguments are ready. Whatever the ending,
the driver fetches every result it has not (``_settle``), so Ray logs no "Unhandled error".

A node raising travels as a marker in place of the message's metadata and ends the flow with
a FlowError naming the node, with the traceback from the actor. A dead actor ends it likewise,
unless ``max_restarts`` was given: then Ray restarts a processor's actor (its node is opened
again) and retries the calls it had, and the chain of refs still delivers every message
exactly once and in order. Producers and consumers are never restarted: their side effects
(frames read from a camera, lines written to a file) cannot be replayed exactly once.

``import ray`` happens in ``start()``: importing videoflow never imports Ray.
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
import traceback
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from videoflow.config import DROP_NEWEST
from videoflow.engine.align import Aligner, set_meta
from videoflow.engine.control import (
    DROPPED,
    IN,
    IN_NODE_CODE,
    OUT,
    P_BETWEEN,
    P_CLOSE,
    P_CONSUME,
    P_ENDED,
    P_NEXT,
    P_PROCESS,
    P_READY,
    PHASE_SPAN,
    ROW,
    STATE,
    ControlLayout,
    StageRows,
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
from videoflow.engine.plan import (
    CONSUMER,
    GPU,
    JOIN,
    MERGE,
    PROCESSOR,
    PRODUCER,
    JoinInput,
    Plan,
    StageSpec,
    build_plan,
)
from videoflow.engine.stats import FlowStats, JoinInputStats, JoinStats
from videoflow.errors import FlowError

if TYPE_CHECKING:
    from videoflow.config import FlowConfig
    from videoflow.engine.ray_actor import ActorInfo, Failure

log = logging.getLogger(__name__)

INSTALL_HINT = 'the Ray engine needs Ray, which is not installed: pip install "videoflow-shm[ray]"'
STATS_WAIT = 1.0  # seconds stats() waits for the actors' counters while the flow runs
STATS_FRESH = 0.5  # seconds during which stats() reuses the counters it last asked for
GONE_WITHIN = 5.0  # seconds to wait for the processes of killed local actors to exit
SETTLE_WITHIN = 3.0  # seconds to wait for the results of calls to killed actors (see _settle)
LOOK_WAIT = 1.0  # seconds a forced ending waits for a producer to say what it is doing
TICK = 0.2  # seconds between the driver's looks at what every task is doing
LOOSE_KEPT = 256  # unfetched results of fire-and-forget calls kept before the done ones go
_running: weakref.WeakSet[RayEngine] = weakref.WeakSet()
_exit_hook = False


def default_window(stages: Sequence[StageSpec], realtime: bool, queue_depth: int) -> int:
    """Messages in flight at most in a stream of ``stages`` when RayEngine(window=None).
    BATCH: two per actor plus ``queue_depth``, so that every actor has its next call queued
    behind the one it runs, whatever Ray's latency per call. REALTIME: one per actor plus
    one, so that the slowest actor always has work while a message waits in front of it as
    little as possible (every message in flight is one more frame of latency; the producer
    drops the rest)."""
    actors = sum(s.nb_tasks for s in stages)
    return actors + 1 if realtime else 2 * actors + queue_depth


def ray_available() -> bool:
    """True when Ray can be imported (without importing it)."""
    return importlib.util.find_spec("ray") is not None


@dataclasses.dataclass
class _Task:
    """One actor: a task of a stage, as the driver tracks it."""

    stage: int
    spec: StageSpec
    worker: int
    handle: Any
    actor_id: str
    info: ActorInfo | None = None
    row: list[int] = dataclasses.field(default_factory=lambda: [0] * ROW)
    submitted: int = 0  # data messages submitted to this actor
    failed: bool = False  # its node raised, or its actor died
    dead: bool = False  # its actor died: nothing more can be asked of it
    control: bool = False  # it has a control thread (a producer, a node that skips when busy)
    ahead: Any = None  # skip_when_busy: its ``ahead`` method, in its control thread
    # What it is doing, as the driver sees it from the calls in flight (_observe): a phase of
    # stats.PHASES and the driver's number of the message it holds (-1: none), since when;
    # whether its process is stopped (actors on this machine only), since when.
    phase: int = P_READY
    seq: int = -1
    since: float = 0.0
    stopped: bool = False
    stopped_since: float = 0.0
    source: _Task | None = None  # the producer whose take made the message it holds
    close_ref: Any = None  # its close() call, once asked
    closed: bool = False  # ... which returned
    returned: int = 0  # its calls for data messages the driver saw return
    # A producer says what it does itself (NodeActor.look): its row (STATE), for how long,
    # when it said so; and which message each of its latest takes got.
    look: tuple[list[int], float, float] | None = None
    taken: tuple[int, list[int]] = (0, [])

    def counters(self) -> list[int]:
        """Its counter row: as the actor last said, but never below the calls the driver saw
        return (an actor whose close() never returned never sent its final row)."""
        row = list(self.row)
        if not self.closed:
            row[IN] = max(row[IN], self.returned)
            if self.spec.kind != CONSUMER:
                row[OUT] = max(row[OUT], self.returned)
        return row

    @property
    def pending(self) -> bool:
        """It has a call in flight that has not returned (a node call, or its close)."""
        return self.seq >= 0 or self.phase == P_CLOSE




@dataclasses.dataclass
class _Message:
    """One message in flight: its number in its stream, and every call made for it: (actor,
    result ref, argument refs)."""

    seq: int
    calls: list[tuple[_Task, Any, tuple[Any, ...]]]


_END: Any = None  # in a stream's queue of messages: the stream has ended
_NONE_PAIR = (None, None)  # the pair of a node whose input is missing from a set


@dataclasses.dataclass
class _Join:
    """A JOIN stage, run by the driver: the streams it pairs and its Aligner."""

    name: str
    policy: Any  # the node's Join
    inputs: tuple[JoinInput, ...]
    aligner: Aligner
    sets: int = 0  # sets sent on: the next set's index
    ready: collections.deque[tuple[Any, ...]] = dataclasses.field(
        default_factory=collections.deque)  # sets made, waiting for room after the JOIN
    cpu_ns: int = 0  # the driver's CPU time spent pairing for this JOIN
    feeders: list[_Segment] = dataclasses.field(default_factory=list)  # its inputs' streams


@dataclasses.dataclass
class _Segment:
    """One producer set's chain (engine/plan.py): the stream of one producer, or of the sets a
    JOIN makes, through the stages of its nodes, submitted by the driver message by message.

    inflight: per message in flight, oldest first, the ref to wait for and what the JOIN after
              it needs: the ref of its last stage's metadata and the refs of the outputs it
              carries (``_END`` once the stream has ended, for a JOIN's own stream).
    arrived:  messages of a stream that feeds a JOIN whose metadata came back, not yet offered
              to that JOIN (its buffer for this input is full); ``_END`` ends the input.
    """

    index: int
    chain: list[tuple[StageSpec, list[_Task]]]  # its nodes' stages and their actors
    parent: int  # the segment whose JOIN it feeds; -1: none, it ends the flow
    input: int  # its input number in that JOIN
    carries: tuple[int, ...]  # node ids that JOIN needs of its messages
    window: int
    join: _Join | None = None  # the JOIN at its head (None: it starts with a producer)
    inflight: collections.deque[tuple[Any, Any]] = dataclasses.field(
        default_factory=collections.deque)
    arrived: collections.deque[Any] = dataclasses.field(default_factory=collections.deque)
    seq: int = 0  # messages submitted
    ending: bool = False  # no more messages will be submitted
    ended: bool = False  # its end came back: what is in flight after it is not a message


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
        self.submit_s = 0.0  # driver seconds spent submitting calls (its own cost per message)
        self._polled_at = -STATS_FRESH  # monotonic time stats() last asked the actors
        self._stages: list[StageSpec] = []
        self._tasks: list[_Task] = []
        self._plan: Plan | None = None
        self._segments: list[_Segment] = []
        self._joins: list[_Join] = []
        self._object_ref: Any = object  # ray.ObjectRef, once Ray is imported
        self._turn = 0  # the stream the driver looks at first when several have messages
        self._by_actor: dict[str, _Task] = {}
        self._realtime = False
        self._config: FlowConfig | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._killed = threading.Event()
        self._started = False
        self._stop_deadline: float | None = None  # stop() + stop_timeout
        # The messages in flight of every stream, by the ref the driver waits for, in the
        # order they were submitted (_observe, _settle).
        self._flight: dict[Any, _Message] = {}
        self._loose: list[Any] = []  # refs of calls whose results nobody fetched (_settle)
        self._looked_at = 0.0  # the driver's last look at the tasks (_observe)
        self._moved_at = 0.0  # when a message last moved (stall watchdog)
        self._signature: tuple[Any, ...] = ()
        self._delivered = 0  # messages that came back to the driver

    # -- Engine protocol -------------------------------------------------------------------
    def start(self, stages: Sequence[StageSpec], realtime: bool, config: FlowConfig) -> None:
        """Connect to Ray, check the flow, create its actors and return; the driver thread
        waits for them to open their nodes, then runs the flow."""
        if self._started:
            raise RuntimeError("this RayEngine was already started: an engine runs one flow")
        self._started = True
        self._stages, self._realtime, self._config = list(stages), realtime, config
        try:
            self._check(self._stages)
            self._plan = build_plan(self._stages, config)  # segments and joins, or a clear error
            unknown = set(self.actor_options) - {s.name for s in self._stages}
            if unknown:
                raise ValueError("actor_options names nodes that are not in the flow: "
                                 f"{', '.join(sorted(unknown))}")
            node_bytes = [self._pickle(spec) for spec in self._stages]
            self._create_actors(self._connect(), node_bytes)
            self._build_segments()
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
            control = spec.kind == PRODUCER or (spec.skip_when_busy and self._realtime)
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
                actor_class = control_actor if control else node_actor
                handle = actor_class.options(**options).remote(
                    node_bytes[index], dataclasses.replace(spec, node=None), worker,
                    self._realtime, drop_newest, cpu_fallback,
                )
                task = _Task(index, spec, worker, handle, handle._actor_id.hex(), control=control)
                if control and spec.kind != PRODUCER:
                    task.ahead = handle.ahead.options(concurrency_group=CONTROL)
                self._tasks.append(task)
                self._by_actor[task.actor_id] = task

    @staticmethod
    def _control(task: _Task, method: str) -> Any:
        """``task``'s actor method ``method`` for a control call: in its control thread (a
        producer's, a skipping node's), in the order of node calls on any other actor."""
        from videoflow.engine.ray_actor import CONTROL

        remote_method = getattr(task.handle, method)
        if task.control:
            return remote_method.options(concurrency_group=CONTROL)
        return remote_method

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
        refs = [ref for ref in self._flight if ref is not _END]
        refs += [ref for message in self._flight.values() for _, ref, _ in message.calls]
        refs += [t.close_ref for t in self._tasks if t.close_ref is not None and not t.closed]
        refs += self._loose
        self._flight.clear()
        self._loose = []
        self._fetched(ray, list(dict.fromkeys(refs)), SETTLE_WITHIN)  # each ref once

    @staticmethod
    def _fetched(ray: Any, refs: list[Any], timeout: float) -> list[Any]:
        """Fetch and drop the results among ``refs`` ready within ``timeout`` (errors
        included); returns the refs still pending."""
        if not refs:
            return []
        try:
            done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        except Exception:
            return refs
        for ref in done:
            with contextlib.suppress(Exception):
                ray.get(ref, timeout=0)
        return list(pending)

    def _fail(self, err: FlowError, task: _Task | None = None) -> None:
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

    def _failure_error(self, failure: Failure) -> FlowError:
        where = " at load" if failure.phase == "load" else f" in {failure.phase}()"
        return FlowError(
            f"node {failure.node!r} (task {failure.task}) raised {failure.type_name}{where}: "
            f"{failure.message}",
            node=failure.node, task=failure.task, remote_traceback=failure.traceback,
        )

    def _task_of(self, exc: BaseException) -> _Task | None:
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

    def _ray_error(self, ray: Any, exc: BaseException, task: _Task | None = None) -> FlowError:
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

    def _open(self, ray: Any) -> bool:
        """Wait until every actor has opened its node; False when the flow cannot go on."""
        assert self._config is not None
        pending = {self._control(task, "info").remote(): task for task in self._tasks}
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
                    self._fail(self._failure_error(info.failure), task)
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
                calls.append(self._control(task, "stop").remote())
            calls.append(self._control(task, "go").remote(threads, producer_ips == {info.ip}))
        try:
            ray.get(calls, timeout=self._config.start_timeout)
        except Exception as exc:
            self._loose += calls
            self._fail(self._ray_error(ray, exc))
            return False
        self.started_at = time.monotonic()
        return True

    # -- the driver: streams, joins, submission ------------------------------------------------
    def _build_segments(self) -> None:
        """The plan's segments as the driver runs them: the nodes of each and their actors (no
        MERGE: an actor runs its calls in submission order), the JOIN at its head, run here
        with the plan's Aligner, and its window."""
        assert self._plan is not None and self._config is not None
        plan = self._plan
        actors: dict[int, list[_Task]] = collections.defaultdict(list)
        for task in self._tasks:
            actors[task.spec.node_id].append(task)
        feeds: dict[int, tuple[int, JoinInput | None]] = {}  # segment -> its input, its JOIN's
        for stage in plan.stages:
            for k, fed in enumerate(stage.join_inputs):
                feeds[plan.stages[fed.stages[0]].segment] = (k, fed)
        for segment in plan.segments:
            head = plan.stages[segment.stages[0]]
            chain = [(plan.stages[i].spec, actors[plan.stages[i].spec.node_id])
                     for i in segment.stages if plan.stages[i].spec.kind not in (MERGE, JOIN)]
            join = None
            if head.spec.kind == JOIN:
                join = _Join(head.spec.name, head.spec.join, head.join_inputs, Aligner(
                    head.spec.join, len(head.join_inputs), head.max_pending,
                    names=[inp.name for inp in head.join_inputs],
                ))
                self._joins.append(join)
            k, inp = feeds.get(segment.index, (-1, None))
            window = self.window or default_window(
                [spec for spec, _ in chain], self._realtime, self._config.queue_depth)
            self._segments.append(_Segment(segment.index, chain, segment.parent, k,
                                           inp.carries if inp else (), window, join))
        for seg in sorted(self._segments, key=lambda seg: seg.input):  # in input order
            if seg.parent >= 0:
                parent = self._segments[seg.parent].join
                assert parent is not None
                parent.feeders.append(seg)

    def _submit(self, seg: _Segment, meta: dict[str, Any] | None = None,
                inputs: Mapping[int, Any] | None = None) -> None:
        """Submit every call of the next message of ``seg``: a take from its producer, or (the
        stream of a JOIN) a set, whose metadata is ``meta`` and whose inputs' outputs are
        ``inputs`` (node id -> the ref of that node's pair).

        Every call returns one (metadata, output) pair. A stage that reads only the previous
        stage gets that pair (``call``); any other gets the previous stage's pair first (the
        metadata it carries on; after a JOIN, the set's metadata itself), then those of its
        other parents, each once, and ``where`` says which pair holds each of its inputs
        (``call_with``). The last stage of a stream that feeds a JOIN also returns its
        metadata as an object of its own (``take_split``, ``call_split``): the driver pairs
        messages by it without fetching their outputs. Every call is noted in the message
        (``_flight``), so that the driver can tell what each actor is doing (``_observe``)."""
        t0 = time.perf_counter()
        object_ref = self._object_ref
        results: dict[int, Any] = dict(inputs) if inputs else {}
        last: Any = None if meta is None else (meta, None)
        previous: int | None = None
        tail = len(seg.chain) - 1 if seg.parent >= 0 else -1
        meta_ref: Any = None
        calls: list[tuple[_Task, Any, tuple[Any, ...]]] = []
        for pos, (spec, actors) in enumerate(seg.chain):
            task = actors[seg.seq % len(actors)]
            number = task.submitted
            task.submitted += 1
            split = pos == tail
            args: list[Any] = [last]
            if spec.kind == PRODUCER:
                args = []
                last = (task.handle.take_split if split else task.handle.take).remote()
            elif spec.reads == (previous,) and not split and task.ahead is None:
                last = task.handle.call.remote(last)
            else:
                for node_id in spec.reads:
                    if not any(a is results[node_id] for a in args):
                        args.append(results[node_id])
                where = tuple(next(j for j, a in enumerate(args) if a is results[node_id])
                              for node_id in spec.reads)
                method = task.handle.call_split if split else task.handle.call_with
                if task.ahead is None:
                    last = method.remote(where, *args)
                else:  # skip_when_busy: the call says its number (ray_actor.NodeActor.ahead)
                    last = method.remote(where, *args, number=number)
            if split:
                meta_ref, last = last
            calls.append((task, last, tuple(a for a in args if isinstance(a, object_ref))))
            if task.ahead is not None:  # skip_when_busy: what this call waits for
                self._loose.append(
                    task.ahead.remote(number, [a for a in args if isinstance(a, object_ref)]))
            results[spec.node_id] = last
            previous = spec.node_id
        self._flight[meta_ref if tail >= 0 else last] = _Message(seg.seq, calls)
        seg.seq += 1
        if tail >= 0:
            seg.inflight.append((meta_ref, {n: results[n] for n in seg.carries}))
        else:
            seg.inflight.append((last, None))
        self.submit_s += time.perf_counter() - t0

    def _pump(self, ray: Any) -> bool:
        """Run the flow until every producer has ended and every message has arrived (True),
        or until an abort, a kill or a failure (False)."""
        assert self._config is not None
        self._object_ref = ray.ObjectRef
        producers = [seg for seg in self._segments if seg.join is None]
        roots = [seg for seg in self._segments if seg.parent < 0]
        poll = self._config.poll_interval
        stop_sent = False
        self._looked_at = self._moved_at = time.monotonic()
        while True:
            self._watch(ray)
            if self._abort.is_set():
                return False
            if self._stop.is_set() and not stop_sent:
                for seg in producers:
                    self._loose.append(self._control(seg.chain[0][1][0], "stop").remote())
                stop_sent = True
            for seg in producers:
                while not seg.ending and len(seg.inflight) + len(seg.arrived) < seg.window:
                    self._submit(seg)
            timeout = self._pair(poll) if self._joins else poll
            if timeout is None:
                return False
            for seg in self._segments:  # the end of a JOIN's stream: nothing to wait for
                while seg.inflight and seg.inflight[0][0] is _END:
                    self._came_back(seg, None)
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
        heads = [seg for seg in self._segments if seg.inflight]
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
        return self._came_back(seg, value if seg.parent >= 0 else value[0])

    def _came_back(self, seg: _Segment, meta: Any) -> bool:
        """The oldest message in flight of ``seg`` came back with ``meta``: its metadata, None
        at the end of the stream, or a Failure (False: the flow has failed)."""
        ref, carried = seg.inflight.popleft()
        message = self._flight.pop(ref, None)  # every call of it has returned (chained)
        if seg.ended:  # taken after the end: not a message
            return True
        self._delivered += 1
        if isinstance(meta, dict) and message is not None:
            for task, _, _ in message.calls:
                task.returned += 1
        if meta is None:
            seg.ended = seg.ending = True
            if seg.parent >= 0:
                seg.arrived.append(_END)
            return True
        if not isinstance(meta, dict):
            self._fail(self._failure_error(meta))
            return False
        if seg.parent >= 0:
            seg.arrived.append((meta, carried))
        return True

    # -- the watchdog: what every task is doing, and endings that take too long ------------
    def _watch(self, ray: Any) -> None:
        """Every ``TICK``: look at what every task is doing; past the stop deadline, or with a
        task stalled for ``stall_timeout``, fail the flow naming them (which aborts it)."""
        now = time.monotonic()
        if now - self._looked_at < TICK:
            return
        self._observe(ray, now)
        if not self._abort.is_set():
            self._check_stop(ray, now)
        if not self._abort.is_set():
            self._check_stall(ray, now)

    def _observe(self, ray: Any, now: float) -> None:
        """What every task is doing, from the calls in flight: an actor runs its calls in the
        order they were made, so its oldest call that has not returned is the one it runs,
        once that call's arguments are ready (else it waits for them); an actor with no call
        left waits for input, or has closed. A change of what it does restarts its clock.

        A long gap since the last look means this process was not running (Ctrl-Z, a
        debugger): nothing could be seen meanwhile, so that time does not count."""
        self._moved_at += skip_gap(now - self._looked_at, self._tasks)
        self._looked_at = now
        if len(self._loose) > LOOSE_KEPT:  # fire-and-forget calls (ahead, stop): done ones go
            loose, self._loose = self._loose, []
            self._loose += self._fetched(ray, loose, 0)
        refs = [ref for message in self._flight.values() for _, ref, _ in message.calls]
        refs += [t.close_ref for t in self._tasks if t.close_ref is not None and not t.closed]
        ready: set[Any] = set()
        if refs:
            with contextlib.suppress(Exception):
                ready = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
        seen: dict[int, tuple[int, int]] = {}
        for message in self._flight.values():
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
        for task in self._tasks:
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
        asked = {self._control(t, "look").remote(): t for t in self._tasks
                 if t.spec.kind == PRODUCER and not t.dead and t.info is not None}
        if not asked:
            return
        done, _ = ray.wait(list(asked), num_returns=len(asked), timeout=LOOK_WAIT)
        for ref in asked:
            if ref not in done:
                self._loose.append(ref)
                continue
            with contextlib.suppress(Exception):
                self._looked(asked[ref], ray.get(ref))

    @staticmethod
    def _looked(task: _Task, answer: tuple[list[int], float, int, list[int]]) -> None:
        """Keep what producer ``task`` answered to ``look``."""
        row, seconds, first, indices = answer
        task.row, task.taken = row, (first, indices)
        task.look = (row, seconds, time.monotonic())

    def _index(self, task: _Task) -> int:
        """The message index (``meta["index"]``) of the message ``task`` holds: the driver's
        number for it in BATCH; in REALTIME, where the producer drops messages, what its take
        got (-1 when unknown)."""
        if not self._realtime or task.seq < 0:
            return task.seq
        first, indices = task.source.taken if task.source is not None else (0, [])
        at = task.seq - first
        return indices[at] if 0 <= at < len(indices) else -1

    def _doing(self, task: _Task, now: float) -> str:
        """What ``task`` is doing, in the process engine's words (engine/endings.py). The
        producer says it itself (``_look``); the driver knows for the others."""
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

    def _doing_s(self, task: _Task, now: float) -> float:
        """For how long ``task`` has been doing what it does (as far as the driver saw)."""
        look = task.look
        if look is not None and not task.closed:
            return look[1] + now - look[2]
        return now - task.since if task.since else 0.0

    def _stalled(self, task: _Task, now: float) -> bool:
        """Its process is stopped, or it has been in its node's code far longer than usual."""
        if task.stopped:
            return True
        producer = task.spec.kind == PRODUCER
        if self.started_at is None or (producer and task.look is None):
            return False
        phase = task.row[STATE] % PHASE_SPAN if producer else task.phase
        assert self._config is not None
        return (phase in IN_NODE_CODE
                and self._doing_s(task, now) >= stalled_after(self._config.stall_timeout, task.row))

    def _unfinished(self, ray: Any, now: float) -> list[Unfinished]:
        """The tasks with a call that has not returned (those in their node's code, or
        stopped, first), each with what it is doing."""
        self._look(ray)
        left = [t for t in self._tasks if t.pending and not t.dead]
        left.sort(key=lambda t: not (t.stopped or t.phase in IN_NODE_CODE))
        return [Unfinished(t.spec.name, t.worker, self._doing(t, now)) for t in left]

    def _check_stop(self, ray: Any, now: float) -> None:
        """Past ``stop_timeout`` after stop(): fail (and so abort) the flow, naming the tasks
        that had not finished."""
        deadline = self._stop_deadline
        if deadline is None or now < deadline:
            return
        left = self._unfinished(ray, now)
        if left:
            assert self._config is not None
            self._fail(stop_timeout_error(self._config.stop_timeout, self._config.stop_grace,
                                          left))

    def _check_stall(self, ray: Any, now: float) -> None:
        """With stall_timeout: fail the flow when a task has been stuck that long (in its
        node's code, or its process stopped), or when nothing at all moved that long."""
        assert self._config is not None
        timeout = self._config.stall_timeout
        if not timeout:
            return
        signature = (self._delivered, *((t.phase, t.seq, t.stopped) for t in self._tasks))
        if signature != self._signature:
            self._signature, self._moved_at = signature, now
        stuck = [
            t for t in self._tasks if not t.dead and (
                (t.stopped and now - t.stopped_since >= timeout)
                or (t.phase in IN_NODE_CODE and now - t.since >= timeout))
        ]
        if not stuck and now - self._moved_at < timeout:
            return
        left = self._unfinished(ray, now)
        if not left:
            return
        first = None
        if stuck:
            task = min(stuck, key=lambda t: t.stopped_since if t.stopped else t.since)
            first = Unfinished(task.spec.name, task.worker, self._doing(task, now))
            left = [u for u in left if (u.name, u.worker) != (first.name, first.worker)]
        self._fail(stall_error(timeout, first, left))

    def _pair(self, poll: float) -> float | None:
        """Let every JOIN take the messages that came back from its inputs, and send on the
        sets it makes while there is room after it. Returns how long the driver may wait for
        messages before a JOIN's deadline (``poll`` at most); None when pairing failed.

        BATCH offers a JOIN nothing while the stream after it is full: its inputs' messages
        wait here, their streams' windows fill up and their producers wait, so nothing is
        lost. REALTIME offers every message at once: ``Join.latest`` keeps the newest of each
        input and counts the one it replaces as stale."""
        timeout = poll
        for seg in self._segments:
            join = seg.join
            if join is None:
                continue
            t0 = time.thread_time_ns()
            aligner = join.aligner
            room = len(seg.inflight) < seg.window and not join.ready
            if room or self._realtime:
                for k, feeder in enumerate(join.feeders):
                    arrived = feeder.arrived
                    while arrived:
                        item = arrived[0]
                        if item is _END:
                            arrived.popleft()
                            aligner.end(k)
                        elif not aligner.wants(k):
                            break
                        else:
                            arrived.popleft()
                            try:
                                aligner.offer(k, item, item[0].get("timestamp_ms"))
                            except Exception as exc:
                                self._fail(FlowError(
                                    f"node {join.name!r} (task 0) raised {type(exc).__name__} "
                                    f"while pairing its inputs: {exc}",
                                    node=join.name, task=0,
                                    remote_traceback=traceback.format_exc(),
                                ))
                                return None
            if room:
                join.ready.extend(aligner.poll())
            join.cpu_ns += time.thread_time_ns() - t0
            while join.ready and len(seg.inflight) < seg.window:
                self._send(seg, join, join.ready.popleft())
            if aligner.done and not join.ready and not seg.ending:
                seg.ending = True
                seg.inflight.append((_END, None))
            deadline = aligner.deadline()
            # While the stream after it is full, no set can go: nothing is due before room.
            if deadline is not None and len(seg.inflight) < seg.window:
                timeout = min(timeout, max(0.0, deadline - aligner.clock()))
        return timeout

    def _send(self, seg: _Segment, join: _Join, group: tuple[Any, ...]) -> None:
        """Send a set on through the JOIN's stream: the metadata of its messages merged as the
        process engine's JOIN merges them, the outputs each input carries (None for an input
        missing from the set)."""
        metas = [None if item is None else item[0] for item in group]
        meta = set_meta([inp.sources for inp in join.inputs], metas, join.sets)
        join.sets += 1
        inputs: dict[int, Any] = {}
        for inp, item in zip(join.inputs, group, strict=True):
            if item is None:
                for node_id in inp.carries:
                    inputs[node_id] = _NONE_PAIR
            else:
                inputs.update(item[1])
        self._submit(seg, meta, inputs)

    def _harvest(
        self, ray: Any, pending: dict[Any, _Task], timeout: float
    ) -> list[tuple[_Task, Any]] | None:
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

    def _poll_counters(self, timeout: float) -> None:
        """Ask the actors for their counters, the last stage first and the producer last, so
        that a snapshot never shows more messages delivered than produced. An actor answers
        after the calls queued on it (a producer at once, and what it is doing too), so this
        takes up to ``timeout``; the rows are kept only if every live actor answered in time:
        a snapshot stays whole."""
        import ray

        deadline = time.monotonic() + timeout
        answers: list[tuple[_Task, Any]] = []
        for index in reversed(range(len(self._stages))):
            pending = {self._control(t, "look" if t.spec.kind == PRODUCER else "stats").remote(): t
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
                self._looked(task, answer)
            else:
                task.row = answer

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
            self._loose.append(self._control(producer, "abort").remote())
        closes: dict[Any, _Task] = {}
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
                    self._fail(self._failure_error(failure), task)
            if deadline is None:
                self._watch(ray)
                self._check_closes(time.monotonic())
        self._kill_actors()

    def _check_closes(self, now: float) -> None:
        """A close() that has not returned ``stop_timeout`` seconds after the task's last call
        fails the flow, naming it; its actor is killed with the others."""
        assert self._config is not None
        timeout = self._config.stop_timeout
        for task in self._tasks:
            if (task.phase == P_CLOSE and not task.failed and not task.dead
                    and now - task.since >= timeout):
                self._fail(close_timeout_error(task.spec.name, task.worker, timeout), task)

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
            return (self._doing(task, seen), self._doing_s(task, seen),
                    self._stalled(task, seen))

        snapshot = FlowStats.from_block(
            layout.pack({(t.stage, t.worker): t.counters() for t in tasks}), layout,
            running=running, elapsed_s=elapsed, errors=failed, inbox_queued=queued,
            doing=what, pool_slots_in_use=None if running else 0,
        )
        # The driver runs the JOINs (no actor, no row): their counters come from its Aligners.
        return dataclasses.replace(snapshot, joins=self._join_stats())

    def _join_stats(self) -> tuple[JoinStats, ...]:
        """The JoinStats of every JOIN, as the process engine counts them: from its Aligner,
        and from the counters of the actors of each input's stream. A JOIN run by the driver
        never drops a set (it sends sets on only when there is room after it)."""
        assert self._plan is not None
        stages = self._plan.stages

        def total(index: int, field: int) -> int:
            node_id = stages[index].spec.node_id
            return sum(t.row[field] for t in self._tasks if t.spec.node_id == node_id)

        out = []
        for join in self._joins:
            inputs = []
            for inp, feeder, counts in zip(join.inputs, join.feeders, join.aligner.counts(),
                                           strict=True):
                head = feeder.join  # an inner JOIN: the sets it made
                inputs.append(JoinInputStats(
                    name=inp.name,
                    produced=head.sets if head is not None else total(inp.stages[0], IN),
                    dropped=sum(total(i, DROPPED) for i in inp.stages
                                if stages[i].spec.kind not in (MERGE, JOIN)),
                    received=counts.received, used=counts.used, stale=counts.stale,
                    unmatched=counts.unmatched, buffered=counts.buffered,
                    waited_s=counts.waited_s,
                ))
            out.append(JoinStats(
                name=join.name, policy=repr(join.policy), sets=join.sets,
                partial=join.aligner.partial, dropped=0, inputs=tuple(inputs),
                cpu_s=join.cpu_ns / 1e9,
            ))
        return tuple(out)


def process_started(pid: int) -> int | None:
    """When process ``pid`` of this machine started (clock ticks since boot, from /proc), or
    None when it is gone, a zombie, or /proc is not there: with the pid it names one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


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


def _shutdown_running() -> None:
    """At interpreter exit, before Ray disconnects: end the Ray flows still running."""
    for engine in list(_running):
        engine.abort()
        if not engine.wait(10):
            engine.kill()
            engine.wait(5)


__all__ = ["INSTALL_HINT", "RayEngine", "default_window", "ray_available"]
