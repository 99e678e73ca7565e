"""The original videoflow 0.2.10's public names: same import paths, same constructor arguments
(names, order, defaults) and the same behaviour, compared with the original itself.

tests/compat_expected/original_api.json holds the original's signatures, read by
tests/compat_expected/original_api.py under the original's Python; when that Python is on
this machine (VIDEOFLOW_ORIGINAL_PYTHON, default /work/orig-venv/bin/python) the snapshot and
the drawings of the vision nodes are also checked against it directly.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from videoflow.consumers import CommandlineConsumer, VoidConsumer
from videoflow.consumers.basic import FileAppenderConsumer, WebhookConsumer
from videoflow.consumers.video import to_json
from videoflow.core import BATCH, Flow
from videoflow.core.constants import CPU, GPU, STOP_SIGNAL
from videoflow.core.node import (
    ConsumerNode,
    FunctionProcessorNode,
    Leaf,
    ModuleNode,
    Node,
    OneTaskProcessorNode,
    ProcessorNode,
    ProducerNode,
    TaskModuleNode,
)
from videoflow.processors import IdentityProcessor, JoinerProcessor
from videoflow.processors.vision import annotators, transformers
from videoflow.processors.vision.annotators import (
    LABEL_DATASETS,
    BoundingBoxAnnotator,
    ImageAnnotator,
    SegmenterAnnotator,
    label_map_path,
    parse_label_map,
)
from videoflow.processors.vision.detectors import ObjectDetector
from videoflow.processors.vision.segmentation import Segmenter
from videoflow.processors.vision.trackers import BoundingBoxTracker
from videoflow.processors.vision.transformers import (
    CropImageTransformer,
    CvtColor,
    GaussianBlur,
    MaskImageTransformer,
    ResizeImageTransformer,
)
from videoflow.producers import ImageProducer, IntProducer, SyntheticFrameProducer

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "compat_expected"
sys.path.insert(0, str(EXPECTED))
import original_api  # noqa: E402  (the reader of the original's API, shared with this test)
import vision_inputs  # noqa: E402  (the inputs the original's vision nodes are given too)

ORIGINAL_PYTHON = os.environ.get("VIDEOFLOW_ORIGINAL_PYTHON", "/work/orig-venv/bin/python")
needs_original = pytest.mark.skipif(
    not os.path.exists(ORIGINAL_PYTHON),
    reason=f"the original videoflow 0.2.10 is not at {ORIGINAL_PYTHON}",
)
ORIGINAL_SITE = os.environ.get(
    "VIDEOFLOW_ORIGINAL_SITE", "/work/orig-venv/lib/python3.11/site-packages"
)
needs_original_source = pytest.mark.skipif(
    not os.path.exists(os.path.join(ORIGINAL_SITE, "videoflow", "processors", "vision")),
    reason=f"the original videoflow 0.2.10's source is not in {ORIGINAL_SITE}",
)
API = json.loads((EXPECTED / "original_api.json").read_text())
VARIADIC = ("VAR_POSITIONAL", "VAR_KEYWORD")


def incompatibilities(ours: list[list[Any]], original: list[list[Any]]) -> list[str]:
    """Why a call written for ``original`` could fail or mean something else with ``ours``:
    every named parameter of the original, at the same position with the same name, kind and
    default; parameters of ours beyond them have defaults."""
    theirs = [p for p in original if p[1] not in VARIADIC]
    mine = [p for p in ours if p[1] not in VARIADIC]
    problems = []
    for i, param in enumerate(theirs):
        got = mine[i] if i < len(mine) else None
        if got != param:
            problems.append(f"parameter {i}: original {param}, here {got}")
    extra = mine[len(theirs) :]
    problems += [f"extra parameter without a default: {p}" for p in extra if p[2] is None]
    return problems


def _resolve(key: str) -> Any:
    module, name = key.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("key", sorted(API["classes"]))
def test_constructor_arguments_match_the_original(key):
    ours = original_api.describe(inspect.signature(_resolve(key)))
    assert incompatibilities(ours, API["classes"][key]) == []


def test_image_producer_of_the_original_is_exported():
    for where in ("videoflow.producers:ImageProducer", "videoflow.producers.basic:ImageProducer"):
        ours = original_api.describe(inspect.signature(_resolve(where)))
        original = API["classes"]["videoflow.producers.video:ImageProducer"]
        assert incompatibilities(ours, original) == [], where


@pytest.mark.parametrize("key", sorted(API["methods"]))
def test_methods_match_the_original(key):
    where, method = key.rsplit(".", 1)
    ours = original_api.describe(inspect.signature(getattr(_resolve(where), method)))
    assert incompatibilities(ours, API["methods"][key]) == []


@pytest.mark.parametrize("key", sorted(API["constants"]))
def test_constants_match_the_original(key):
    value = _resolve(key)
    assert (list(value) if isinstance(value, (list, tuple)) else value) == API["constants"][key]


def test_the_check_itself_catches_what_breaks_a_call():
    original = [["fps", "POSITIONAL_OR_KEYWORD", "-1"], ["args", "VAR_POSITIONAL", None]]
    assert incompatibilities([["nb_tasks", "POSITIONAL_OR_KEYWORD", "1"]], original)
    assert incompatibilities([["fps", "POSITIONAL_OR_KEYWORD", "0"]], original)
    assert incompatibilities(
        [["fps", "POSITIONAL_OR_KEYWORD", "-1"], ["x", "KEYWORD_ONLY", None]], original
    )
    assert not incompatibilities(
        [["fps", "POSITIONAL_OR_KEYWORD", "-1"], ["name", "KEYWORD_ONLY", "None"]], original
    )


@needs_original
@pytest.mark.timeout(60)
def test_snapshot_is_what_the_installed_original_says():
    done = subprocess.run(
        [ORIGINAL_PYTHON, str(EXPECTED / "original_api.py")],
        capture_output=True, text=True, timeout=60, cwd=str(EXPECTED),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == API


# -- behaviour, node by node ------------------------------------------------------------------
def _recorded_sleeps(monkeypatch, module: str) -> list[float]:
    sleeps: list[float] = []
    monkeypatch.setattr(f"{module}.time.sleep", sleeps.append)
    return sleeps


def test_int_producer_end_is_included_and_fps_overrides_the_wait(monkeypatch):
    sleeps = _recorded_sleeps(monkeypatch, "videoflow.producers.basic")
    producer = IntProducer(start_value=5, end_value=7, wait_time_in_seconds=3.0, fps=4)
    producer.open()
    assert [producer.next() for _ in range(3)] == [5, 6, 7]
    with pytest.raises(StopIteration):
        producer.next()
    assert sleeps and set(sleeps) == {0.25}
    sleeps.clear()
    slow = IntProducer(0, 1, 0.5)
    slow.open()
    slow.next(), slow.next()
    assert sleeps == [0.5]
    forever = IntProducer(end_value=None)
    forever.open()
    assert [forever.next() for _ in range(1000)][-1] == 999


def test_identity_and_joiner_take_fps_first_then_the_processor_arguments(monkeypatch):
    sleeps = _recorded_sleeps(monkeypatch, "videoflow.processors.basic")
    node = IdentityProcessor(4, 3, name="i1")  # the original passed *args on to ProcessorNode
    assert (node.nb_tasks, node.device_type, node.name) == (3, CPU, "i1")
    assert node.process("x") == "x" and sleeps == [0.25]
    joiner = JoinerProcessor(fps=2, nb_tasks=5)
    assert joiner.nb_tasks == 5
    assert joiner.process(1, "a") == (1, "a") and sleeps == [0.25, 0.5]
    IdentityProcessor().process(1), JoinerProcessor(fps=-1).process(1)
    assert sleeps == [0.25, 0.5]


def test_commandline_consumer_sep_and_end(capsys):
    CommandlineConsumer(sep="-", end="|").consume((1, 2))
    CommandlineConsumer("-", "|").consume("a", "b")
    CommandlineConsumer().consume(3)
    assert capsys.readouterr().out == "(1, 2)|a-b|3\n"


def test_function_processor_node_takes_both_spellings():
    node = FunctionProcessorNode(abs, 2, GPU)
    assert (node.nb_tasks, node.device_type, node.name) == (2, GPU, "abs")
    assert FunctionProcessorNode(abs, nb_proc=3).nb_tasks == 3
    assert FunctionProcessorNode(abs, nb_tasks=4, device_type=GPU).nb_tasks == 4
    assert FunctionProcessorNode(processor_function=abs, device=GPU).device_type == GPU
    assert FunctionProcessorNode(abs).process(-2) == 2
    with pytest.raises(ValueError, match="nb_proc=2 and nb_tasks=3 disagree"):
        FunctionProcessorNode(abs, nb_proc=2, nb_tasks=3)
    with pytest.raises(TypeError, match="needs a callable"):
        FunctionProcessorNode(3)


def test_one_task_processor_takes_device_type_first():
    node = OneTaskProcessorNode(GPU, nb_tasks=4)
    assert (node.device_type, node.nb_tasks) == (GPU, 1)


def test_leaf_children_and_stop_signal():
    a, b, c = IntProducer(0, 1), IdentityProcessor(), VoidConsumer()
    assert isinstance(c, Leaf) and isinstance(c, ConsumerNode)
    assert not isinstance(b, Leaf)
    b(a)
    c(b)
    assert a.children == [b] and b.children == [c]
    a.add_child(c)
    a.add_child(c)  # a set in the original: no duplicate
    assert a.children == [b, c]
    a.remove_child(c)
    assert a.children == [b]
    with pytest.raises(ValueError, match="not a child"):
        a.remove_child(c)
    assert API["constants"]["videoflow.core.constants:STOP_SIGNAL"] == STOP_SIGNAL


def test_consumer_metadata_flag():
    assert ConsumerNode().metadata is False
    assert ConsumerNode(metadata=True).metadata is True
    assert ConsumerNode(True).metadata is True


# -- module-level nodes (task processes unpickle them by reference) ----------------------------
class PidTag(ProcessorNode):
    """Returns (value, [pid, ...]): its own process id appended to those it received."""

    def process(self, value: Any) -> tuple[Any, list[int]]:
        if isinstance(value, tuple):
            return value[0], [*value[1], os.getpid()]
        return value, [os.getpid()]


class PidJoin(ProcessorNode):
    def process(self, left: Any, right: Any) -> tuple[Any, list[int]]:
        assert left[0] == right[0]
        return left[0], sorted({*left[1], *right[1], os.getpid()})


class PidProducer(ProducerNode):
    def __init__(self, count: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.count = count

    def open(self) -> None:
        self.i = 0

    def next(self) -> tuple[int, list[int]]:
        if self.i >= self.count:
            raise StopIteration
        self.i += 1
        return self.i - 1, [os.getpid()]


class JsonLines(ConsumerNode):
    """Writes each value it gets (a tuple of them for several parents) as a JSON line, with
    this process's id."""

    def __init__(self, path: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = path

    def open(self) -> None:
        self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 (closed in close())

    def consume(self, *values: Any) -> None:
        self._f.write(json.dumps({"pid": os.getpid(), "values": to_json(list(values))}) + "\n")

    def close(self) -> None:
        self._f.close()


class Opened(ProcessorNode):
    """Adds the number of times open() ran in this process: the module must open it."""

    def open(self) -> None:
        self.opened = getattr(self, "opened", 0) + 1

    def process(self, value: Any) -> Any:
        return value + 100 * self.opened


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run(producer: Node, consumer: Node) -> None:
    flow = Flow([producer], [consumer], flow_type=BATCH)
    flow.run()
    flow.join()
    assert flow.stats().pool_slots_in_use == 0


@pytest.mark.timeout(90)
def test_task_module_runs_three_processors_in_one_process(tmp_path):
    producer = PidProducer(20)
    first = PidTag(name="first")(producer)
    second = PidTag(name="second")(first)
    joined = PidJoin(name="joined")(first, second)
    module = TaskModuleNode(first, joined)
    out = tmp_path / "out.jsonl"
    consumer = JsonLines(str(out))(module)
    assert module.parents == [producer] and producer.children == [module]
    assert consumer.parents == [module] and module.children == [consumer]
    assert module.nodes == [first, second, joined]
    flow = Flow([producer], [consumer], flow_type=BATCH)
    assert flow.nodes == [producer, module, consumer]
    flow.run()
    flow.join()
    stats = flow.stats()
    assert [n.name for n in stats.nodes] == [producer.name, module.name, consumer.name]
    assert sum(len(n.tasks) for n in stats.nodes) == 3  # three processes, not five
    records = _records(out)
    assert [r["values"][0][0] for r in records] == list(range(20))
    pids = {tuple(r["values"][0][1]) for r in records}
    assert len(pids) == 1  # every message: one producer pid and ONE pid for all three nodes
    producer_pid, module_pid = next(iter(pids))
    assert len({producer_pid, module_pid, records[0]["pid"]}) == 3


@pytest.mark.timeout(90)
def test_task_module_opens_its_nodes_and_runs_with_several_tasks(tmp_path):
    producer = IntProducer(0, 29)
    a = Opened()(producer)
    b = IdentityProcessor()(a)
    module = TaskModuleNode(a, b, nb_tasks=2)
    out = tmp_path / "out.jsonl"
    _run(producer, JsonLines(str(out))(module))
    assert [r["values"][0] for r in _records(out)] == [i + 100 for i in range(30)]


class CheckBlurGray(ConsumerNode):
    """Given (frame, result), writes whether result is the frame blurred then made grey."""

    def __init__(self, path: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = path

    def open(self) -> None:
        self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 (closed in close())

    def consume(self, frame: np.ndarray, result: np.ndarray) -> None:
        expected = cv2.cvtColor(cv2.GaussianBlur(frame, (5, 5), 0), cv2.COLOR_BGR2GRAY)
        self._f.write(f"{self.meta['index']}:{np.array_equal(result, expected)}\n")

    def close(self) -> None:
        self._f.close()


@pytest.mark.timeout(90)
def test_task_module_nodes_allocate_through_the_module(tmp_path):
    producer = SyntheticFrameProducer(shape=(48, 64, 3), count=12)
    blur = GaussianBlur(ksize=5)(producer)
    gray = CvtColor()(blur)
    module = TaskModuleNode(blur, gray, nb_tasks=2)
    out = tmp_path / "checks.txt"
    _run(producer, CheckBlurGray(str(out))(producer, module))
    assert out.read_text().split() == [f"{i}:True" for i in range(12)]


def test_task_module_keeps_item_selectors_and_repeated_parents():
    producer = IntProducer(0, 3)
    both = JoinerProcessor(name="both")(producer, producer)
    first = IdentityProcessor(name="first")(both[0])
    pair = JoinerProcessor(name="pair")(first, both[1])
    printer = VoidConsumer()(pair[1])
    module = TaskModuleNode(both, pair)
    assert producer.children == [module, module] and module.parents == [producer, producer]
    assert printer.parents == [module] and printer.parent_items == (1,)
    assert module.children == [printer]
    assert module.process(7, 7) == (7, 7)


def test_task_module_wiring_rules():
    producer = IntProducer(0, 3)
    a = IdentityProcessor(name="a")(producer)
    b = IdentityProcessor(name="b")(a)
    module = TaskModuleNode(a, b)
    with pytest.raises(RuntimeError, match="runs inside"):
        IdentityProcessor()(b)
    with pytest.raises(RuntimeError, match="runs inside"):
        a(producer)  # the entry gave its parents to the module
    with pytest.raises(RuntimeError, match="already called"):
        module(producer)
    with pytest.raises(ValueError, match="already in"):
        TaskModuleNode(a, b)

    # wired later: the module takes its parents on __call__
    c = IdentityProcessor()
    d = IdentityProcessor()(c)
    later = TaskModuleNode(c, d)(producer)
    assert later.parents == [producer]


def _consumer_inside(p: Node) -> tuple[Node, Node, int]:
    a = IdentityProcessor()(p)
    return a, VoidConsumer()(a), 1


def _gpu_inside(p: Node) -> tuple[Node, Node, int]:
    a = IdentityProcessor(device_type=GPU)(p)
    return a, IdentityProcessor()(a), 1


def _one_task_with_two_tasks(p: Node) -> tuple[Node, Node, int]:
    a = OneTaskProcessorNode()(p)
    return a, IdentityProcessor()(a), 2


def _parent_outside(p: Node) -> tuple[Node, Node, int]:
    a = IdentityProcessor()(p)
    return a, JoinerProcessor()(a, p), 1


def _dead_end(p: Node) -> tuple[Node, Node, int]:
    a = IdentityProcessor()(p)
    IdentityProcessor(name="dead_end")(a)
    return a, IdentityProcessor()(a), 1


def _not_descendant(p: Node) -> tuple[Node, Node, int]:
    return IdentityProcessor()(p), IdentityProcessor()(p), 1


@pytest.mark.parametrize(
    "build, message",
    [
        (_consumer_inside, "VoidConsumer.* is not a processor"),
        (_gpu_inside, "GPU"),
        (_one_task_with_two_tasks, "OneTaskProcessorNode"),
        (_parent_outside, "outside the module"),
        (_dead_end, "'dead_end' goes nowhere"),
        (_not_descendant, "not a descendant"),
    ],
)
def test_task_module_rejects_what_cannot_run_in_one_task(build, message):
    entry, exit_, nb_tasks = build(IntProducer(0, 3))
    with pytest.raises(ValueError, match=message):
        TaskModuleNode(entry, exit_, nb_tasks=nb_tasks)


def test_module_node_lists_its_processors_and_cannot_be_wired():
    a = IdentityProcessor()
    b = IdentityProcessor()(a)
    c = JoinerProcessor()(a, b)
    module = ModuleNode(a, c, name="m")
    assert module.nodes == [a, b, c] and module.name == "m"
    with pytest.raises(TypeError, match="TaskModuleNode"):
        module(IntProducer(0, 1))
    with pytest.raises(ValueError, match="not a descendant"):
        ModuleNode(b, a)
    x = IdentityProcessor()
    with pytest.raises(ValueError, match="neither a processor"):
        ModuleNode(x, VoidConsumer()(x))


@pytest.mark.timeout(90)
def test_metadata_consumer_gets_one_metadata_dict_per_parent(tmp_path):
    producer = IntProducer(0, 4)
    a = IdentityProcessor()(producer)
    out = tmp_path / "meta.jsonl"
    _run(producer, JsonLines(str(out), metadata=True)(producer, a))
    records = _records(out)
    stamps = [[m.pop("produced_ns") for m in r["values"]] for r in records]  # the frame's age
    assert all(len(set(pair)) == 1 for pair in stamps)  # counts from it (engine/control.py)
    assert [r["values"] for r in records] == [[{"index": i}, {"index": i}] for i in range(5)]


class _Recorder(BaseHTTPRequestHandler):
    bodies: list[tuple[str, str, Any]] = []

    def _take(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        type(self).bodies.append((self.command, self.headers["Content-Type"], body))
        self.send_response(204)
        self.end_headers()

    do_POST = do_PUT = _take

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.timeout(90)
def test_webhook_consumer_posts_json_from_its_task():
    _Recorder.bodies = []
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        producer = IntProducer(0, 3)
        _run(producer, WebhookConsumer(url)(producer))
        hook = WebhookConsumer(url, "put")
        hook.consume(np.arange(3))
        hook.consume('{"already": "json"}')
    finally:
        server.shutdown()
        server.server_close()
    assert _Recorder.bodies == [("POST", "application/json", i) for i in range(4)] + [
        ("PUT", "application/json", [0, 1, 2]),
        ("PUT", "application/json", {"already": "json"}),
    ]
    with pytest.raises(ValueError, match="URL"):
        WebhookConsumer("localhost:80")


@pytest.mark.timeout(90)
def test_file_appender_consumer_appends_json_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    for _ in range(2):
        producer = IntProducer(0, 2)
        pair = JoinerProcessor()(producer, producer)
        _run(producer, FileAppenderConsumer(str(path))(pair))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [[0, 0], [1, 1], [2, 2]] * 2
    with pytest.raises(ValueError, match=r"FileAppenderConsumer\(path="):
        FileAppenderConsumer()


@pytest.mark.timeout(90)
def test_image_producer_gives_the_image_once_in_rgb(tmp_path):
    bgr = np.zeros((6, 8, 3), dtype=np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    bgr[2, 3] = (1, 2, 3)
    path = tmp_path / "im.png"
    cv2.imwrite(str(path), bgr)
    producer = ImageProducer(str(path))
    out = tmp_path / "out.jsonl"
    _run(producer, JsonLines(str(out))(producer))
    records = _records(out)
    assert len(records) == 1
    assert np.array_equal(np.array(records[0]["values"][0]), bgr[..., ::-1])
    with pytest.raises(FileNotFoundError, match="nope"):
        ImageProducer(str(tmp_path / "nope.png"))


# -- vision: the original's base classes and drawings -------------------------------------------
def test_label_maps_ship_with_the_package():
    sizes = {name: len(parse_label_map(label_map_path(name))) for name in LABEL_DATASETS}
    assert sizes == {"coco": 80, "oidv4": 601, "pascal": 20, "kitti": 2, "faces": 1}
    coco = parse_label_map(label_map_path("coco"))
    assert coco[1] == "person" and coco[90] == "toothbrush"
    assert BoundingBoxAnnotator()._index_label_d == coco
    assert BoundingBoxAnnotator(class_labels_dataset="faces")._index_label_d == {1: "face"}
    with pytest.raises(ValueError, match="supported datasets"):
        BoundingBoxAnnotator(class_labels_dataset="imagenet")
    with pytest.raises(ValueError, match="supported datasets"):
        SegmenterAnnotator(class_labels_dataset="faces")
    with pytest.raises(ValueError, match="cannot be None"):
        BoundingBoxAnnotator(class_labels_dataset=None)


class Doubler(ObjectDetector):
    def _detect(self, im: np.ndarray) -> np.ndarray:
        return np.array([[0, 0, 2, 2, 1, 0.5]]) * 2


class Halves(Segmenter):
    def _segment(self, im: np.ndarray) -> Any:
        return im.shape[0] // 2


class Counter(BoundingBoxTracker):
    def _track(self, dets: np.ndarray) -> np.ndarray:
        return dets[:, :5]


def test_base_classes_route_process_to_the_subclass_hook():
    im = np.zeros((4, 4, 3), dtype=np.uint8)
    assert Doubler(nb_tasks=2).process(im).tolist() == [[0, 0, 4, 4, 2, 1.0]]
    assert Halves().process(im) == 2
    tracker = Counter()
    assert isinstance(tracker, OneTaskProcessorNode) and tracker.nb_tasks == 1
    assert tracker.process(np.ones((1, 6))).shape == (1, 5)
    for base, hook in ((ObjectDetector(), "_detect"), (Segmenter(), "_segment")):
        with pytest.raises(NotImplementedError, match=hook):
            base.process(im)
    with pytest.raises(NotImplementedError, match="_annotate"):
        ImageAnnotator().process(im, None)


@needs_original_source
@pytest.mark.timeout(120)
def test_vision_nodes_draw_exactly_what_the_original_draws(tmp_path):
    result = tmp_path / "original.npz"
    labels_dir = os.path.dirname(label_map_path("coco"))
    script = str(EXPECTED / "original_vision.py")
    done = subprocess.run(
        [sys.executable, script, ORIGINAL_SITE, labels_dir, str(result)],
        capture_output=True, text=True, timeout=120, cwd=str(EXPECTED),
    )
    assert done.returncode == 0, done.stderr
    theirs = dict(np.load(result))
    ours = vision_inputs.draw(annotators, transformers, label_map_path("coco"))
    assert sorted(theirs) == sorted(ours)
    for name, image in ours.items():
        assert image.dtype == theirs[name].dtype and np.array_equal(image, theirs[name]), name
    # the shipped label maps read the same with the original's parser
    their_labels = json.loads(Path(str(result) + ".labels.json").read_text())
    for name in LABEL_DATASETS:
        mine = parse_label_map(label_map_path(name))
        assert {int(k): v for k, v in their_labels[name].items()} == mine, name


def test_crop_transformer_checks_its_boxes():
    with pytest.raises(ValueError, match="less than 0"):
        CropImageTransformer(np.array([[-1, 0, 2, 2]]))
    with pytest.raises(ValueError, match="ymin > ymax"):
        CropImageTransformer(np.array([[3, 0, 2, 2]]))
    fixed = CropImageTransformer(np.array([[0, 0, 2, 3]]))
    assert [c.shape for c in fixed.process(vision_inputs.IMAGE)] == [(2, 3, 3)]
    with pytest.raises(ValueError, match="out of bounds"):
        fixed.process(vision_inputs.IMAGE, np.array([[0, 0, 61, 2]]))
    with pytest.raises(RuntimeError, match="not specified"):
        CropImageTransformer().process(vision_inputs.IMAGE)
    with pytest.raises(ValueError, match="same dimensions"):
        MaskImageTransformer().process(vision_inputs.IMAGE, np.ones((2, 2)))
    with pytest.raises(ValueError, match="negative"):
        ResizeImageTransformer().process(vision_inputs.IMAGE, (-1, 3))
