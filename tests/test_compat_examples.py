"""The original videoflow 0.2.10's examples run unchanged, with no ``__main__`` guard, and
print what the original prints; and how the start method is chosen for such scripts.

tests/compat_examples/ holds scripts that use the original's API as its five examples do;
tests/compat_expected/<name>.txt is what they print under the original videoflow 0.2.10.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from videoflow import mainguard
from videoflow.config import FlowConfig, choose_start_method
from videoflow.transport.names import owned_entries

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "compat_examples"
EXPECTED = HERE / "compat_expected"
GUARD = 'if __name__ == "__main__":'


def _group_members(pgid: int) -> list[int]:
    """Processes still alive in process group ``pgid`` (the script and its tasks)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def run_script(path: Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240):
    """Run ``path`` as a user would (``python script.py``) in a session of its own; check it
    left no process and no shared memory behind."""
    environ = {k: v for k, v in os.environ.items() if k != "VIDEOFLOW_START_METHOD"}
    environ.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, str(path)], cwd=str(cwd), env=environ, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.communicate()
    deadline = time.monotonic() + 10
    while (_group_members(proc.pid) or owned_entries(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_members(proc.pid), "the script's task processes outlived it"
    assert not owned_entries(proc.pid), "the script left shared memory behind"
    return proc.returncode, out, err


# Realtime flows drop what a full queue cannot take; on a busy machine a deep queue keeps the
# comparison about the API, not about the machine's load (the original drops the same way).
DEEP = {"VIDEOFLOW_QUEUE_DEPTH": "64", "VIDEOFLOW_REALTIME_DEPTH": "64"}


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "name",
    ["simple_example1", "simple_example2", "simple_mp_example1", "taskmodule_example"],
)
def test_original_example_prints_what_the_original_prints(tmp_path, name):
    code, out, err = run_script(EXAMPLES / f"{name}.py", tmp_path, env=DEEP)
    assert code == 0, err
    assert "Traceback" not in err, err
    assert out.splitlines() == (EXPECTED / f"{name}.txt").read_text().splitlines()


@pytest.mark.timeout(300)
def test_original_stopping_example_prints_a_prefix_and_exits_cleanly(tmp_path):
    code, out, err = run_script(EXAMPLES / "stopping_flow.py", tmp_path, env=DEEP)
    assert code == 0, err
    assert "Traceback" not in err, err
    full = (EXPECTED / "simple_example1.txt").read_text().splitlines()  # the same 41 pairs
    lines = out.splitlines()
    assert lines == full[: len(lines)]
    # what the original printed in its two seconds is such a prefix too
    assert (EXPECTED / "stopping_flow.txt").read_text().splitlines() == full[:21]


def test_examples_have_no_main_guard_and_the_original_api():
    for script in EXAMPLES.glob("*.py"):
        source = script.read_text()
        assert "__name__" not in source, script.name
        assert "flow_options" not in source and "nb_tasks=2)(" not in source, script.name


# -- the start method ---------------------------------------------------------------------------
PROBE = textwrap.dedent(
    """
    import sys
    from videoflow.consumers import VoidConsumer
    from videoflow.core import Flow
    from videoflow.producers import IntProducer

    def build(options=None):
        producer = IntProducer(0, 2)
        flow = Flow([producer], [VoidConsumer()(producer)], flow_options=options)
        print(flow.config.start_method)
        flow.run()
        flow.join()
    {body}
    """
)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "body, method",
    [
        ("build()", "fork"),
        (f"{GUARD}\n    build()", "forkserver"),
        ("if '__main__' == __name__:\n    build()", "forkserver"),
        ("if __name__ != '__main__':\n    pass\nelse:\n    build()", "forkserver"),
        ("build({'start_method': 'fork'})", "fork"),
        (f"{GUARD}\n    build({{'start_method': 'spawn'}})", "spawn"),
    ],
)
def test_start_method_follows_the_main_guard(tmp_path, body, method):
    script = tmp_path / "probe.py"
    script.write_text(PROBE.format(body=body))
    code, out, err = run_script(script, tmp_path)
    assert code == 0, err
    assert out.split() == [method]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["options", "environment"])
@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_forcing_forkserver_or_spawn_on_an_unguarded_script_names_the_guard(tmp_path, how, method):
    script = tmp_path / "probe.py"
    options = f"{{'start_method': '{method}'}}" if how == "options" else ""
    script.write_text(PROBE.format(body=f"build({options})"))
    env = {"VIDEOFLOW_START_METHOD": method} if how == "environment" else {}
    code, out, err = run_script(script, tmp_path, env=env)
    assert code != 0 and out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("ValueError: ") and GUARD in last and method in last, err
    line = PROBE.splitlines().index("{body}") + 1
    assert f"probe.py starts a flow at line {line} " in last  # where the flow is started
    assert "bootstrapping" not in err and err.count("Traceback") == 1


@pytest.mark.timeout(300)
def test_videoflow_run_takes_an_unguarded_script(tmp_path):
    environ = {k: v for k, v in os.environ.items() if k != "VIDEOFLOW_START_METHOD"}
    done = subprocess.run(
        [sys.executable, "-m", "videoflow.cli", "run", str(EXAMPLES / "simple_example2.py")],
        capture_output=True, text=True, timeout=240, cwd=str(tmp_path), env={**environ, **DEEP},
    )
    assert done.returncode == 0, done.stderr
    expected = (EXPECTED / "simple_example2.txt").read_text().splitlines()
    assert done.stdout.splitlines()[: len(expected)] == expected


# -- the detection, in this process ----------------------------------------------------------------
def _as_main(monkeypatch, tmp_path: Path, source: str, spec_name: str | None = None) -> dict:
    """Run ``source`` as if it were the main script, from its own file; it may call
    ``probe()``, which records what the detection says at that point."""
    path = tmp_path / "main_script.py"
    path.write_text(source)
    module = types.ModuleType("__main__")
    module.__file__ = str(path)
    module.__spec__ = None if spec_name is None else types.SimpleNamespace(name=spec_name)
    seen: dict = {}

    def probe(requested=None):
        seen["line"] = mainguard.unguarded_main_line()
        seen["method"] = choose_start_method(requested)

    module.__dict__["probe"] = probe
    monkeypatch.setitem(sys.modules, "__main__", module)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return seen


def test_detection_finds_the_unguarded_line(monkeypatch, tmp_path):
    seen = _as_main(monkeypatch, tmp_path, "x = 1\n\nprobe()\n")
    assert seen["line"] == (str(tmp_path / "main_script.py"), 3) and seen["method"] == "fork"


def test_detection_looks_at_the_main_thread_for_a_flow_made_in_another(monkeypatch, tmp_path):
    source = (
        "import threading\n"
        "t = threading.Thread(target=probe)\n"
        "t.start(); t.join()\n"
    )
    seen = _as_main(monkeypatch, tmp_path, source)
    assert seen["line"] == (str(tmp_path / "main_script.py"), 3) and seen["method"] == "fork"


def test_detection_sees_the_guard_around_a_call(monkeypatch, tmp_path):
    source = "def main():\n    probe()\n\n" + GUARD + "\n    x = 1\n    main()\n"
    seen = _as_main(monkeypatch, tmp_path, source)
    assert seen == {"line": None, "method": "forkserver"}


def test_detection_ignores_what_tasks_do_not_rerun(monkeypatch, tmp_path):
    # a package's __main__ (python -m pkg) is never run again by multiprocessing
    seen = _as_main(monkeypatch, tmp_path, "probe()\n", spec_name="pkg.__main__")
    assert seen == {"line": None, "method": "forkserver"}
    # a module run by name (python -m pkg.mod) is
    seen = _as_main(monkeypatch, tmp_path, "probe()\n", spec_name="pkg.mod")
    assert seen["method"] == "fork"


def test_detection_outside_the_main_script_keeps_forkserver():
    # here the main module is pytest's: nothing is re-run, the default stays
    assert mainguard.unguarded_main_line() is None
    assert choose_start_method(None) == "forkserver"
    assert FlowConfig.from_options().start_method in ("forkserver", "spawn", "fork")


def test_forced_method_on_unguarded_main_is_one_sentence(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="under `if __name__") as info:
        _as_main(monkeypatch, tmp_path, "probe('spawn')\n")
    assert str(info.value).count(". ") == 0 and "line 1" in str(info.value)
    assert _as_main(monkeypatch, tmp_path, "probe('fork')\n")["method"] == "fork"


def test_guarded_lines_reads_each_form_of_the_guard(tmp_path):
    path = tmp_path / "g.py"
    path.write_text(
        "a = 1\n"
        "if __name__ == '__main__':\n    b = 2\n    c = 3\n"
        "if __name__ != \"__main__\":\n    d = 4\nelse:\n    e = 5\n"
        "if '__main__' == __name__:\n    f = 6\n"
        "if x == '__main__':\n    g = 7\n"
    )
    assert mainguard.guarded_lines(str(path), 1) == ((3, 4), (8, 8), (10, 10))
    path.write_text("def broken(:\n")
    assert mainguard.guarded_lines(str(path), 2) is None
