"""Write the synthetic moving-shapes clip used by the demo, the tests and the benchmarks.

python samples/make_test_clip.py OUT [--width 1280 --height 720 --frames 120 --fps 25
                                      --fourcc mp4v --person]
"""

from __future__ import annotations

import argparse

from videoflow.producers.shapes import write_test_clip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="video file to write (.mp4 for mp4v, .avi for MJPG)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--fourcc", default=None, help="codec (default: MJPG for .avi, else mp4v)")
    parser.add_argument("--person", action="store_true", help="add a walking person sprite")
    args = parser.parse_args(argv)
    fourcc = args.fourcc or ("MJPG" if args.output.lower().endswith(".avi") else "mp4v")
    write_test_clip(
        args.output, args.width, args.height, args.frames, args.fps, fourcc, args.person
    )
    print(f"wrote {args.output}: {args.frames} frames {args.width}x{args.height} {fourcc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
