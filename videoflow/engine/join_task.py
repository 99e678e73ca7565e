"""Several producers at run time: the JOIN stage's task and its wiring in the flow's owner.

A JOIN is a task with no node, first stage of every segment of several producers
(engine/plan.py). It has one bounded inbox per incoming segment, each with that segment's tail
as its only sender, and sleeps on a doorbell (transport/doorbell.py) that those senders ring
after every put, so that it waits on all its inboxes at once without polling them. It takes a
message from each inbox its ``Aligner`` (engine/align.py) wants, lets the aligner pair them,
and sends every complete set on as one message: the union of the inputs' values (their node
ids and slots are disjoint), the first present input's metadata with ``index`` set to the
set's number and ``sources`` naming every producer's index and timestamp. An input missing
from a set (``Join.latest``, ``Join.time(missing="none")``) gives its readers None.

Stop: a STOP from an inbox ends that input only (the aligner counts what can no longer be
paired, and the JOIN goes on draining it); the JOIN sends STOP on once every input ended and
nothing is left, so the flow ends when every producer has ended.

Slots: a message is always in exactly one place (an inbox, the aligner's buffer, or merged
into the set in hand), so each slot is still given back exactly once, without a lock: a
message the aligner will not send on is released at once (``_discard``), an abort releases
what the aligner buffers, and messages left in inboxes are released by the owner like any
queue's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from videoflow.engine.align import Aligner, set_meta
from videoflow.engine.control import (
    IN,
    J_BUFFERED,
    J_RECEIVED,
    J_STALE,
    J_UNMATCHED,
    J_USED,
    J_WAITED_NS,
    WAIT_NS,
    ControlLayout,
)
from videoflow.engine.plan import JOIN, Stage
from videoflow.engine.task import Task, read_message
from videoflow.transport import message
from videoflow.transport.doorbell import Doorbell, DoorbellSpec, new_doorbell
from videoflow.transport.message import STOP_FLOW, Message, message_refs
from videoflow.transport.queue import ControlQueue

_now = time.perf_counter_ns
PUBLISH_EVERY_NS = 50_000_000  # how often a JOIN publishes its per-input counters
_NONE = message.inline(None)  # the value of every output a missing input would have carried


class JoinTask(Task):
    """The task of a JOIN stage: N inboxes, one aligner, one outbox."""

    def _open_queues(self) -> None:
        super()._open_queues()  # the outbox
        spec, stage = self.spec, self.stage
        assert spec.doorbell is not None and spec.join_block is not None
        self.queues = [ControlQueue(name) for name in spec.inbox_queues]
        self.bell: Doorbell = spec.doorbell.open(self.control)
        self.inputs = stage.join_inputs
        self.aligner: Aligner | None = Aligner(
            stage.spec.join, len(self.queues), stage.max_pending,
            names=[i.name for i in self.inputs], discard=self._discard,
        )
        self.sets = 0  # sets sent on (or dropped at the outbox): the next set's index
        self.publish_due = 0

    # -- slots -----------------------------------------------------------------------------
    def _discard(self, i: int, msg: Message) -> None:
        """A message the aligner will not send on: give its slots back now."""
        release = self.registry.release
        for ref in message_refs(message.data_fields(msg)[2]):
            release(ref)

    def _let_go(self) -> None:
        aligner = getattr(self, "aligner", None)
        if aligner is not None:
            try:
                aligner.discard_all()  # an abort: what waits in the JOIN goes back
            finally:
                self._publish_counts()
        super()._let_go()

    # -- counters --------------------------------------------------------------------------
    def _publish_counts(self) -> None:
        """Write the aligner's counts into this JOIN's block of the control block."""
        aligner, control = self.aligner, self.control
        if aligner is None:
            return
        block = self.spec.join_block
        assert block is not None
        control[block.partial] = aligner.partial
        for i in range(aligner.inputs):
            at = block.input_at(i)
            control[at + J_RECEIVED] = aligner.received[i]
            control[at + J_USED] = aligner.used[i]
            control[at + J_STALE] = aligner.stale[i]
            control[at + J_UNMATCHED] = aligner.unmatched[i]
            control[at + J_BUFFERED] = aligner.buffered(i)
            control[at + J_WAITED_NS] = int(aligner.waited[i] * 1e9)

    # -- the loop --------------------------------------------------------------------------
    def _send(self, group: Sequence[Message | None]) -> None:
        """Merge a set into one message and send it on (realtime: or drop it, counted)."""
        values: dict[int, Any] = {}
        metas: list[dict[str, Any] | None] = []
        for inp, msg in zip(self.inputs, group, strict=True):
            if msg is None:
                for nid in inp.carries:
                    values[nid] = _NONE
                metas.append(None)
                continue
            _, m, v = message.data_fields(msg)
            values.update(v)
            metas.append(m)
        meta = set_meta([inp.sources for inp in self.inputs], metas, self.sets)
        self.sets += 1
        self.slots.hold(values)
        self._forward(0, meta)

    def _loop(self) -> None:
        aligner = self.aligner
        assert aligner is not None
        queues, bell, control, row, life = self.queues, self.bell, self.control, self.row, self.life
        registry = self.registry
        poll = self.spec.config.poll_interval
        clock = aligner.clock
        n = len(queues)
        ended = [False] * n
        first = 0  # round robin: the input served first this round
        self.phase = "join"
        while not aligner.done:
            life.check()
            seen = bell.value()  # before the inboxes: a put after this ends the wait at once
            got = 0
            for k in range(n):
                i = first + k - n if first + k >= n else first + k
                if ended[i] or not aligner.wants(i):
                    continue
                raw = queues[i].get(0)
                if raw is None:
                    continue
                got += 1
                msg = read_message(raw, registry)
                if message.kind(msg) == STOP_FLOW:
                    ended[i] = True
                    aligner.end(i)
                    continue
                control[row + IN] += 1
                try:
                    aligner.offer(i, msg, message.data_fields(msg)[1].get("timestamp_ms"))
                except BaseException:
                    self._discard(i, msg)  # refused (a bad timestamp): it is still ours
                    raise
            first = first + 1 if first + 1 < n else 0
            groups = aligner.poll()
            for group in groups:
                self._send(group)
            now = _now()
            if now >= self.publish_due:
                self.publish_due = now + PUBLISH_EVERY_NS
                self._publish_counts()
            if got or groups:
                continue
            deadline = aligner.deadline()
            timeout = poll if deadline is None else min(poll, max(0.0, deadline - clock()))
            bell.wait(seen, timeout)
            control[row + WAIT_NS] += _now() - now
        self._publish_counts()


class JoinWiring:
    """The owner's side of a plan's JOIN stages: their doorbells (in their blocks of the control
    block, engine/control.py) and what each task is given."""

    def __init__(self, layout: ControlLayout) -> None:
        self.layout = layout
        self.receivers: dict[int, DoorbellSpec] = {}
        self.senders: dict[int, DoorbellSpec] = {}
        self._to_close: list[Any] = []

    def open(self, ctx: Any) -> None:
        """Make the doorbells (pipes on the pure-Python path, made with ``ctx``)."""
        for block in self.layout.joins:
            receiver, sender, owned = new_doorbell(ctx, block.bell)
            self.receivers[block.stage], self.senders[block.stage] = receiver, sender
            self._to_close += owned

    def task_fields(self, stage: Stage, queue_names: Sequence[str]) -> dict[str, Any]:
        """The TaskSpec fields of a task of ``stage`` that concern joins."""
        fields: dict[str, Any] = {}
        if stage.spec.kind == JOIN:
            fields["inbox_queues"] = tuple(queue_names[link.index] for link in stage.inboxes)
            fields["doorbell"] = self.receivers[stage.index]
            fields["join_block"] = self.layout.join(stage.index)
        elif stage.outbox is not None and stage.outbox.join >= 0:
            fields["doorbell"] = self.senders[stage.outbox.join]
        return fields

    def close(self) -> None:
        """Close the owner's ends of the doorbell pipes (once the flow has ended)."""
        for conn in self._to_close:
            conn.close()
        self._to_close.clear()
