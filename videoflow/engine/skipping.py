"""Processors that do not run on every message: ``every=N`` and ``skip_when_busy``.

A detector that needs 40 ms cannot keep up with 30 fps, and often need not: the boxes of the
frame before are good enough for the next few. Such a node runs on some messages only, and
the others go on with its *last output* instead of a new one, marked in their metadata:
``meta["skipped"]`` maps the node's name to the ``index`` of the message its output was made
from. Every message still goes through, in order; only the node's call is saved.

- ``every=N``: the node runs on one message in N (the first, then every N-th after a run).
- ``skip_when_busy=True`` (REALTIME): a message that arrived while the node was busy with
  another one, and so waits in its queue, is passed on at once; the node runs on the newest
  message when it is free. With ``every``, a run that falls due while messages wait is put
  off to the first message that finds the queue empty. (The end of the stream waits in the
  queue too: the last message may go on with the output before it.)

The first message always runs (there is no output to pass on yet). Whatever the node
returned stays referenced until its next run: a frame it returned is kept as any frame a node
keeps (engine/slots.py), and each message it is passed on with gets its own copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SKIPPED = "skipped"  # the meta key


class Skipper:
    """Decides, per message, whether a processor task runs its node, and holds its last
    output. ``busy`` says whether messages wait for the task (None: never skip for that)."""

    __slots__ = ("busy", "every", "last", "last_index", "name", "ran", "since")

    def __init__(self, name: str, every: int, busy: Callable[[], bool] | None) -> None:
        self.name = name
        self.every = every
        self.busy = busy
        self.ran = False  # the node has an output to pass on
        self.since = 0  # messages since its last run
        self.last: Any = None
        self.last_index: Any = None

    def skip(self, meta: dict[str, Any]) -> bool:
        """True when the message whose metadata is ``meta`` goes on with the last output
        (``meta`` is then marked); False when the node runs on it (call ``ran`` after)."""
        if self.ran:
            self.since += 1
            if self.since < self.every or (self.busy is not None and self.busy()):
                skipped = meta.get(SKIPPED)
                if not isinstance(skipped, dict):
                    skipped = meta[SKIPPED] = {}
                skipped[self.name] = self.last_index
                return True
        self.since = 0
        return False

    def ran_on(self, output: Any, meta: dict[str, Any]) -> None:
        """The node ran on the message of ``meta`` and returned ``output``."""
        self.ran = True
        self.last = output
        self.last_index = meta.get("index")


def make_skipper(
    name: str, every: int, skip_when_busy: bool, backlog: Callable[[], int]
) -> Skipper | None:
    """The skipper of a processor task, or None when it runs on every message."""
    if every <= 1 and not skip_when_busy:
        return None
    return Skipper(name, every, (lambda: backlog() > 0) if skip_when_busy else None)
