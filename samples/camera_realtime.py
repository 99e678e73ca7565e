"""A realtime flow from a camera or a stream: frames that the flow cannot keep up with are
dropped, and the drop counters are printed at the end (and every few seconds).

    python samples/camera_realtime.py [SOURCE] [--seconds 10] [--output out.avi] [--display]

SOURCE is a device number (default 0), a device path or a URL (rtsp://, http://...).
Without --output or --display the frames are blurred and discarded (a throughput test).
"""

from __future__ import annotations

import argparse
import time

from videoflow.consumers import VideoDisplay, VideoWriter, VoidConsumer
from videoflow.core import REALTIME, Flow
from videoflow.errors import FlowError
from videoflow.processors import GaussianBlur, TextAnnotator
from videoflow.producers import VideoDeviceReader, VideoUrlReader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default="0")
    parser.add_argument("--seconds", type=float, default=10.0, help="stop after this long")
    parser.add_argument("--frames", type=int, default=-1, help="stop after this many frames")
    parser.add_argument("--read-timeout", type=float, default=5.0)
    parser.add_argument(
        "--output", help="also write the frames to this video (.mp4: H.264, .avi: MJPEG)"
    )
    parser.add_argument("--display", action="store_true", help="show the frames (needs a GUI)")
    args = parser.parse_args(argv)

    if "://" in args.source:
        reader = VideoUrlReader(
            args.source, nb_frames=args.frames, read_timeout=args.read_timeout, name="camera"
        )
    else:
        device = int(args.source) if args.source.isdigit() else args.source
        reader = VideoDeviceReader(
            device, nb_frames=args.frames, read_timeout=args.read_timeout, name="camera"
        )
    blur = GaussianBlur(15, nb_tasks=2, name="blur")(reader)
    label = TextAnnotator("frame {index}", name="label")(blur)
    if args.display:
        sink = VideoDisplay(name="display")(label)
    elif args.output:
        sink = VideoWriter(args.output, name="writer")(label)
    else:
        sink = VoidConsumer(name="sink")(label)

    flow = Flow([reader], [sink], flow_type=REALTIME)
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
    return 0


def _print_counters(flow: Flow) -> None:
    stats = flow.stats()
    parts = [f"{n.name}: in={n.messages_in} dropped={n.dropped}" for n in stats.nodes]
    print(
        f"produced={stats.produced} delivered={stats.delivered} dropped={stats.dropped} | "
        + ", ".join(parts),
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
