"""Prometheus metrics of running flows: ``Flow.serve_metrics(port)`` and
``videoflow run --metrics-port``.

The counters are those of ``Flow.stats()`` (engine/stats.py), read when Prometheus scrapes, so
serving them costs the flow nothing between scrapes. The text format and the HTTP server are
those of the maintained ``prometheus_client`` package, an optional dependency:
``pip install "videoflow-shm[metrics]"``.

Every series has a ``flow`` label: the flow's place in start order (``"1"`` for the flow of
``serve_metrics``; the n-th flow a script started under ``videoflow run``). Per task
(``node``, ``task``): messages in and out, drops, busy / wait / blocked / CPU seconds, busy
share, reconnects and offline seconds of live sources, messages skipped (``every=``,
``skip_when_busy``), errors, slots in use. Per node (``node``, ``kind``): the same counters
summed over its tasks, plus fps, capacity, busy share and queued messages; for consumers, the
age of the frames they received (``videoflow_node_frame_age_seconds``, a histogram with one
bucket per doubling from 1.024 ms, and its p50 and p99 as gauges). Per flow: produced,
delivered, dropped, errors, running, elapsed seconds, fps and cores busy. The server listens
on 127.0.0.1 unless given another address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from videoflow.engine.stats import FlowStats, FrameAge, NodeStats, TaskStats

PREFIX = "videoflow"
#: (name, help, value from a TaskStats or NodeStats): the counters tasks and nodes share
_COUNTS: tuple[tuple[str, str, Callable[[Any], float]], ...] = (
    ("messages_in", "Messages received (a producer: values it produced)", lambda s: s.messages_in),
    ("messages_out", "Messages passed downstream", lambda s: s.messages_out),
    ("dropped", "Messages dropped because the next queue was full (REALTIME)", lambda s: s.dropped),
    ("busy_seconds", "Seconds spent in the node's own code", lambda s: s.busy_s),
    ("wait_seconds", "Seconds spent waiting for input", lambda s: s.wait_s),
    ("blocked_seconds", "Seconds spent waiting for room downstream", lambda s: s.blocked_s),
    ("cpu_seconds", "CPU seconds used by the task processes", lambda s: s.cpu_s),
    ("reconnects", "Times a live source was lost and opened again", lambda s: s.reconnects),
    ("offline_seconds", "Seconds a live source was away", lambda s: s.offline_s),
    ("skipped", "Messages passed on with the node's last output instead of running it",
     lambda s: s.skipped),
)  # fmt: skip
# Frame-age histogram buckets: the stats buckets merged per doubling, from 2**10 us.
AGE_OCTAVE_FROM, AGE_OCTAVES = 10, 16


def age_histogram(age: FrameAge) -> tuple[list[tuple[str, float]], float]:
    """(cumulative ``(le, count)`` buckets ending with ``+Inf``, sum of ages in seconds) of a
    consumer's frame ages, for a Prometheus histogram."""
    from videoflow.engine.control import age_bucket_bounds

    edges = [(1 << e) * 1e-6 for e in range(AGE_OCTAVE_FROM, AGE_OCTAVE_FROM + AGE_OCTAVES)]
    counts = [0] * len(edges)
    for i, n in enumerate(age.buckets):
        high = age_bucket_bounds(i)[1]
        for k, edge in enumerate(edges):  # bucket bounds fall on the edges: none straddles
            if high <= edge * (1 + 1e-9):
                counts[k] += n
                break
    buckets, total = [], 0
    for edge, n in zip(edges, counts, strict=True):
        total += n
        buckets.append((repr(edge), float(total)))
    buckets.append(("+Inf", float(age.frames)))
    return buckets, age.mean_s * age.frames


def _prometheus() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core  # the metric families, not imported by the package
    except ImportError as exc:
        raise ImportError(
            "serving metrics needs the prometheus_client package: "
            'pip install "videoflow-shm[metrics]" (or pip install prometheus-client)'
        ) from exc
    return prometheus_client


def _snapshots(flows: Sequence[Any]) -> Iterator[tuple[str, FlowStats]]:
    """(flow label, stats) of every flow that has started."""
    for i, flow in enumerate(flows, 1):
        try:
            stats = flow.stats()
        except RuntimeError:  # not started yet
            continue
        yield str(i), stats


class FlowCollector:
    """A prometheus_client collector that turns ``Flow.stats()`` snapshots into metric
    families at every scrape. ``flows`` returns the flows to describe, in start order."""

    def __init__(self, flows: Callable[[], Sequence[Any]]) -> None:
        self.flows = flows

    def collect(self) -> Iterator[Any]:
        core = _prometheus().core
        counter, gauge = core.CounterMetricFamily, core.GaugeMetricFamily
        snapshots = list(_snapshots(self.flows()))

        def family(kind: Any, name: str, doc: str, labels: list[str]) -> Any:
            return kind(f"{PREFIX}_{name}", doc, labels=labels)

        # per flow
        flow_families = [
            (counter, "produced", "Values the producer made", lambda f: f.produced),
            (counter, "delivered", "Messages the last consumer received", lambda f: f.delivered),
            (counter, "flow_dropped", "Messages dropped anywhere in the flow", lambda f: f.dropped),
            (gauge, "errors", "Tasks that failed", lambda f: f.errors),
            (gauge, "running", "1 while the flow runs", lambda f: int(f.running)),
            (gauge, "elapsed_seconds", "Seconds the flow has run", lambda f: f.elapsed_s),
            (gauge, "fps", "Messages delivered per second of the run", lambda f: f.fps),
            (gauge, "cores_busy", "CPUs the flow's tasks kept busy on average",
             lambda f: f.cores_busy),
        ]  # fmt: skip
        for kind, name, doc, value in flow_families:
            fam = family(kind, name, doc, ["flow"])
            for label, stats in snapshots:
                fam.add_metric([label], value(stats))
            yield fam

        # per node, then per task
        nodes = [(label, node) for label, stats in snapshots for node in stats.nodes]
        tasks = [(label, node, task) for label, node in nodes for task in node.tasks]
        node_labels, task_labels = ["flow", "node", "kind"], ["flow", "node", "task"]
        for name, doc, value in _COUNTS:
            fam = family(counter, f"node_{name}", doc + ", summed over the node's tasks",
                         node_labels)  # fmt: skip
            for label, node in nodes:
                fam.add_metric([label, node.name, node.kind], value(node))
            yield fam
            fam = family(counter, f"task_{name}", doc + ", by one task", task_labels)
            for label, node, task in tasks:
                fam.add_metric([label, node.name, str(task.task)], value(task))
            yield fam

        yield from self._node_gauges(family, gauge, nodes, node_labels)
        yield from self._frame_ages(family, core.HistogramMetricFamily, gauge, nodes, node_labels)
        yield from self._task_gauges(family, gauge, tasks, task_labels)

    @staticmethod
    def _node_gauges(
        family: Callable[..., Any], gauge: Any, nodes: list[tuple[str, NodeStats]],
        labels: list[str],
    ) -> Iterator[Any]:  # fmt: skip
        specs: list[tuple[str, str, Callable[[NodeStats], float | None]]] = [
            ("node_tasks", "Tasks (processes) of the node", lambda n: n.nb_tasks),
            ("node_busy_ratio", "Share of the run the node's tasks spent in its code (0-1)",
             lambda n: n.busy),
            ("node_fps", "Messages the node received per second of the run", lambda n: n.fps),
            ("node_capacity_fps", "Messages per second the node could take, all tasks busy",
             lambda n: n.capacity),
            ("node_inbox_queued", "Messages waiting in the node's input queue",
             lambda n: n.inbox_queued),
            ("node_slots_in_use", "Shared-memory slots the node's pools hold now",
             lambda n: n.slots_in_use),
        ]  # fmt: skip
        for name, doc, value in specs:
            fam = family(gauge, name, doc, labels)
            for label, node in nodes:
                v = value(node)
                if v is not None:
                    fam.add_metric([label, node.name, node.kind], v)
            yield fam

    @staticmethod
    def _frame_ages(
        family: Callable[..., Any], histogram: Any, gauge: Any,
        nodes: list[tuple[str, NodeStats]], labels: list[str],
    ) -> Iterator[Any]:  # fmt: skip
        aged = [(label, node) for label, node in nodes if node.frame_age is not None]
        fam = family(histogram, "node_frame_age_seconds",
                     "Age of the frames a consumer received, from their producer to its call",
                     labels)  # fmt: skip
        for label, node in aged:
            assert node.frame_age is not None
            buckets, total = age_histogram(node.frame_age)
            fam.add_metric([label, node.name, node.kind], buckets, total)
        yield fam
        for q in ("p50", "p99"):
            fam = family(gauge, f"node_frame_age_{q}_seconds",
                         f"The {q} of the age of the frames a consumer received", labels)
            for label, node in aged:
                fam.add_metric([label, node.name, node.kind], getattr(node.frame_age, f"{q}_s"))
            yield fam

    @staticmethod
    def _task_gauges(
        family: Callable[..., Any], gauge: Any, tasks: list[tuple[str, NodeStats, TaskStats]],
        labels: list[str],
    ) -> Iterator[Any]:  # fmt: skip
        specs: list[tuple[str, str, Callable[[TaskStats], float | None]]] = [
            ("task_busy_ratio", "Share of the run the task spent in its node's code (0-1)",
             lambda t: t.busy),
            ("task_errors", "1 when the task failed", lambda t: t.errors),
            ("task_slots_in_use", "Shared-memory slots of the task's pools taken now",
             lambda t: t.slots_in_use),
        ]  # fmt: skip
        for name, doc, value in specs:
            fam = family(gauge, name, doc, labels)
            for label, node, task in tasks:
                v = value(task)
                if v is not None:
                    fam.add_metric([label, node.name, str(task.task)], v)
            yield fam


class MetricsServer:
    """An HTTP endpoint in this process that Prometheus scrapes (any path answers; use
    ``/metrics``). Stops with ``close()`` or at the end of a ``with`` block; otherwise it
    serves until the process exits, also after the flows ended (their final counters).

    flows: returns the flows to describe, in start order (``Flow.serve_metrics`` gives its
           own flow; ``videoflow run`` every flow the script starts).
    """

    def __init__(
        self, flows: Callable[[], Sequence[Any]], port: int, host: str = "127.0.0.1"
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int between 0 and 65535, got {port!r}")
        prometheus_client = _prometheus()
        self.registry = prometheus_client.CollectorRegistry(auto_describe=False)
        self.registry.register(FlowCollector(flows))
        try:
            started = prometheus_client.start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; is another "
                "program using the port? pick another one"
            ) from exc
        if not isinstance(started, tuple):
            raise ImportError(
                'serving metrics needs prometheus_client >= 0.20: pip install -U "videoflow-shm'
                '[metrics]"'
            )
        self._httpd, self._thread = started
        self.host = host
        self.port = int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5.0)
            self._httpd = None

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url}>"


__all__ = ["FlowCollector", "MetricsServer"]
