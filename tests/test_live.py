"""Live sources: reconnecting stream readers, read and open timeouts, the MJPEG preview.

Everything listens on 127.0.0.1. Waits are bounded by pytest-timeout and by polls with a
deadline; no test asserts how long something took.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import wait_for
from video_helpers import MjpegServer as StreamingServer
from video_helpers import assert_clean, expected_frame, mean_abs_diff, run_flow

from videoflow.consumers import MjpegServer
from videoflow.core import BATCH, REALTIME, ConsumerNode, Flow
from videoflow.errors import FlowError
from videoflow.producers import MovingShapesProducer, StreamReader, VideoUrlReader

W, H = 160, 120


class MetaLog(ConsumerNode):
    """Appends the metadata of every message, and its frame's mean, as one JSON line."""

    def __init__(self, path: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = path

    def open(self) -> None:
        self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 (closed in close())

    def consume(self, value: Any) -> None:
        frame = value[1] if isinstance(value, tuple) else value
        record = {k: v for k, v in self.meta.items() if isinstance(v, (int, float, str))}
        record["shape"] = list(frame.shape)
        if isinstance(value, tuple):
            record["tuple_index"] = value[0]
        self._f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._f.close()


def read_log(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



@contextlib.contextmanager
def camera(port: int, fps: float = 20.0) -> Iterator[Flow]:
    """A flow that plays synthetic frames into an MjpegServer on ``port``, like an IP camera."""
    producer = MovingShapesProducer(W, H, count=None, fps=fps, name="shapes")
    server = MjpegServer(port, max_fps=None, name="preview")(producer)
    flow = Flow([producer], [server], flow_type=REALTIME, flow_options={"progress": False})
    flow.run()
    try:
        yield flow
    finally:
        flow.stop()
        flow.join(30)


class SilentServer(StreamingServer):
    """Accepts connections and sends nothing. With ``frames``, the first connection is sent
    that many MJPEG frames first (a camera that then freezes)."""

    def __init__(self, frames: int = 0) -> None:
        super().__init__(nb_frames=frames, stall=True, width=W, height=H)
        self.accepted = 0
        self.conns: list[socket.socket] = []

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for conn in self.conns:
            conn.close()

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            self.accepted += 1
            if self.accepted == 1 and self.nb_frames:
                threading.Thread(target=self._first, args=(conn,), daemon=True).start()

    def _first(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self._stream(conn)  # the frames, then silence until closed


# -- reconnecting --------------------------------------------------------------------------------
@pytest.mark.timeout(150)
def test_stream_reader_rides_out_a_restart_of_the_camera(tmp_path):
    """The reader reads the project's own MjpegServer; the server stops and comes back on the
    same port: the reader's flow keeps going, frames resume, the reconnect is counted."""
    port, log = free_port(), str(tmp_path / "meta.jsonl")
    url = f"http://127.0.0.1:{port}/stream.mjpg"
    with camera(port):
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{port}/"), 30, "the camera's server")
        reader = StreamReader(
            url, read_timeout=3.0, open_timeout=3.0, backoff=0.2, backoff_max=1.0,
            reconnect_timeout=60.0, name="reader",
        )  # fmt: skip
        sink = MetaLog(log, name="log")(reader)
        flow = Flow([reader], [sink], flow_type=REALTIME, flow_options={"progress": False})
        flow.run()
        try:
            wait_for(lambda: len(read_log(log)) >= 10, 60, "frames before the restart")
        except BaseException:
            flow.abort()
            flow.join(20)
            raise
    # The camera is gone now; the reader's flow must still run.
    try:
        time.sleep(1.0)
        assert flow.stats().running
        before = len(read_log(log))
        with camera(port):
            wait_for(
                lambda: any(r.get("reconnected", 0) >= 1 for r in read_log(log)), 60,
                "frames after the restart",
            )  # fmt: skip
            wait_for(lambda: len(read_log(log)) >= before + 5, 30, "more frames")
            assert flow.stats().running
        flow.stop()
        assert flow.join(30)
    finally:
        if flow.stats().running:
            flow.abort()
            flow.join(20)
    records = read_log(log)
    stats = flow.stats()
    node = stats.node("reader")
    assert stats.errors == 0
    assert node.reconnects >= 1 and node.offline_s > 0
    assert node.tasks[0].reconnects == node.reconnects
    first_back = next(r for r in records if r.get("reconnected", 0) >= 1)
    assert first_back["gap_ms"] > 0
    assert sum(1 for r in records if r.get("reconnected", 0) >= 1) >= 5
    assert all(r["shape"] == [H, W, 3] for r in records)
    assert [r["index"] for r in records] == sorted(r["index"] for r in records)
    assert stats.produced == stats.delivered + stats.dropped
    assert_clean()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.mark.timeout(60)
def test_silent_server_open_times_out_naming_the_url(tmp_path):
    """A server that accepts and then sends nothing: OpenCV's open gives up after
    open_timeout, and the flow fails naming the URL (a source missing at the start is an
    error, not an outage, even with reconnect on)."""
    with SilentServer() as server:
        reader = StreamReader(server.url, open_timeout=1.0, read_timeout=1.0, name="camera")
        with pytest.raises(FlowError, match=re.escape(server.url)) as info:
            run_flow(reader, [MetaLog(str(tmp_path / "m.jsonl"))(reader)])
    assert info.value.node == "camera"
    assert server.accepted >= 1


@pytest.mark.timeout(90)
def test_frozen_stream_reconnects_then_gives_up_naming_the_url(tmp_path):
    """A stream that sends 4 frames and freezes, then accepts reconnections that stay
    silent: the read timeout fires, the reader retries with backoff, and after
    reconnect_timeout the flow ends with an error naming the URL; the 4 frames arrived."""
    log = str(tmp_path / "m.jsonl")
    with SilentServer(frames=4) as server:
        reader = StreamReader(
            server.url, read_timeout=1.0, open_timeout=1.0, backoff=0.1, backoff_max=0.5,
            reconnect_timeout=3.0, name="camera",
        )  # fmt: skip
        with pytest.raises(FlowError, match=re.escape(server.url) + ".*not back after") as info:
            # (the 4 frames come in a burst: a queue of 4 that drops the newest keeps them all)
            run_flow(reader, [MetaLog(log, realtime_drop="newest")(reader)], flow_type=REALTIME)
    assert info.value.node == "camera"
    assert server.accepted >= 2  # it did try again
    assert len(read_log(log)) == 4


@pytest.mark.timeout(90)
def test_stop_during_an_outage_ends_the_flow_cleanly(tmp_path):
    """While the reader waits for a lost stream (for up to 10 minutes here), flow.stop()
    still ends the flow, without an error."""
    log = str(tmp_path / "m.jsonl")
    with SilentServer(frames=3) as server:
        reader = StreamReader(
            server.url, read_timeout=1.0, open_timeout=1.0, reconnect_timeout=600.0,
            name="camera",
        )  # fmt: skip
        sink = MetaLog(log, realtime_drop="newest")(reader)  # keeps a burst of 3 (REALTIME)
        flow = Flow([reader], [sink], flow_options={"progress": False})
        flow.run()
        try:
            wait_for(lambda: server.accepted >= 2, 30, "a reconnect attempt")
            flow.stop()
            assert flow.join(30), "stop did not end a flow waiting for its source"
        finally:
            if flow.stats().running:
                flow.abort()
                flow.join(20)
    assert flow.stats().errors == 0
    assert len(read_log(log)) == 3
    assert_clean()


@pytest.mark.timeout(60)
def test_original_url_reader_ends_cleanly_when_its_retries_are_used_up(tmp_path):
    """videoflow 0.2.10's VideoUrlReader(url, nb_frames, nb_retries): a lost stream is
    retried nb_retries times, then the flow ends without an error, as it did there; the
    values are (index from 1, RGB frame)."""
    log = str(tmp_path / "m.jsonl")
    with SilentServer(frames=3) as server:
        reader = VideoUrlReader(server.url, -1, 2, read_timeout=1.0, open_timeout=1.0)
        stats = run_flow(reader, [MetaLog(log)(reader)])
    assert stats.errors == 0 and stats.delivered == 3
    assert server.accepted == 3  # the first connection and two retries
    assert [r["tuple_index"] for r in read_log(log)] == [1, 2, 3]


# -- the MJPEG preview ---------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_mjpeg_server_page_snapshot_and_stream_outside_a_flow():
    server = MjpegServer(0, max_fps=None)
    server.open()
    try:
        assert server._server is not None
        base = f"http://127.0.0.1:{server._server.server_address[1]}"
        frame = expected_frame(3, W, H)
        server.consume(frame)
        with urllib.request.urlopen(base + "/", timeout=5) as resp:
            page = resp.read().decode()
        assert "<img src='/stream.mjpg'" in page
        with urllib.request.urlopen(base + "/snapshot.jpg", timeout=5) as resp:
            assert resp.headers["Content-Type"] == "image/jpeg"
            jpeg = np.frombuffer(resp.read(), np.uint8)
        assert mean_abs_diff(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), frame) < 6
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + "/nothing", timeout=5)
        assert info.value.code == 404
        # OpenCV's own URL reader reads the stream back
        pump = _Pump(server, [expected_frame(i, W, H) for i in range(5)])
        with pump:
            cap = cv2.VideoCapture(base + "/stream.mjpg", cv2.CAP_FFMPEG)
            ok, got = cap.read()
            cap.release()
        assert ok and got.shape == (H, W, 3)
    finally:
        server.close()


class _Pump:
    """Feeds frames to an open MjpegServer from a thread, round and round, until closed."""

    def __init__(self, server: MjpegServer, frames: list[np.ndarray]) -> None:
        self.server, self.frames = server, frames
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Pump:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            self.server.consume(self.frames[i % len(self.frames)])
            i += 1
            time.sleep(0.02)


def test_mjpeg_server_encodes_at_most_max_fps():
    server = MjpegServer(0, max_fps=0.001)  # one picture per 1000 s
    server.open()
    try:
        for i in range(10):
            server.consume(expected_frame(i, W, H))
        assert server._latest is not None and server._latest.seq == 1
    finally:
        server.close()


def test_mjpeg_server_rejects_bad_arguments():
    with pytest.raises(ValueError, match="port"):
        MjpegServer(70000)
    with pytest.raises(ValueError, match="max_fps"):
        MjpegServer(8080, max_fps=0)
    with pytest.raises(ValueError, match="quality"):
        MjpegServer(8080, quality=0)


@pytest.mark.timeout(120)
def test_a_stalled_viewer_never_holds_up_the_flow_and_others_keep_watching(tmp_path):
    """Three viewers: one connects and never reads (its socket buffers fill up), two read
    with OpenCV. A BATCH flow (nothing dropped) goes on, the readers get fresh pictures,
    every frame produced is consumed, and the stalled viewer does not hold up the end."""
    port = free_port()
    producer = MovingShapesProducer(640, 480, count=None, fps=30, name="shapes")
    server = MjpegServer(port, max_fps=None, quality=95, name="preview")(producer)
    flow = Flow([producer], [server], flow_type=BATCH, flow_options={"progress": False})
    flow.run()
    stalled = socket.socket()
    try:
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{port}/"), 30, "the preview server")
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")  # and never read
        means: list[list[float]] = [[], []]
        threads = [
            threading.Thread(target=_watch, args=(port, means[k], 8), daemon=True)
            for k in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        in_before = flow.stats().node("preview").messages_in
        wait_for(
            lambda: flow.stats().node("preview").messages_in >= in_before + 30, 30,
            "frames while the stalled viewer is connected",
        )  # fmt: skip
        flow.stop()
        assert flow.join(30), "the flow did not end with a stalled viewer connected"
    finally:
        stalled.close()
        if flow.stats().running:
            flow.abort()
            flow.join(20)
    stats = flow.stats()
    assert stats.produced == stats.delivered and stats.errors == 0
    for seen in means:
        assert len(seen) == 8
        assert len(set(seen)) > 1  # the pictures moved on
    assert_clean()


@pytest.mark.timeout(60)
def test_consume_never_waits_for_a_viewer():
    """consume() only swaps the newest JPEG in: 200 calls return while a viewer that reads
    nothing is connected (a blocking send would hang here)."""
    server = MjpegServer(0, max_fps=None)
    server.open()
    stalled = socket.socket()
    try:
        assert server._server is not None and server._latest is not None
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(server._server.server_address)
        stalled.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
        wait_for(lambda: server._latest.viewers == 1, 10, "the viewer")  # type: ignore[union-attr]
        for i in range(200):
            server.consume(expected_frame(i, W, H))
        assert server._latest.seq >= 1
    finally:
        stalled.close()
        server.close()


def _watch(port: int, means: list[float], count: int) -> None:
    cap = cv2.VideoCapture(f"http://127.0.0.1:{port}/stream.mjpg", cv2.CAP_FFMPEG)
    try:
        while len(means) < count:
            ok, frame = cap.read()
            if not ok:
                return
            means.append(float(frame.mean()))
    finally:
        cap.release()


@pytest.mark.timeout(60)
def test_mjpeg_server_on_a_busy_port_fails_naming_it():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        producer = MovingShapesProducer(W, H, count=3)
        server = MjpegServer(port, name="preview")(producer)
        with pytest.raises(FlowError, match=f"127.0.0.1:{port}") as info:
            run_flow(producer, [server])
    assert info.value.node == "preview"


@pytest.mark.timeout(150)
def test_camera_sample_prints_its_addresses_and_serves_them(tmp_path):
    """samples/camera_realtime.py on the project's own MJPEG camera: it prints the source
    with its reconnect setting, the preview and the metrics addresses at start, and both
    answer while it runs."""
    import subprocess
    import sys

    pytest.importorskip("prometheus_client")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cam, preview, metrics = free_port(), free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with camera(cam):
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{cam}/"), 30, "the camera's server")
        proc = subprocess.Popen(
            [sys.executable, os.path.join(root, "samples", "camera_realtime.py"),
             f"http://127.0.0.1:{cam}/stream.mjpg", "--seconds", "8",
             "--preview-port", str(preview), "--metrics-port", str(metrics)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        try:
            wait_for(lambda: _http_ok(f"http://127.0.0.1:{preview}/"), 60, "the preview")
            wait_for(lambda: _http_ok(f"http://127.0.0.1:{metrics}/metrics"), 30, "metrics")
            out, _ = proc.communicate(timeout=90)
        finally:
            proc.kill()
    assert proc.returncode == 0, out
    lines = out.splitlines()
    assert "(reconnect on, gives up after 60 s away)" in lines[0], out
    assert lines[1] == "realtime: a full queue drops the oldest frame (freshest frame first)"
    assert lines[2] == f"preview: http://127.0.0.1:{preview}/", out
    assert lines[3] == f"metrics: http://127.0.0.1:{metrics}/metrics", out
    assert "reconnects=0" in lines[-1] and "sink: in=" in lines[-1], out
    assert "age p50=" in lines[-1], out
    assert_clean()
