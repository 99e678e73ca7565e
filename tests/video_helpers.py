"""Helpers of the video tests: module-level nodes (task processes import them by name), a flow
runner that checks nothing is left behind, and a tiny HTTP server that streams MJPEG."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any

import cv2
import numpy as np
from conftest import wait_clean

from videoflow.core import BATCH, ConsumerNode, Flow, Node
from videoflow.engine.stats import FlowStats
from videoflow.producers.shapes import render_frame


class FrameDump(ConsumerNode):
    """Saves every frame it gets as ``<index>.npy`` and its metadata as one JSON line."""

    def __init__(self, folder: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.folder = folder

    def open(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        self._log = open(os.path.join(self.folder, "meta.jsonl"), "a", buffering=1)  # noqa: SIM115

    def consume(self, *values: Any) -> None:
        index = self.meta["index"]
        for k, value in enumerate(values):
            np.save(os.path.join(self.folder, f"{index:06d}-{k}.npy"), np.asarray(value))
        meta = {k: v for k, v in self.meta.items() if isinstance(v, (int, float, str))}
        self._log.write(json.dumps(meta) + "\n")

    def close(self) -> None:
        self._log.close()


def load_dump(folder: str, k: int = 0) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """The frames (input ``k``) and metadata a FrameDump wrote, in index order."""
    names = sorted(n for n in os.listdir(folder) if n.endswith(f"-{k}.npy"))
    frames = [np.load(os.path.join(folder, n)) for n in names]
    with open(os.path.join(folder, "meta.jsonl")) as f:
        metas = sorted((json.loads(line) for line in f), key=lambda m: m["index"])
    return frames, metas


def assert_clean() -> None:
    entries, children = wait_clean()
    assert not children, f"child processes left behind: {children}"
    assert not entries, f"shared memory / queues left behind: {entries}"


def run_flow(
    producer: Node, consumers: list[Node], flow_type: str = BATCH, timeout: float = 60.0
) -> FlowStats:
    """Run a flow to its end (join's errors propagate), then check nothing is left behind."""
    flow = Flow([producer], consumers, flow_type=flow_type)
    flow.run()
    try:
        assert flow.join(timeout), "flow did not end in time"
    finally:
        if flow.stats().running:
            flow.abort()
            flow.join(10)
        assert_clean()
    return flow.stats()


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def expected_frame(index: int, width: int, height: int, with_person: bool = False) -> np.ndarray:
    return render_frame(index, width, height, with_person=with_person)


class MjpegServer:
    """Serves ``nb_frames`` synthetic JPEG frames as an HTTP multipart stream, then either
    stalls (keeps the connection open, sending nothing) or closes it."""

    def __init__(self, nb_frames: int, stall: bool, width: int = 160, height: int = 120) -> None:
        self.nb_frames, self.stall = nb_frames, stall
        self.width, self.height = width, height
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/stream.mjpg"

    def __enter__(self) -> MjpegServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn, contextlib.suppress(OSError):
                self._stream(conn)

    def _stream(self, conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
        )
        for i in range(self.nb_frames):
            _, jpg = cv2.imencode(".jpg", render_frame(i, self.width, self.height))
            head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
            conn.sendall(head + jpg.tobytes() + b"\r\n")
        while self.stall and not self.closing.is_set():
            time.sleep(0.05)
