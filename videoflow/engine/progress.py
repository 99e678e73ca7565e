"""A progress line on stderr while a flow runs, and the run options the ``videoflow`` command sets.

The line shows a bar when the producer knows how many values it will make
(``ProducerNode.expected_count()``), and the count and rate otherwise. It is drawn by one thread
of the flow's owner that reads the flow's counters a few times a second; the tasks do nothing
for it. It is off when stderr is not a terminal, with ``flow_options={"progress": False}`` or
``VIDEOFLOW_PROGRESS=0``.

``run_options()`` is how a caller that runs someone else's script (``videoflow run``) reaches the
flows the script makes: inside it, every started Flow is recorded, and the progress line can be
forced on or off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from videoflow.engine.stats import FlowStats

BAR = 24


@dataclasses.dataclass
class RunOptions:
    """progress: force the progress line on (still only on a terminal) or off; None: as each
    flow's ``progress`` option says. flows: every Flow started while these options were set."""

    progress: bool | None = None
    flows: list[Any] = dataclasses.field(default_factory=list)


_current: RunOptions | None = None
_current_lock = threading.Lock()


@contextlib.contextmanager
def run_options(progress: bool | None = None) -> Iterator[RunOptions]:
    """Set the run options for the flows started inside the ``with`` block (any thread)."""
    global _current
    options = RunOptions(progress=progress)
    with _current_lock:
        previous, _current = _current, options
    try:
        yield options
    finally:
        with _current_lock:
            _current = previous


def current_run_options() -> RunOptions | None:
    return _current


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def wanted(configured: bool, stream: TextIO | None = None) -> bool:
    """Whether a flow should show progress: asked for, and stderr is a terminal."""
    options = _current
    if options is not None and options.progress is not None:
        configured = options.progress
    return configured and _isatty(sys.stderr if stream is None else stream)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def render(stats: FlowStats, total: int | None) -> str:
    """One progress line (no line end) for a snapshot."""
    done = stats.delivered + stats.dropped  # messages that have left the flow, either way
    rate = done / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
    if total:
        part = min(1.0, done / total)
        filled = int(part * BAR)
        bar = "#" * filled + "-" * (BAR - filled)
        eta = _clock((total - done) / rate) if rate > 0 and done < total else "--:--"
        text = f"|{bar}| {done}/{total} {100 * part:3.0f}% {rate:6.1f} fps ETA {eta}"
    else:
        text = f"{done} messages {rate:6.1f} fps {_clock(stats.elapsed_s)}"
    if stats.dropped:
        text += f" ({stats.dropped} dropped)"
    return text


class Progress:
    """Redraws a progress line from ``snapshot()`` every ``interval`` seconds until the flow
    ends or ``close()`` is called; then draws the last state and ends the line."""

    def __init__(
        self, snapshot: Callable[[], FlowStats], total: int | None, stream: TextIO | None = None,
        interval: float = 0.25, label: str = "videoflow",
    ) -> None:
        self.snapshot = snapshot
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.interval = interval
        self.label = label
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="videoflow-progress", daemon=True)
        self._width = 0

    def start(self) -> Progress:
        self._thread.start()
        return self

    def _draw(self, end: str = "") -> None:
        try:
            line = f"{self.label}: {render(self.snapshot(), self.total)}"
            pad = max(0, self._width - len(line))
            self._width = len(line)
            self.stream.write(f"\r{line}{' ' * pad}{end}")
            self.stream.flush()
        except (OSError, ValueError):  # the stream was closed under us
            self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval) and self.snapshot().running:
            self._draw()
        self._draw("\n")

    def close(self) -> None:
        """Draw the final state (once) and stop; returns when the line is finished."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
