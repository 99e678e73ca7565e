"""Blur a video file in several processes: decode -> Gaussian blur (nb_tasks) -> encode.

python samples/blur_video.py IN OUT [--ksize 21] [--nb-tasks 2] [--codec h264]
                                    [--keep-audio]
"""

from __future__ import annotations

import argparse
import os

from videoflow.consumers import VideoWriter
from videoflow.core import BATCH, Flow
from videoflow.processors import GaussianBlur
from videoflow.producers import VideoReader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--ksize", type=int, default=21, help="odd kernel size")
    parser.add_argument(
        "--nb-tasks", type=int, default=min(2, os.cpu_count() or 1), help="blur processes"
    )
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument(
        "--codec", default=None,
        help="h264, hevc, vp9, av1, auto (NVENC where it works), mp4v, mjpeg "
        "(default: H.264 for .mp4, MJPEG for .avi)",
    )
    parser.add_argument(
        "--keep-audio", action="store_true", help="copy the input's sound into the output"
    )
    args = parser.parse_args(argv)

    reader = VideoReader(args.input, name="reader")
    blur = GaussianBlur(args.ksize, nb_tasks=args.nb_tasks, name="blur")(reader)
    writer = VideoWriter(
        args.output, fps=args.fps, codec=args.codec, name="writer",
        copy_audio_from=args.input if args.keep_audio else None,
    )(blur)
    flow = Flow([reader], [writer], flow_type=BATCH)
    flow.run()
    flow.join()
    stats = flow.stats()
    print(f"blurred {stats.delivered} frames into {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
