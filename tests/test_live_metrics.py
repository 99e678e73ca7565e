"""Prometheus metrics: ``Flow.serve_metrics`` and ``videoflow run --metrics-port``, read back
with prometheus_client's own parser. Everything listens on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import urllib.request

import pytest
from video_helpers import assert_clean

from videoflow.consumers import VoidConsumer
from videoflow.core import BATCH, REALTIME, Flow
from videoflow.processors import IdentityProcessor
from videoflow.producers import MovingShapesProducer

parser = pytest.importorskip("prometheus_client.parser")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} of a metrics endpoint."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def shapes_flow(size: tuple[int, int], count: int, middle: IdentityProcessor) -> Flow:
    """shapes -> ``middle`` -> last, BATCH."""
    producer = MovingShapesProducer(*size, count=count, name="shapes")
    sink = VoidConsumer(name="last")(middle(producer))
    return Flow([producer], [sink], flow_type=BATCH, flow_options={"progress": False})


@pytest.mark.timeout(90)
def test_serve_metrics_exposes_the_flow_counters_per_node_and_task():
    flow = shapes_flow((160, 120), 40, IdentityProcessor(nb_tasks=2, name="ident"))
    with flow.serve_metrics(0) as server:
        assert server.host == "127.0.0.1" and server.port > 0
        before = scrape(server.url)  # not started: the flow is left out
        assert "videoflow_produced_total" not in before
        flow.run()
        assert flow.join(60)
        samples = scrape(server.url)
    stats = flow.stats()
    assert value(samples, "videoflow_produced_total", flow="1") == stats.produced == 40
    assert value(samples, "videoflow_delivered_total", flow="1") == stats.delivered == 40
    assert value(samples, "videoflow_running", flow="1") == 0
    for node in stats.nodes:
        labels = {"flow": "1", "node": node.name, "kind": node.kind}
        assert value(samples, "videoflow_node_messages_in_total", **labels) == node.messages_in
        assert value(samples, "videoflow_node_dropped_total", **labels) == node.dropped
        assert value(samples, "videoflow_node_reconnects_total", **labels) == 0
        assert value(samples, "videoflow_node_busy_ratio", **labels) == pytest.approx(node.busy)
        assert value(samples, "videoflow_node_tasks", **labels) == node.nb_tasks
        for task in node.tasks:
            tl = {"flow": "1", "node": node.name, "task": str(task.task)}
            assert value(samples, "videoflow_task_messages_in_total", **tl) == task.messages_in
            assert value(samples, "videoflow_task_busy_seconds_total", **tl) == pytest.approx(
                task.busy_s
            )
    workers = [k for k in samples["videoflow_task_messages_in_total"] if ("node", "ident") in k]
    assert len(workers) == 2
    with pytest.raises(OSError):  # closed: the port is free again
        urllib.request.urlopen(server.url, timeout=5)
    assert_clean()


@pytest.mark.timeout(90)
def test_metrics_give_the_frame_age_of_consumers_and_skipped_messages():
    flow = shapes_flow((64, 48), 30, IdentityProcessor(every=3, name="every3"))
    flow.run()
    assert flow.join(60)
    with flow.serve_metrics(0) as server:
        samples = scrape(server.url)
    age = flow.stats().node("last").frame_age
    assert age is not None
    last = {"flow": "1", "node": "last", "kind": "consumer"}
    assert value(samples, "videoflow_node_frame_age_seconds_count", **last) == 30
    assert value(samples, "videoflow_node_frame_age_seconds_sum", **last) == pytest.approx(
        age.mean_s * 30
    )
    inf = value(samples, "videoflow_node_frame_age_seconds_bucket", le="+Inf", **last)
    assert inf == 30
    buckets = sorted(
        (float(dict(k)["le"]), v)
        for k, v in samples["videoflow_node_frame_age_seconds_bucket"].items()
        if dict(k)["node"] == "last"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    below_max = [v for le, v in buckets if le >= age.max_s]
    assert below_max and below_max[0] == 30
    assert value(samples, "videoflow_node_frame_age_p99_seconds", **last) == age.p99_s
    assert value(samples, "videoflow_node_frame_age_p50_seconds", **last) == age.p50_s
    shapes = {"flow": "1", "node": "shapes", "kind": "producer"}
    assert ("videoflow_node_frame_age_seconds_count", shapes) not in [
        (name, dict(k)) for name, series in samples.items() for k in series
    ]  # producers and processors have no frame age
    assert value(samples, "videoflow_node_skipped_total", flow="1", node="every3",
                 kind="processor") == 20  # fmt: skip
    assert_clean()


@pytest.mark.timeout(90)
def test_metrics_while_running():
    producer = MovingShapesProducer(160, 120, count=None, fps=50, name="shapes")
    sink = VoidConsumer(name="last")(producer)
    flow = Flow([producer], [sink], flow_type=REALTIME, flow_options={"progress": False})
    flow.run()
    server = flow.serve_metrics(0)
    try:
        samples = scrape(server.url)
        assert value(samples, "videoflow_running", flow="1") == 1
        assert "videoflow_task_reconnects_total" in samples
    finally:
        server.close()
        flow.stop()
        flow.join(30)
    assert_clean()


def test_metrics_on_a_busy_port_name_it():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        producer = MovingShapesProducer(16, 16, count=1)
        flow = Flow([producer], [VoidConsumer()(producer)])
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            flow.serve_metrics(port)


def test_metrics_without_prometheus_client_say_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    producer = MovingShapesProducer(16, 16, count=1)
    flow = Flow([producer], [VoidConsumer()(producer)])
    with pytest.raises(ImportError, match=r"videoflow-shm\[metrics\]"):
        flow.serve_metrics(0)


@pytest.mark.timeout(120)
def test_videoflow_run_metrics_port(tmp_path):
    """``videoflow run --metrics-port P script.py``: the script's flows are served while it
    runs; the script itself scrapes the endpoint at its end and prints what it read."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "flow_script.py"
    script.write_text(
        textwrap.dedent(f"""
        import urllib.request
        from videoflow.core import BATCH, Flow
        from videoflow.consumers import VoidConsumer
        from videoflow.producers import MovingShapesProducer

        if __name__ == "__main__":
            producer = MovingShapesProducer(64, 48, count=12, name="shapes")
            flow = Flow([producer], [VoidConsumer(name="last")(producer)], flow_type=BATCH)
            flow.run()
            flow.join()
            url = "http://127.0.0.1:{port}/metrics"
            print(urllib.request.urlopen(url, timeout=10).read().decode())
        """)
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "videoflow.cli", "run", "--no-progress", "--metrics-port",
         str(port), str(script)],
        capture_output=True, text=True, timeout=100, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"metrics at http://127.0.0.1:{port}/metrics" in proc.stderr
    families = {
        f.name: f for f in parser.text_string_to_metric_families(proc.stdout)
    }
    produced = families["videoflow_produced"].samples
    assert [(s.labels["flow"], s.value) for s in produced] == [("1", 12.0)]
