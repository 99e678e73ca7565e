"""A live preview in the browser: the frames a flow delivers, served as MJPEG over HTTP.

``MjpegServer`` is a consumer. In its task it runs a small threaded HTTP server: ``/`` is a page
that shows the stream, ``/stream.mjpg`` the stream itself (``multipart/x-mixed-replace``, which
browsers, VLC, ffmpeg and ``cv2.VideoCapture`` read), ``/snapshot.jpg`` the latest picture.

Only the latest frame is kept, as one JPEG (``cv2.imencode``). ``consume()`` encodes it (at
most ``max_fps`` times a second, and about once a second while nobody watches), swaps it in and
wakes the viewers; it never waits for one. Each viewer has a thread of its own that sends the
newest JPEG it has not sent yet, so a slow viewer skips pictures and never slows the flow or
the other viewers.
"""

from __future__ import annotations

import contextlib
import html
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2

from videoflow.consumers.video import _as_bgr
from videoflow.core.node import ConsumerNode

log = logging.getLogger(__name__)

BOUNDARY = "videoflow-frame"
#: while nobody watches, encode this often anyway, so that a new viewer sees a picture at once
_IDLE_INTERVAL_S = 1.0
#: a viewer that takes longer than this to accept one picture is dropped
_SEND_TIMEOUT_S = 10.0


class _Latest:
    """The newest JPEG, its number, and the viewers waiting for the next one."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.jpeg: bytes | None = None
        self.seq = 0
        self.closed = False
        self.viewers = 0

    def publish(self, jpeg: bytes) -> None:
        with self.cond:
            self.jpeg, self.seq = jpeg, self.seq + 1
            self.cond.notify_all()

    def newer_than(self, seen: int, timeout: float) -> tuple[int, bytes] | None:
        """The newest JPEG once there is one after ``seen``; None at timeout or close."""
        with self.cond:
            self.cond.wait_for(lambda: self.closed or self.seq > seen, timeout)
            if self.closed or self.seq <= seen or self.jpeg is None:
                return None
            return self.seq, self.jpeg

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], latest: _Latest, title: str) -> None:
        self.latest = latest
        self.title = title
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        super().__init__(address, _Handler)

    def drop_viewers(self) -> None:
        """Unblock every viewer thread (one may be stuck sending to a slow client)."""
        with self.lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._page()
        elif path == "/stream.mjpg":
            self._stream()
        elif path == "/snapshot.jpg":
            self._snapshot()
        else:
            self.send_error(404, "not here: see / , /stream.mjpg or /snapshot.jpg")

    def _page(self) -> None:
        title = html.escape(self.server.title)
        body = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{title}</title><style>"
            "body{margin:0;background:#111;color:#bbb;font:14px sans-serif;text-align:center}"
            "img{display:block;margin:0 auto;max-width:100vw;max-height:calc(100vh - 3em)}"
            "a{color:#8ab4f8}"
            "</style></head><body>"
            f"<img src='/stream.mjpg' alt='{title}'>"
            f"<p>{title} &middot; <a href='/stream.mjpg'>/stream.mjpg</a> &middot; "
            "<a href='/snapshot.jpg'>/snapshot.jpg</a></p></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _snapshot(self) -> None:
        got = self.server.latest.newer_than(0, timeout=_SEND_TIMEOUT_S)
        if got is None:
            self.send_error(503, "no frame yet")
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(got[1])))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(got[1])

    def _stream(self) -> None:
        server, latest = self.server, self.server.latest
        self.connection.settimeout(_SEND_TIMEOUT_S)
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Pragma", "no-cache")
        self.end_headers()
        with server.lock:
            server.connections.add(self.connection)
        with latest.cond:
            latest.viewers += 1
        seen = 0
        try:
            while not latest.closed:
                got = latest.newer_than(seen, timeout=0.5)
                if got is None:
                    continue
                seen, jpeg = got
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n"
                ).encode()
                self.wfile.write(head + jpeg + b"\r\n")
                self.wfile.flush()
        except OSError:  # the viewer left, or was too slow
            pass
        finally:
            with latest.cond:
                latest.viewers -= 1
            with server.lock:
                server.connections.discard(self.connection)


class MjpegServer(ConsumerNode):
    """Serves the frames it receives as a live MJPEG stream over HTTP, for a browser.

    port:     TCP port (0: any free one, named in the task's log).
    host:     address to listen on; the default answers this machine only. Use "0.0.0.0" to
              let other machines watch (anyone who can reach the port can).
    max_fps:  encode at most this many pictures a second (None: every frame received).
    quality:  JPEG quality, 1-100.

    Open ``http://host:port/`` in a browser; ``/stream.mjpg`` is the stream itself
    (``cv2.VideoCapture`` reads it), ``/snapshot.jpg`` the latest picture. Frames are
    (H, W, 3) BGR or (H, W) grey uint8 arrays.
    """

    transient = ("_server", "_thread", "_latest")

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        max_fps: float | None = 15.0,
        quality: int = 80,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int between 0 and 65535, got {port!r}")
        if max_fps is not None and max_fps <= 0:
            raise ValueError(f"max_fps must be positive or None (every frame), got {max_fps}")
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be between 1 and 100, got {quality}")
        self.port, self.host = port, host
        self.max_fps, self.quality = max_fps, int(quality)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._latest: _Latest | None = None
        self._due = 0.0
        self._watched = False

    @property
    def url(self) -> str:
        """The page's address (with the port given; for port 0 see the task's log)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def open(self) -> None:
        latest = _Latest()
        try:
            server = _Server((self.host, self.port), latest, f"videoflow: {self.name}")
        except OSError as exc:
            raise OSError(
                f"MjpegServer {self.name!r} cannot listen on {self.host}:{self.port}: "
                f"{exc.strerror or exc}; is another program using the port? pick another one"
            ) from exc
        self._latest, self._server = latest, server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2},
            name=f"videoflow-mjpeg-{self.port}", daemon=True,
        )  # fmt: skip
        self._thread.start()
        self._due, self._watched = 0.0, False
        port = server.server_address[1]
        log.info("%s: live preview at http://%s:%d/", self.name, self.host, port)

    def consume(self, frame: Any) -> None:
        latest = self._latest
        if latest is None:
            raise RuntimeError(f"MjpegServer {self.name!r} is not open")
        now = time.monotonic()
        watched = latest.viewers > 0
        if watched and not self._watched:
            self._due = 0.0  # a first viewer: back to full rate at once
        self._watched = watched
        if now < self._due:
            return
        interval = 1.0 / self.max_fps if self.max_fps else 0.0
        if not watched:
            interval = max(interval, _IDLE_INTERVAL_S)
        # Keep the cadence while on time; after a pause, start a new one from now.
        due = self._due + interval
        self._due = due if due > now else now + interval
        image = _as_bgr(frame, "MjpegServer")
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError(f"MjpegServer {self.name!r}: OpenCV cannot encode a {image.shape}")
        latest.publish(jpeg.tobytes())

    def close(self) -> None:
        if self._latest is not None:
            self._latest.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.drop_viewers()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
        self._server = self._thread = self._latest = None
