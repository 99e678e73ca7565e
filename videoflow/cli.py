"""The ``videoflow`` command: ``demo``, ``run``, ``bench`` and ``info``."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import runpy
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import videoflow
from videoflow.config import FlowConfig


def _info(_: argparse.Namespace) -> int:
    from videoflow.transport import native_status

    cfg = FlowConfig.from_options()
    print(f"videoflow {videoflow.__version__} (python {sys.version.split()[0]})")
    print(f"native extension: {native_status()}")
    print(f"start method: {cfg.start_method} (available: {', '.join(mp.get_all_start_methods())})")
    try:
        usage = shutil.disk_usage("/dev/shm")
    except OSError:
        print("/dev/shm: not available")
    else:
        print(f"/dev/shm: {usage.total / 2**30:.1f} GiB, {usage.free / 2**30:.1f} GiB free")
    try:
        import cv2

        print(f"opencv: {cv2.__version__}, threads: {cfg.opencv_threads_rule()}")
    except ImportError:
        print("opencv: not installed")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from videoflow.demo import run_demo
    from videoflow.engine.progress import run_options

    output = args.output or os.path.join(tempfile.gettempdir(), "videoflow-demo.mp4")
    with run_options(progress=False if args.no_progress else None):
        stats = run_demo(output, nb_frames=args.frames, nb_tasks=args.nb_tasks)
    print(f"wrote {output}")
    print(stats.report())
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run the script as ``python script.py args...`` would, with the progress line of each flow
    it starts, then print each flow's report to stderr (stdout stays the script's own)."""
    from videoflow.engine.progress import run_options

    sys.argv = [args.script, *args.args]
    with run_options(progress=False if args.no_progress else None) as options:
        metrics = None
        if args.metrics_port is not None:
            from videoflow.metrics import MetricsServer

            metrics = MetricsServer(lambda: list(options.flows), args.metrics_port,
                                    args.metrics_host)  # fmt: skip
            print(f"videoflow: metrics at {metrics.url}", file=sys.stderr, flush=True)
        try:
            runpy.run_path(args.script, run_name="__main__")
        finally:
            if metrics is not None:
                metrics.close()
            if not args.no_report:
                _print_reports(options.flows)
    return 0


def _print_reports(flows: list[Any]) -> None:
    for i, flow in enumerate(flows, 1):
        title = f"videoflow report (flow {i} of {len(flows)})" if len(flows) > 1 else (
            "videoflow report"
        )
        try:
            text = str(flow.report())
        except Exception as exc:  # a report must never hide the script's own outcome
            text = f"no report: {exc}"
        print(f"\n{title}\n{text}", file=sys.stderr)


def _bench(args: argparse.Namespace) -> int:
    from videoflow.benchmark.cli import run as run_bench

    return run_bench(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videoflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="version, native extension, start method, /dev/shm space")
    p.set_defaults(func=_info)

    p = sub.add_parser("demo", help="blur a generated 1280x720 clip into a video file")
    p.add_argument("--output", "-o", help="output video (default: videoflow-demo.mp4 in tmp)")
    p.add_argument("--frames", type=int, default=120, help="number of frames (default 120)")
    p.add_argument("--nb-tasks", type=int, default=2, help="processes for the blur (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "run", help="run a flow script (as python would), with progress and a report per flow"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument("--no-report", action="store_true", help="no bottleneck report at the end")
    p.add_argument(
        "--metrics-port", type=int, metavar="PORT",
        help="serve the flows' counters to Prometheus on this port while the script runs "
        '(needs pip install "videoflow-shm[metrics]")',
    )  # fmt: skip
    p.add_argument(
        "--metrics-host", default="127.0.0.1", metavar="ADDR",
        help="address the metrics listen on (default 127.0.0.1: this machine only)",
    )  # fmt: skip
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_run)

    p = sub.add_parser("bench", help="measure throughput against baselines")
    try:
        from videoflow.benchmark.cli import add_arguments
    except ImportError:
        pass
    else:
        add_arguments(p)
    p.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into a reader that left (videoflow info | head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
