"""``videoflow bench``: the standard matrix as a table, ``--json`` to save it, ``--compare``
to diff against an earlier save, or ``videoflow bench SCRIPT`` to time a user's own flow."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable

from videoflow.benchmark.matrix import run_matrix
from videoflow.benchmark.options import BASELINES, SECTIONS, SIZES, Options, parse_size
from videoflow.benchmark.result import SCHEMA, BenchResult, Row, compare
from videoflow.benchmark.userflow import bench_flow

QUICK_SIZE, QUICK_DURATION, QUICK_NB_TASKS = "640x480", 0.2, [1, 2]


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def _choices(allowed: Iterable[str]) -> Callable[[str], list[str]]:
    allowed = tuple(allowed)

    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{', '.join(bad)}: choose from {', '.join(allowed)}")
        return values

    return parse


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``videoflow bench``."""
    parser.description = __doc__
    parser.add_argument("script", nargs="?",
                        help="time the flows this script runs instead of the standard matrix")
    parser.add_argument("--only", type=_choices(SECTIONS), default=list(SECTIONS),
                        metavar="SECTIONS",
                        help=f"comma-separated sections to run (default: {','.join(SECTIONS)})")
    parser.add_argument("--size", dest="sizes", type=_size, action="append", metavar="WxH",
                        help=f"frame size, repeatable: WIDTHxHEIGHT or {', '.join(SIZES)} "
                             "(default: all four)")
    parser.add_argument("--hops", type=_ints, default=[1, 3],
                        help="pass-through hop counts (default 1,3)")
    parser.add_argument("--duration", type=float, default=1.0,
                        help="seconds each pipeline runs (default 1.0)")
    parser.add_argument("--nb-tasks", type=_ints, default=None,
                        help="scaling: K values (default 1..number of cores)")
    parser.add_argument("--baselines", type=_choices(BASELINES), default=list(BASELINES),
                        help=f"baselines to run (default {','.join(BASELINES)})")
    parser.add_argument("--no-baselines", action="store_true", help="run no baseline")
    parser.add_argument("--rate", type=float, default=60.0,
                        help="realtime: producer frames per second (default 60)")
    parser.add_argument("--cv2-threads", type=int, default=1,
                        help="OpenCV threads per process in the CPU-bound work (default 1; "
                             "0: OpenCV's own default)")
    parser.add_argument("--engine", choices=("process", "ray"), default="process",
                        help="engine of the videoflow rows (ray: the Ray engine, needs the ray "
                             "extra; its rows are tagged engine=ray)")
    parser.add_argument("--start-method", choices=("forkserver", "spawn", "fork"),
                        help="multiprocessing start method (default: videoflow's)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny matrix that runs in seconds (640x480, 1 hop, 0.2 s)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per measurement, the fastest kept (default 1); with SCRIPT: "
                             "runs of the script")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the matrix: cProfile every task of a pass-through flow "
                             "(first --size, each --hops) and print CPU us/frame per function")
    parser.add_argument("--schema", action="store_true",
                        help="print the JSON schema of --json files and exit")
    parser.add_argument("--json", metavar="FILE", help="save the result (with machine info)")
    parser.add_argument("--compare", metavar="OLD.json", help="print the change against OLD")


def options_from(args: argparse.Namespace) -> Options:
    sizes = args.sizes or [SIZES["480p"], SIZES["720p"], SIZES["1080p"], SIZES["4k"]]
    hops, duration, nb_tasks = args.hops, args.duration, args.nb_tasks
    if args.quick:
        sizes = args.sizes or [parse_size(QUICK_SIZE)]
        hops, duration = [1], min(duration, QUICK_DURATION)
        nb_tasks = nb_tasks or QUICK_NB_TASKS
    return Options(
        sections=args.only,
        sizes=sizes,
        hops=hops,
        duration=duration,
        baselines=[] if args.no_baselines else args.baselines,
        nb_tasks=nb_tasks,
        scaling_size=sizes[0] if args.quick else SIZES["1080p"],
        realtime_size=sizes[0] if args.quick else SIZES["720p"],
        rate=args.rate,
        cv2_threads=args.cv2_threads or None,
        start_method=args.start_method,
        repeat=args.repeat,
        engine=args.engine,
    )


# -- output ----------------------------------------------------------------------------------
def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table."""
    head = ("section", "impl", "params", "fps", "MB/s", "us/frame", "hop CPU us",
            "p50 ms", "p99 ms", "drop", "ours / baseline")
    lines = [head]
    for r in rows:
        params = " ".join(f"{k}={v}" for k, v in r.params.items())
        ratios = " ".join(f"{k}:{v:.3g}x" for k, v in r.ratios.items())
        if "speedup_vs_k1" in r.extra:
            ratios = f"K1:{r.extra['speedup_vs_k1']:.2f}x " + ratios
        if "hop_wall_us" in r.extra and r.params.get("hops") == 1:
            ratios = f"+{r.extra['hop_wall_us']:.0f} us/frame per extra hop; " + ratios
        if "hop_latency_us" in r.extra and r.params.get("hops") == max(
            (x.params.get("hops", 0) for x in rows if x.section == "realtime"), default=0
        ):
            ratios = f"latency/hop {r.extra['hop_latency_us']:.0f} us " + ratios
        if r.section == "join" and r.note:
            ratios = r.note + (f"; {ratios}" if ratios else "")
        lines.append((
            r.section, r.impl, params, _num(r.fps, ".0f"), _num(r.mb_s, ".0f"),
            _num(r.us_per_frame), _num(r.hop_cpu_us), _num(r.latency_p50_ms, ".2f"),
            _num(r.latency_p99_ms, ".2f"), _num(r.drop_rate, ".1%") if r.drop_rate else "-",
            ratios,
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for j, line in enumerate(lines):
        cells = [c.ljust(w) if i < 3 or i == len(head) - 1 else c.rjust(w)
                 for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_machine(result: BenchResult) -> str:
    m = result.machine
    return (f"{m['cpu_model']}, {m['usable_cores']}/{m['cores']} cores, python {m['python']}, "
            f"numpy {m['numpy']}, opencv {m['opencv']}, videoflow {m['videoflow']}, "
            f"native {m['native']}, start method {m['start_method']}")


def format_compare(old: BenchResult, new: BenchResult) -> str:
    """fps of each row measured now against OLD (rows only OLD has are counted, not listed)."""
    lines = [f"{'row':<70} {'old fps':>10} {'new fps':>10} {'change':>8}"]
    only_old = 0
    for ch in compare(old, new):
        if ch.new_fps is None:
            only_old += 1
            continue
        ratio = ch.ratio
        change = "-" if ratio is None else f"{(ratio - 1) * 100:+.1f}%"
        lines.append(f"{ch.key:<70} {_num(ch.old_fps, '.0f'):>10} {_num(ch.new_fps, '.0f'):>10} "
                     f"{change:>8}")
    if only_old:
        lines.append(f"({only_old} rows of the old result were not measured this time)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run what ``args`` ask for; print the table; 0 on success, 2 on bad input."""

    def progress(msg: str) -> None:
        print(f"  ... {msg}", file=sys.stderr, flush=True)

    if args.schema:
        print(json.dumps(SCHEMA, indent=2))
        return 0
    old = None
    if args.compare:
        try:
            old = BenchResult.load(args.compare)
        except (OSError, ValueError) as exc:
            print(f"videoflow bench: cannot read {args.compare}: {exc}", file=sys.stderr)
            return 2
    if args.profile:
        from videoflow.benchmark.profiling import profile_handoff

        opts = options_from(args)
        for hops in opts.hops:
            print(profile_handoff((*opts.sizes[0], 3), hops, max(opts.duration, 0.5)))
        return 0
    if args.script:
        result = bench_flow(args.script, repeat=args.repeat)
    else:
        try:
            opts = options_from(args)
        except ValueError as exc:
            print(f"videoflow bench: {exc}", file=sys.stderr)
            return 2
        result = run_matrix(opts, progress=progress)
    print(format_machine(result))
    print(format_table(result.rows))
    for why in result.skipped:
        print(f"skipped {why}")
    if args.json:
        try:
            result.save(args.json)
        except ValueError as exc:  # a bug of ours: say so rather than write a bad file
            print(f"videoflow bench: {exc}", file=sys.stderr)
            return 1
        print(f"saved {args.json}")
    if old is not None:
        print(format_compare(old, result))
    return 0
