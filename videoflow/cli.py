"""The ``videoflow`` command: ``demo``, ``run``, ``bench`` and ``info``.

A user's mistake (a missing script, a bad option, a script that runs no flow, a flow that
fails) ends the command with one line on stderr and exit status 1 or 2, not a traceback;
``videoflow --debug ...`` shows the full trace.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import runpy
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, NoReturn

import videoflow
from videoflow.config import FlowConfig
from videoflow.errors import VideoflowError


class UserError(Exception):
    """A mistake in what the user asked for: reported in one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in one line (``--help`` still shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _script(path: str) -> str:
    """The script a command runs: it must exist (checked before anything starts)."""
    if not os.path.isfile(path):
        where = "" if os.path.isabs(path) else f" (in {os.getcwd()})"
        raise UserError(f"no such script: {path}{where}")
    return path


def _engines_line() -> str:
    """The engines a flow can run on here (``Flow(engine=...)``), Ray's version if installed,
    found without importing Ray."""
    import importlib.metadata

    from videoflow.engine.ray_engine import ray_available

    if not ray_available():
        return 'process (ray: not installed; pip install "videoflow-shm[ray]")'
    return f"process, ray ({importlib.metadata.version('ray')})"


def _writer_line() -> str:
    """What ``VideoWriter(path.mp4)`` (codec="auto") writes with here, and why."""
    from videoflow.consumers import encoders

    try:
        choice = encoders.choose_codec("auto", "out.mp4")
    except (ImportError, RuntimeError, ValueError) as exc:
        return f"not available ({exc})"
    reason = f"; {choice.reason}" if choice.reason else ""
    return f"{choice.codec.label} by {choice.codec.encoder} ({choice.codec.backend}){reason}"


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
    print(f"engines: {_engines_line()}")
    print(f"video writer for .mp4: {_writer_line()}")
    try:
        import cv2
    except ImportError:
        print("opencv: not installed")
        return 0
    from videoflow.consumers.video import display_problem, gui_backend

    print(f"opencv: {cv2.__version__}, threads: {cfg.opencv_threads_rule()}")
    problem = display_problem()
    if problem is None:
        print(f"display: {gui_backend()} (VideoDisplay can open windows)")
    else:
        print(f"display: not available to VideoDisplay: {problem}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from videoflow.core import Report
    from videoflow.demo import run_demo
    from videoflow.engine.progress import run_options

    output = args.output or os.path.join(tempfile.gettempdir(), "videoflow-demo.mp4")
    with run_options(progress=False if args.no_progress else None):
        try:
            stats = run_demo(output, nb_frames=args.frames, nb_tasks=args.nb_tasks)
        except (FileNotFoundError, PermissionError) as exc:  # the writer checks -o's folder
            raise UserError(str(exc)) from exc
    print(f"wrote {output}")
    print(Report.from_stats(stats))
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run the script as ``python script.py args...`` would, with the progress line of each flow
    it starts, then print each flow's report to stderr (stdout stays the script's own)."""
    from videoflow.engine.progress import run_options

    script = _script(args.script)
    sys.argv = [script, *args.args]
    with run_options(progress=False if args.no_progress else None) as options:
        metrics = None
        if args.metrics_port is not None:
            from videoflow.metrics import MetricsServer

            metrics = MetricsServer(lambda: list(options.flows), args.metrics_port,
                                    args.metrics_host)  # fmt: skip
            print(f"videoflow: metrics at {metrics.url}", file=sys.stderr, flush=True)
        try:
            runpy.run_path(script, run_name="__main__")
        finally:
            if metrics is not None:
                metrics.close()
            if not args.no_report:
                _print_reports(options.flows)
    if not options.flows:
        raise UserError(
            f"{script} ran no flow: videoflow run expects a script that builds a Flow and "
            "calls flow.run() and flow.join(); run other scripts with python"
        )
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

    if getattr(args, "script", None):
        _script(args.script)
    return run_bench(args)


def build_parser() -> argparse.ArgumentParser:
    def debug_option(parser: _Parser, default: Any) -> _Parser:
        # Before or after the command; one action per parser (argparse shares parents' actions).
        parser.add_argument(
            "--debug", action="store_true", default=default,
            help="on an error, show the full traceback instead of one line",
        )
        return parser

    def common() -> list[_Parser]:
        return [debug_option(_Parser(add_help=False), argparse.SUPPRESS)]

    parser = debug_option(_Parser(prog="videoflow", description=__doc__.split("\n\n")[0]), False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "info", parents=common(), help="version, native extension, start method, /dev/shm space"
    )
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "demo", parents=common(), help="blur a generated 1280x720 clip into a video file"
    )
    p.add_argument("--output", "-o", help="output video (default: videoflow-demo.mp4 in tmp)")
    p.add_argument("--frames", type=_positive, default=120, help="number of frames (default 120)")
    p.add_argument(
        "--nb-tasks", type=_positive, default=2, help="processes for the blur (default 2)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "run", parents=common(),
        help="run a flow script (as python would), with progress and a report per flow",
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

    p = sub.add_parser("bench", parents=common(), help="measure throughput against baselines")
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
    except (UserError, VideoflowError) as exc:
        if args.debug:
            raise
        # A FlowError's text is its one-line cause, then the task's own traceback, if any.
        print(f"videoflow {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the second Ctrl-C: the flow's tasks are already killed
        if args.debug:
            raise
        print(f"videoflow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
