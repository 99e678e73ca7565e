"""A realtime flow from a camera or a stream: it reconnects when the source drops, works on the
freshest frame, detects people without holding the frames up, shows a live preview in the
browser, serves Prometheus metrics, and prints its counters every few seconds.

    python samples/camera_realtime.py [SOURCE] [--seconds 10] [--preview-port 8090]
        [--metrics-port 9100] [--output out.avi] [--display] [--no-reconnect]
        [--drop oldest|newest] [--detect-every N] [--no-detect]

SOURCE is a device number (default 0), a device path or a URL (rtsp://, http://...).
Frames the flow cannot keep up with are dropped (REALTIME) and counted: by default a full
queue drops its oldest frame, so every node works on the freshest one (``--drop newest``
drops the new frame instead, and frames grow stale in the queues: compare the frame age the
counters print). The people detector (OpenCV's HOG, slow) runs on one frame in
``--detect-every`` and skips the frames that arrive while it is busy: those go on at once with
its last boxes. A source that drops is reopened (waits doubling up to 10 s) and the flow goes
on; one that stays away longer than --reconnect-timeout ends the flow with an error naming it.
Without --output or --display the frames are discarded (a throughput test). --metrics-port
needs ``pip install "videoflow-shm[metrics]"``.
"""

from __future__ import annotations

import argparse
import time

from videoflow.consumers import MjpegServer, VideoDisplay, VideoWriter, VoidConsumer
from videoflow.core import REALTIME, Flow
from videoflow.errors import FlowError
from videoflow.processors import BoxAnnotator, GaussianBlur, HogPeopleDetector, TextAnnotator
from videoflow.processors.vision import hog_available
from videoflow.producers import CameraReader, StreamReader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default="0")
    parser.add_argument("--seconds", type=float, default=10.0, help="stop after this long")
    parser.add_argument("--frames", type=int, default=-1, help="stop after this many frames")
    parser.add_argument("--read-timeout", type=float, default=5.0)
    parser.add_argument("--no-reconnect", action="store_true", help="end when the source ends")
    parser.add_argument(
        "--reconnect-timeout", type=float, default=60.0,
        help="seconds a lost source may stay away before the flow fails (default 60)",
    )  # fmt: skip
    parser.add_argument("--preview-port", type=int, help="serve a live preview on this port")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    parser.add_argument(
        "--output", help="also write the frames to this video (.mp4: H.264, .avi: MJPEG)"
    )
    parser.add_argument("--display", action="store_true", help="show the frames (needs a GUI)")
    parser.add_argument(
        "--drop", choices=("oldest", "newest"), default="oldest",
        help="what a full queue drops: oldest (default: the freshest frame goes on) or newest",
    )  # fmt: skip
    parser.add_argument("--detect-every", type=int, default=1, metavar="N",
                        help="run the people detector on one frame in N (default 1)")
    parser.add_argument("--no-detect", action="store_true", help="no people detector")
    args = parser.parse_args(argv)

    live = {
        "nb_frames": args.frames,
        "read_timeout": args.read_timeout,
        "reconnect": not args.no_reconnect,
        "reconnect_timeout": args.reconnect_timeout,
        "name": "camera",
    }
    if "://" in args.source:
        reader: StreamReader | CameraReader = StreamReader(args.source, **live)
    else:
        device = int(args.source) if args.source.isdigit() else args.source
        reader = CameraReader(device, **live)
    blur = GaussianBlur(5, nb_tasks=2, name="blur")(reader)
    frames = blur
    if not args.no_detect and hog_available():
        # Busy for longer than a frame lasts: frames that arrive meanwhile go on at once with
        # the last boxes (meta["skipped"]), instead of waiting for the detector or being lost.
        people = HogPeopleDetector(
            every=args.detect_every, skip_when_busy=True, name="people"
        )(blur)
        frames = BoxAnnotator(name="boxes")(blur, people)
    label = TextAnnotator("frame {index}", name="label")(frames)
    if args.display:
        sinks = [VideoDisplay(name="display")(label)]
    elif args.output:
        sinks = [VideoWriter(args.output, name="writer")(label)]
    else:
        sinks = [VoidConsumer(name="sink")(label)]
    preview = None
    if args.preview_port is not None:
        preview = MjpegServer(args.preview_port, max_fps=15, name="preview")(label)
        sinks.append(preview)

    flow = Flow([reader], sinks, flow_type=REALTIME, flow_options={"realtime_drop": args.drop})
    reconnect = (
        f"on, gives up after {args.reconnect_timeout:g} s away" if reader.reconnect else "off"
    )
    print(f"source: {args.source} (reconnect {reconnect})", flush=True)
    policy = "the oldest frame (freshest frame first)" if args.drop == "oldest" else "the new frame"
    print(f"realtime: a full queue drops {policy}", flush=True)
    if preview is not None:
        print(f"preview: {preview.url}", flush=True)
    metrics = None
    if args.metrics_port is not None:
        metrics = flow.serve_metrics(args.metrics_port)
        print(f"metrics: {metrics.url}", flush=True)
    flow.run()
    deadline = time.monotonic() + args.seconds
    try:
        while not flow.join(timeout=min(2.0, max(0.1, deadline - time.monotonic()))):
            _print_counters(flow)
            if time.monotonic() >= deadline:
                flow.stop()
    except FlowError as exc:
        print(f"error: {exc}".splitlines()[0])
        return 1
    finally:
        _print_counters(flow)
        if metrics is not None:
            metrics.close()
    return 0


def _print_counters(flow: Flow) -> None:
    stats = flow.stats()
    parts = [
        f"{n.name}: in={n.messages_in} dropped={n.dropped}"
        + (f" skipped={n.skipped}" if n.skipped else "")
        + (f" age p50={1e3 * n.frame_age.p50_s:.0f}ms p99={1e3 * n.frame_age.p99_s:.0f}ms"
           if n.frame_age is not None else "")
        for n in stats.nodes
    ]  # fmt: skip
    camera = stats.node("camera")
    print(
        f"produced={stats.produced} delivered={stats.delivered} dropped={stats.dropped} "
        f"reconnects={camera.reconnects} offline={camera.offline_s:.1f}s | " + ", ".join(parts),
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
