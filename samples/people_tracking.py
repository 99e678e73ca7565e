"""Detect people, track them and write an annotated video plus per-frame results (JSON Lines).

    python samples/people_tracking.py IN OUT [--jsonl OUT.jsonl] [--detector hog|motion]

The HOG people detector ships with OpenCV 4.x; OpenCV 5 dropped it from the main module, and
then (or with --detector motion) a background-subtraction detector finds what moves instead.
Try it on a generated clip: python samples/make_test_clip.py clip.mp4 --person --width 640
--height 480.
"""

from __future__ import annotations

import argparse
import os

from videoflow.consumers import JsonLinesWriter, VideoWriter
from videoflow.core import BATCH, Flow
from videoflow.processors import BoxAnnotator, HogPeopleDetector, KalmanTracker
from videoflow.processors.vision import MotionDetector, hog_available
from videoflow.producers import VideoReader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--jsonl", help="results file (default: OUT with .jsonl)")
    parser.add_argument("--detector", choices=("hog", "motion"), default=None)
    parser.add_argument("--nb-tasks", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--codec", default=None,
        help="h264, hevc, vp9, av1, auto (NVENC where it works), mp4v, mjpeg "
        "(default: H.264 for .mp4, MJPEG for .avi)",
    )
    args = parser.parse_args(argv)
    jsonl = args.jsonl or os.path.splitext(args.output)[0] + ".jsonl"
    detector_kind = args.detector or ("hog" if hog_available() else "motion")
    if detector_kind == "hog" and not hog_available():
        parser.error("this OpenCV build has no HOG detector; use --detector motion")
    if args.detector is None and detector_kind == "motion":
        print("note: no HOG detector in this OpenCV build, detecting motion instead")

    reader = VideoReader(args.input, name="reader")
    if detector_kind == "hog":
        detector = HogPeopleDetector(nb_tasks=args.nb_tasks, name="detector")(reader)
    else:
        detector = MotionDetector(name="detector")(reader)
    tracker = KalmanTracker(name="tracker")(detector)
    annotated = BoxAnnotator(name="annotator")(reader, tracker)
    writer = VideoWriter(args.output, codec=args.codec, name="writer")(annotated)
    results = JsonLinesWriter(jsonl, keys=("detections", "tracks"), name="results")(
        detector, tracker
    )
    flow = Flow([reader], [writer, results], flow_type=BATCH)
    flow.run()
    flow.join()
    stats = flow.stats()
    print(f"{detector_kind}: {stats.produced} frames -> {args.output}, results -> {jsonl}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
