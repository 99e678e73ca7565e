"""``videoflow bench``: a tiny matrix runs in seconds and its JSON matches the documented schema.

No time is asserted here (figures depend on the machine); bench/ holds the speed targets.
"""

from __future__ import annotations

import json
import pstats
import textwrap

import jsonschema
import pytest

from videoflow.benchmark import SCHEMA, BenchResult, Row, bench_flow, compare, validate
from videoflow.benchmark.cli import format_table
from videoflow.benchmark.flows import percentile
from videoflow.benchmark.options import parse_size
from videoflow.benchmark.result import add_ratios, machine_info
from videoflow.cli import main
from videoflow.consumers import VoidConsumer
from videoflow.core import BATCH, Flow
from videoflow.engine.runner import leftovers
from videoflow.processors import IdentityProcessor
from videoflow.producers import IntProducer


def assert_clean() -> None:
    """No child process and no /dev/shm (or mqueue) entry starting with "vf." of ours is left."""
    entries, children = leftovers()
    assert not children, f"child processes left behind: {children}"
    assert not entries, f"shared memory / queues left behind: {entries}"


def _row(**kw: object) -> Row:
    base: dict[str, object] = {"section": "handoff", "impl": "videoflow",
                               "params": {"size": "64x48", "hops": 1},
                               "frames": 10, "seconds": 0.5, "fps": 20.0}
    base.update(kw)
    return Row(**base)  # type: ignore[arg-type]


# -- the command -----------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_quick_matrix_json_matches_schema(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--quick", "--size", "64x48", "--only", "handoff", "--duration", "0.05",
               "--baselines", "queue,single", "--json", str(out)])
    assert rc == 0
    assert_clean()
    data = json.loads(out.read_text())
    assert validate(data) == []
    impls = {row["impl"] for row in data["rows"]}
    assert impls == {"videoflow", "mp.Queue+pickle", "single process"}
    ours = next(r for r in data["rows"] if r["impl"] == "videoflow")
    assert ours["frames"] > 0 and ours["fps"] > 0 and ours["hop_cpu_us"] > 0
    assert set(ours["ratios"]) == {"mp.Queue+pickle", "single process"}
    assert data["machine"]["cores"] >= 1 and data["machine"]["start_method"]
    printed = capsys.readouterr().out
    assert "videoflow" in printed and "mp.Queue+pickle" in printed and "saved" in printed


@pytest.mark.timeout(120)
def test_join_section_measures_throughput_and_latency(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--quick", "--size", "64x48", "--only", "join", "--duration", "0.1",
               "--json", str(out)])
    assert rc == 0
    assert_clean()
    data = json.loads(out.read_text())
    assert validate(data) == []
    seq, latest = data["rows"]
    assert seq["params"]["policy"] == "seq" and latest["params"]["policy"] == "latest"
    assert seq["fps"] > 0 and seq["extra"]["join_cpu_us"] > 0
    assert latest["latency_p50_ms"] is not None and "added_p50_ms" in latest["extra"]
    text = capsys.readouterr().out
    assert "joined/s" in text and "Join.latest adds" in text


@pytest.mark.timeout(60)
def test_compare_prints_the_change(tmp_path, capsys):
    old = BenchResult(rows=[_row(fps=10.0), _row(impl="single process", fps=5.0)],
                      machine=machine_info())
    path = tmp_path / "old.json"
    old.save(str(path))
    rc = main(["bench", "--quick", "--size", "64x48", "--only", "handoff", "--no-baselines",
               "--duration", "0.05", "--compare", str(path)])
    assert rc == 0
    assert_clean()
    printed = capsys.readouterr().out
    assert "handoff/videoflow/hops=1,size=64x48" in printed
    assert "%" in printed  # the videoflow row is in both results


def test_schema_is_printed(capsys):
    assert main(["bench", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == SCHEMA
    jsonschema.Draft202012Validator.check_schema(SCHEMA)  # a well-formed schema itself


def test_compare_of_an_invalid_file_fails_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": []}))
    assert main(["bench", "--compare", str(bad), "--quick"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_bad_options_are_usage_errors():
    for argv in (["bench", "--only", "nope"], ["bench", "--size", "12"],
                 ["bench", "--hops", "0"], ["bench", "--baselines", "x"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2


# -- a user's own flow -----------------------------------------------------------------------
def make_flow() -> Flow:
    a = IntProducer(0, 49)
    b = IdentityProcessor()(a)
    c = VoidConsumer()(b)
    return Flow([a], [c], flow_type=BATCH)


@pytest.mark.timeout(60)
def test_bench_flow_factory():
    result = bench_flow(make_flow)
    assert_clean()
    (row,) = result.rows
    assert row.section == "flow" and row.frames == 50 and row.fps > 0
    assert validate(result.to_dict()) == []


@pytest.mark.timeout(60)
def test_bench_script(tmp_path, capsys):
    script = tmp_path / "myflow.py"
    script.write_text(textwrap.dedent("""
        from videoflow.consumers import VoidConsumer
        from videoflow.core import BATCH, Flow
        from videoflow.processors import IdentityProcessor
        from videoflow.producers import IntProducer

        if __name__ == "__main__":
            a = IntProducer(0, 29)
            c = VoidConsumer()(IdentityProcessor()(a))
            flow = Flow([a], [c], flow_type=BATCH)
            flow.run()
            flow.join()
    """))
    out = tmp_path / "mine.json"
    assert main(["bench", str(script), "--json", str(out)]) == 0
    assert_clean()
    data = json.loads(out.read_text())
    assert validate(data) == []
    (row,) = data["rows"]
    assert row["params"]["flow"] == "myflow.py" and row["frames"] == 30
    assert "myflow.py" in capsys.readouterr().out


# -- schema, validation, result helpers ------------------------------------------------------
def test_validate_reports_problems():
    good = BenchResult(rows=[_row()], machine=machine_info()).to_dict()
    assert validate(good) == []
    bad = json.loads(json.dumps(good))
    del bad["machine"]["cores"]
    bad["rows"][0]["fps"] = "fast"
    bad["rows"][0]["drop_rate"] = 2.0
    bad["rows"][0]["surprise"] = 1
    bad["rows"][0]["section"] = "nope"
    bad["rows"][0]["seconds"] = float("inf")  # JSON has no infinity: not a number here
    problems = "\n".join(validate(bad))
    assert "$.machine: 'cores' is a required property" in problems
    assert "$.rows[0].fps: 'fast' is not of type 'number'" in problems
    assert "$.rows[0].seconds: inf is not of type 'number'" in problems
    assert "$.rows[0].drop_rate: 2.0 is greater than the maximum of 1" in problems
    assert "'surprise' was unexpected" in problems
    assert "$.rows[0].section: 'nope' is not one of" in problems
    assert len(validate(bad)) == 6
    with pytest.raises(ValueError, match="not a videoflow benchmark result"):
        BenchResult.from_dict(bad)


def test_save_refuses_a_result_that_breaks_the_schema(tmp_path):
    bad = BenchResult(rows=[_row(fps=float("nan"))], machine=machine_info())
    with pytest.raises(ValueError, match="schema"):
        bad.save(str(tmp_path / "bad.json"))
    assert not (tmp_path / "bad.json").exists()


def test_round_trip_and_compare():
    result = BenchResult(rows=[_row(fps=10.0)], machine=machine_info())
    again = BenchResult.from_dict(json.loads(result.to_json()))
    assert again.rows == result.rows
    faster = BenchResult(rows=[_row(fps=15.0), _row(impl="Pipe bytes")], machine={})
    changes = {c.key: c for c in compare(result, faster)}
    assert changes["handoff/videoflow/hops=1,size=64x48"].ratio == pytest.approx(1.5)
    assert changes["handoff/Pipe bytes/hops=1,size=64x48"].old_fps is None


def test_ratios_use_baselines_with_a_subset_of_the_params():
    rows = [
        _row(params={"size": "a", "hops": 3}, fps=30.0),
        _row(impl="mp.Queue+pickle", params={"size": "a", "hops": 3}, fps=3.0),
        _row(impl="mp.Queue+pickle", params={"size": "a", "hops": 1}, fps=1.0),
        _row(impl="single process", params={"size": "a"}, fps=60.0),
    ]
    add_ratios(rows)
    assert rows[0].ratios == {"mp.Queue+pickle": 10.0, "single process": 0.5}
    assert "videoflow" in format_table(rows)


def test_small_helpers():
    assert parse_size("1920x1080") == (1080, 1920)
    assert parse_size("4k") == (2160, 3840)
    with pytest.raises(ValueError):
        parse_size("1920")
    assert percentile([], 0.5) is None
    assert percentile([3, 1, 2], 0.5) == 2
    assert percentile(list(range(101)), 0.99) == 99


@pytest.mark.timeout(60)
def test_profile_option_writes_the_statistics_of_each_task(tmp_path):
    where = tmp_path / "prof"
    a = IntProducer(0, 99, name="src")
    b = IdentityProcessor(nb_tasks=2, name="mid")(a)
    c = VoidConsumer(name="sink")(b)
    flow = Flow([a], [c], flow_type=BATCH, flow_options={"profile": str(where)})
    flow.run()
    flow.join()
    assert_clean()
    files = sorted(p.name for p in where.iterdir())
    assert files == ["mid.0.prof", "mid.1.prof", "sink.0.prof", "src.0.prof"]
    table = pstats.Stats(str(where / "src.0.prof")).stats  # type: ignore[attr-defined]
    assert any(func == "next" for (_file, _line, func) in table)
    with pytest.raises(ValueError, match="flow option profile must be a directory"):
        Flow([a], [c], flow_options={"profile": 1})
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):  # in run(), before any task starts
        Flow([a], [c], flow_options={"profile": str(tmp_path / "file" / "prof")}).run()
    assert_clean()


@pytest.mark.timeout(60)
def test_profile_prints_each_task(capsys):
    assert main(["bench", "--profile", "--size", "64x48", "--hops", "1", "--duration", "0.05"]) == 0
    assert_clean()
    printed = capsys.readouterr().out
    for task in ("producer.0", "stage0.0", "consumer.0"):
        assert f"== {task}:" in printed
