"""Flow: a validated graph of nodes and the handle on its run."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from videoflow.config import FlowConfig
from videoflow.core.constants import BATCH, FLOW_TYPES, REALTIME
from videoflow.core.graph import resolve_joins, sorted_nodes
from videoflow.core.node import Node, OneTaskProcessorNode, ProducerNode
from videoflow.engine import progress
from videoflow.engine.base import Engine
from videoflow.engine.engines import make_engine
from videoflow.engine.plan import StageSpec, build_plan
from videoflow.engine.report import Report
from videoflow.engine.stats import FlowStats

if TYPE_CHECKING:
    from videoflow.metrics import MetricsServer

log = logging.getLogger(__name__)


class Flow:
    """A graph from its producers to its consumers, run by an engine (by default one OS
    process per task).

    producers:    the flow's producers; where the streams of several meet, a JOIN pairs their
                  messages (``join=`` on that node, or the flow type's default: see
                  :class:`videoflow.core.Join`). Each stream ends when its producer does; the
                  flow ends when every producer has ended.
    consumers:    the consumers that end its branches.
    flow_type:    REALTIME (drop messages that downstream cannot take in time) or BATCH
                  (never drop: a full queue makes its sender wait).
    flow_options: overrides of :class:`videoflow.config.FlowConfig` fields
                  (``queue_depth``, ``start_method``, ``debug``, ``engine``, ...).
    engine:       what runs the flow: "process" (the default), "ray", another registered name,
                  or an object implementing :class:`videoflow.engine.base.Engine`. Unset, the
                  ``engine`` flow option or the VIDEOFLOW_ENGINE environment variable decides.

    The graph is checked here: a cycle, no producer, a consumer used as a parent, a node cut
    off from the producers or from every consumer, ``join=`` where streams do not first meet,
    or a stream that meets two different sets of streams raise ValueError.
    """

    def __init__(
        self,
        producers: list[Node],
        consumers: list[Node],
        flow_type: str = REALTIME,
        flow_options: Mapping[str, Any] | None = None,
        engine: str | Engine | None = None,
    ) -> None:
        if flow_type not in FLOW_TYPES:
            raise ValueError(f"flow_type must be BATCH or REALTIME, got {flow_type!r}")
        if engine is not None and flow_options is not None and "engine" in flow_options:
            raise ValueError(
                "the engine is given twice (engine= and flow_options['engine']): give it once"
            )
        self._nodes = sorted_nodes(list(producers), list(consumers))
        self._joins = resolve_joins(self._nodes, flow_type)  # join point id -> its policy
        self._flow_type = flow_type
        self._config = FlowConfig.from_options(flow_options)
        build_plan(self._specs(), self._config)  # streams that overlap without nesting: refused
        self._chosen: Engine = make_engine(engine, self._config)
        self._engine: Engine | None = None  # the chosen engine, once run() started it
        self._progress: progress.Progress | None = None

    @property
    def flow_type(self) -> str:
        return self._flow_type

    @property
    def config(self) -> FlowConfig:
        return self._config

    @property
    def engine(self) -> Engine:
        """The engine that runs (or will run) this flow."""
        return self._chosen

    @property
    def nodes(self) -> list[Node]:
        """The nodes in the order their tasks are chained."""
        return list(self._nodes)

    def _specs(self) -> list[StageSpec]:
        return [
            StageSpec(
                node=node,
                name=node.name,
                kind=node.kind,
                node_id=node.id,
                reads=tuple(p.id for p in node.parents),
                nb_tasks=node.nb_tasks,
                device_type=node.device_type,
                one_task=isinstance(node, OneTaskProcessorNode),
                items=node.parent_items,
                read_names=tuple(p.name for p in node.parents),
                join=self._joins.get(node.id),
                realtime_drop=node.realtime_drop,
                every=node.every,
                skip_when_busy=node.skip_when_busy and self._flow_type == REALTIME,
            )
            for node in self._nodes
        ]

    def run(self) -> None:
        """Start the flow and return at once; ``join()`` waits for its end."""
        if self._engine is not None:
            raise RuntimeError("this flow was already started: a Flow runs once")
        engine = self._engine = self._chosen
        engine.start(self._specs(), self._flow_type == REALTIME, self._config)
        options = progress.current_run_options()
        if options is not None:
            options.flows.append(self)
        if progress.wanted(self._config.progress):
            self._progress = progress.Progress(engine.stats, self._expected_count()).start()

    def _expected_count(self) -> int | None:
        """Values the producers will make in all (None when one of them cannot tell)."""
        total = 0
        for producer in self._nodes:
            if not isinstance(producer, ProducerNode):
                continue
            try:
                count = producer.expected_count()
            except Exception:
                log.debug("expected_count() of %s failed", producer.name, exc_info=True)
                return None
            if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
                return None
            total += count
        return total or None

    def _end_progress(self) -> None:
        if self._progress is not None:
            self._progress.close()

    def _started(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the flow has not been started: call run() first")
        return self._engine

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the end of the flow; raise FlowError if a task failed.

        Ctrl-C while waiting stops the flow gracefully (in batch mode every value already
        produced is still delivered); a second Ctrl-C kills its tasks and re-raises.
        Returns False only when ``timeout`` elapsed first.
        """
        engine = self._started()
        interrupted = stopping = False
        waited = 0.0
        while True:
            try:
                if interrupted and not stopping:
                    # Inside the try: a second Ctrl-C that comes while the stop is being
                    # asked for, or right after the message, is a kill like any other.
                    stopping = True
                    engine.stop()
                    log.warning("interrupted: stopping the flow (Ctrl-C again to kill it)")
                if engine.wait(0.1):
                    break
                waited += 0.1
                if timeout is not None and waited >= timeout:
                    return False
            except KeyboardInterrupt:
                if interrupted:
                    engine.kill()
                    engine.wait()
                    self._end_progress()
                    raise
                interrupted = True
        self._end_progress()
        if engine.errors:
            # A copy: raised, an exception holds this frame, which holds the engine; raising
            # the engine's own error object would tie them in a cycle only the gc breaks.
            raise copy.copy(engine.errors[0])
        return True

    def stop(self) -> None:
        """Ask the flow to end: the producer stops and what it produced drains."""
        self._started().stop()

    def abort(self) -> None:
        """End the flow at once, dropping what is in flight."""
        self._started().abort()

    def stats(self) -> FlowStats:
        """Counters per node, live while running and final after ``join()``, with the
        ``report_note()`` of the nodes that have one in ``notes``."""
        stats = self._started().stats()
        notes = {}
        for node in self._nodes:
            note = getattr(node, "report_note", None)
            text = note() if callable(note) else None
            if text:
                notes[node.name] = str(text)
        return dataclasses.replace(stats, notes=notes) if notes else stats

    def report(self) -> Report:
        """The bottleneck report: ``print(flow.report())`` shows a table per node (fps, busy,
        wait, drops) and a verdict naming the node that holds the flow back and what to do.
        Works while running and after ``join()``."""
        return Report.from_stats(self.stats())

    def serve_metrics(self, port: int = 9100, host: str = "127.0.0.1") -> MetricsServer:
        """Serve this flow's counters (``stats()``) to Prometheus at
        ``http://host:port/metrics`` until ``close()`` on the returned server (or the process
        ends). Callable before or after ``run()``. Needs the ``prometheus_client`` package:
        ``pip install "videoflow-shm[metrics]"``. See videoflow/metrics.py for the series."""
        from videoflow.metrics import MetricsServer

        return MetricsServer(lambda: [self], port, host)

    def __enter__(self) -> Flow:
        self.run()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._engine is None:
            return
        if exc_type is not None:
            self._engine.abort()
            self._engine.wait()
            self._end_progress()
            return
        self.join()


__all__ = ["BATCH", "REALTIME", "Flow"]
