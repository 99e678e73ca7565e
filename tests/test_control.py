"""The control block's layout (engine/control.py) and the snapshot made from a block
(``FlowStats.from_block``), without processes."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from videoflow.consumers import VoidConsumer
from videoflow.core import BATCH, Flow
from videoflow.engine.control import (
    AGE_AT,
    AGE_FRAMES,
    AGE_MAX_NS,
    AGE_SUM_NS,
    BUSY_NS,
    CPU_NS,
    DROPPED,
    FLAGS,
    IN,
    J_RECEIVED,
    J_STALE,
    J_UNMATCHED,
    J_USED,
    J_WAITED_NS,
    JOIN_HEAD,
    JOIN_ROW,
    OUT,
    ROW,
    STATE,
    ControlLayout,
    StageRows,
    age_bucket,
    describe_state,
    record_age,
)
from videoflow.engine.plan import Plan, build_plan
from videoflow.engine.stats import FlowStats
from videoflow.processors import IdentityProcessor, JoinerProcessor
from videoflow.producers import IntProducer


def joined_plan() -> Plan:
    """a, b -> JOIN -> pair -> work (K=3) -> sink: a JOIN, a numbered run, a merge."""
    a, b = IntProducer(0, 3, name="a"), IntProducer(0, 3, name="b")
    pair = JoinerProcessor(name="pair")(a, b)
    work = IdentityProcessor(nb_tasks=3, name="work")(pair)
    sink = VoidConsumer(name="sink")(work)
    flow = Flow([a, b], [sink], flow_type=BATCH)
    return build_plan(flow._specs(), flow.config)


def test_the_parts_of_the_block_do_not_overlap_and_fill_it():
    plan = joined_plan()
    layout = ControlLayout.of(plan)
    parts = [(0, FLAGS, "flags"), (FLAGS, layout.rows_at, "counters")]
    parts += [(at, at + ROW, f"{s.spec.name}[{w}]") for s, w, at in layout.rows()]
    parts += [(j.at, j.at + j.size, f"join {j.stage}") for j in layout.joins]
    parts.sort()
    assert parts[0][0] == 0 and parts[-1][1] == layout.size
    for (_, end, name), (start, _, after) in itertools.pairwise(parts):
        assert end == start, f"{name} ends at {end}, {after} starts at {start}"
    # The sizes add up: 3 flags, one counter for the one numbered run, a row per task (two
    # producers, the JOIN, pair, 3 workers, sink: 8), a JOIN block with two inputs.
    assert layout.counters == plan.window_counters == 1
    assert [(s.spec.name, w) for s, w, _ in layout.rows()] == [
        (stage.spec.name, w) for stage, w in plan.tasks
    ]
    assert layout.tasks == len(plan.tasks) == 8
    assert layout.size == FLAGS + 1 + 8 * ROW + JOIN_HEAD + 2 * JOIN_ROW


def test_the_numbered_run_and_the_join_have_their_entries():
    plan = joined_plan()
    layout = ControlLayout.of(plan)
    by_name = {s.spec.name: s for s in layout.stages}
    # pair numbers the messages into the 3 workers; sink, their merge, advances the counter.
    counter = by_name["pair"].outbox_counter
    assert counter == by_name["sink"].inbox_counter == FLAGS
    assert by_name["work"].inbox_counter == by_name["work"].outbox_counter == -1
    assert by_name["work"].row(2) == by_name["work"].at + 2 * ROW == by_name["sink"].at - ROW
    with pytest.raises(IndexError, match="no task 3"):
        by_name["work"].row(3)
    (block,) = layout.joins
    assert plan.stages[block.stage].spec.name == "pair.join" == layout.stages[block.stage].spec.name
    assert layout.join(block.stage) is block and block.at == layout.joins_at
    assert block.input_at(1) == block.at + JOIN_HEAD + JOIN_ROW
    assert [i.name for i in block.inputs] == ["a", "b"]
    with pytest.raises(KeyError):
        layout.join(0)


def fill(layout: ControlLayout) -> list[int]:
    """A block as the tasks of joined_plan() would leave it after a run."""
    block = [0] * layout.size
    rows = {(s.spec.name, w): at for s, w, at in layout.rows()}
    block[rows["a", 0] + IN] = block[rows["a", 0] + OUT] = 10
    block[rows["b", 0] + IN], block[rows["b", 0] + OUT], block[rows["b", 0] + DROPPED] = 7, 6, 1
    join = rows["pair.join", 0]
    block[join + IN], block[join + OUT], block[join + CPU_NS] = 16, 6, 2_000_000_000
    block[rows["pair", 0] + IN] = block[rows["pair", 0] + OUT] = 6
    for w, n in enumerate((3, 2, 1)):
        block[rows["work", w] + IN] = block[rows["work", w] + OUT] = n
        block[rows["work", w] + BUSY_NS] = n * 1_000_000_000
    sink = rows["sink", 0]
    block[sink + IN] = 6
    for age_ns in (1_000_000, 3_000_000):
        record_age(block, sink, age_ns)
    (jb,) = layout.joins
    block[jb.partial] = 2
    for i, (received, used, stale, unmatched) in enumerate([(10, 6, 3, 1), (6, 6, 0, 0)]):
        at = jb.input_at(i)
        block[at + J_RECEIVED], block[at + J_USED] = received, used
        block[at + J_STALE], block[at + J_UNMATCHED] = stale, unmatched
        block[at + J_WAITED_NS] = (i + 1) * 500_000_000
    return block


def test_a_snapshot_from_a_hand_filled_block():
    layout = ControlLayout.of(joined_plan())
    block = fill(layout)
    sink_at = layout.stages[-1].at
    assert block[sink_at + AGE_FRAMES] == 2 and block[sink_at + AGE_SUM_NS] == 4_000_000
    assert block[sink_at + AGE_MAX_NS] == 3_000_000
    assert block[sink_at + AGE_AT + age_bucket(1_000_000)] == 1

    def doing(stage: StageRows, worker: int, row: list[int]) -> tuple[str, float, bool]:
        return describe_state(stage.spec.kind, row), float(worker), stage.spec.name == "work"

    stats = FlowStats.from_block(
        block, layout, running=False, elapsed_s=2.0, errors={("work", 1): 1},
        doing=doing, inbox_queued=lambda stage: stage.index, pool_slots_in_use=0,
    )
    assert [n.name for n in stats.nodes] == ["a", "b", "pair", "work", "sink"]  # no JOIN
    assert (stats.produced, stats.delivered, stats.dropped) == (17, 6, 1)
    assert stats.produced_by == {"a": 10, "b": 7}
    assert stats.errors == 1 and stats.elapsed_s == 2.0 and not stats.running
    work = stats.node("work")
    assert (work.nb_tasks, work.messages_in, work.busy_s, work.errors) == (3, 6, 6.0, 1)
    assert [t.messages_in for t in work.tasks] == [3, 2, 1]
    assert [t.doing_s for t in work.tasks] == [0.0, 1.0, 2.0] and all(t.stalled for t in work.tasks)
    assert not work.one_task and stats.node("a").one_task and work.inbox_queued == 4
    age = stats.node("sink").frame_age
    assert age is not None and age.frames == 2 and age.mean_s == pytest.approx(0.002)
    assert age.max_s == pytest.approx(0.003)
    join = stats.join()
    assert (join.name, join.sets, join.partial, join.cpu_s) == ("pair.join", 6, 2, 2.0)
    a, b = join.inputs
    assert (a.name, a.produced, a.dropped, a.received, a.used, a.stale, a.unmatched) == (
        "a", 10, 0, 10, 6, 3, 1,
    )
    assert (b.produced, b.dropped, b.received, b.waited_s) == (7, 1, 6, 1.0)
    assert join.waits_on is b


def test_rows_kept_apart_make_the_same_snapshot_as_a_block():
    """The Ray engine's path: no shared block, one row per actor, packed."""
    a = IntProducer(0, 3, name="a")
    sink = VoidConsumer(name="sink")(IdentityProcessor(nb_tasks=2, name="b")(a))
    layout = ControlLayout.of_specs(Flow([a], [sink])._specs())  # what the Ray engine gets
    assert layout.counters == 0 and layout.joins == () and layout.rows_at == FLAGS
    rows = {(0, 0): [0] * ROW, (1, 0): [0] * ROW, (2, 0): [0] * ROW}  # task (1, 1) not there
    rows[0, 0][IN] = rows[0, 0][OUT] = 5
    rows[1, 0][IN] = rows[1, 0][OUT] = 5
    rows[2, 0][IN] = 5
    rows[1, 0][STATE] = 7
    block = layout.pack(rows)
    assert len(block) == layout.size == FLAGS + 4 * ROW
    assert block[layout.row(1, 0) + STATE] == 7
    assert block[layout.row(1, 1) : layout.row(2, 0)] == [0] * ROW
    stats = FlowStats.from_block(block, layout, running=True, elapsed_s=1.0)
    assert (stats.produced, stats.delivered, stats.dropped, stats.errors) == (5, 5, 0, 0)
    assert stats.node("b").nb_tasks == 2 and stats.node("b").tasks[1].messages_in == 0
    assert stats.pool_slots_in_use is None and stats.joins == ()


def test_a_join_needs_the_plan_layout():
    plan = joined_plan()
    with pytest.raises(ValueError, match=r"no JOIN stage \(pair.join\)"):
        ControlLayout.of_specs([s.spec for s in plan.stages])


def test_the_layout_does_not_import_the_snapshot_nor_the_snapshot_the_report():
    """control <- stats <- report, at import time (a fresh interpreter)."""
    code = (
        "import sys, videoflow.engine.control\n"
        "assert 'videoflow.engine.stats' not in sys.modules, 'control imported stats'\n"
        "import videoflow.engine.stats\n"
        "assert 'videoflow.engine.report' not in sys.modules, 'stats imported report'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
