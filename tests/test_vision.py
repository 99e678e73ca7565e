"""Vision processors: transformers against plain OpenCV, detectors, tracker ids, annotators."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from video_helpers import FrameDump, expected_frame, load_dump, run_flow

from videoflow.consumers import JsonLinesWriter
from videoflow.processors import (
    BoxAnnotator,
    Crop,
    CvtColor,
    GaussianBlur,
    HaarFaceDetector,
    HogPeopleDetector,
    KalmanTracker,
    Mask,
    MotionDetector,
    Resize,
    SortTracker,
    TextAnnotator,
)
from videoflow.processors.vision import haar_available, hog_available, iou_matrix
from videoflow.producers import MovingShapesProducer
from videoflow.producers.shapes import person_box, render_frame, shape_boxes

W, H = 320, 240
FRAME = expected_frame(7, W, H)


def _readonly(frame: np.ndarray) -> np.ndarray:
    view = frame.view()
    view.flags.writeable = False
    return view


# -- transformers ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("node", "reference"),
    [
        (Resize(160, 100), lambda f: cv2.resize(f, (160, 100))),
        (Crop(10, 20, 100, 50), lambda f: f[20:70, 10:110]),
        (Crop(300, 200, 100, 100), lambda f: f[200:, 300:]),
        (CvtColor(cv2.COLOR_BGR2GRAY), lambda f: cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)),
        (CvtColor(cv2.COLOR_BGR2HSV), lambda f: cv2.cvtColor(f, cv2.COLOR_BGR2HSV)),
        (GaussianBlur(9), lambda f: cv2.GaussianBlur(f, (9, 9), 0)),
    ],
)
def test_transformers_match_opencv_on_read_only_inputs(node, reference):
    for _ in range(2):  # CvtColor learns its output shape on the first call
        out = node.process(_readonly(FRAME))
        assert np.array_equal(out, reference(FRAME))


def test_mask_keeps_the_inside_and_fills_the_rest():
    polygon = [(50, 50), (150, 50), (150, 120), (50, 120)]
    out = Mask(polygons=[polygon]).process(_readonly(FRAME))
    assert np.array_equal(out[60:110, 60:140], FRAME[60:110, 60:140])
    assert not out[:40].any() and not out[130:].any()
    inverted = Mask(polygons=[polygon], invert=True, fill=255).process(_readonly(FRAME))
    assert (inverted[60:110, 60:140] == 255).all()
    assert np.array_equal(inverted[:40], FRAME[:40])
    explicit = np.zeros((H, W), dtype=bool)
    explicit[: H // 2] = True
    half = Mask(mask=explicit).process(_readonly(FRAME))
    assert np.array_equal(half[: H // 2], FRAME[: H // 2]) and not half[H // 2 :].any()


def test_transformer_arguments_are_checked():
    with pytest.raises(ValueError):
        GaussianBlur(4)
    with pytest.raises(ValueError):
        Resize(0, 10)
    with pytest.raises(ValueError):
        Mask()
    with pytest.raises(ValueError, match="outside"):
        Crop(1000, 1000, 10, 10).process(FRAME)


@pytest.mark.timeout(60)
def test_transformer_chain_in_a_flow_is_exact(tmp_path):
    producer = MovingShapesProducer(W, H, count=20)
    crop = Crop(20, 10, 240, 200)(producer)
    resize = Resize(120, 100, nb_tasks=2)(crop)
    blur = GaussianBlur(5)(resize)
    gray = CvtColor(cv2.COLOR_BGR2GRAY)(blur)
    masked = Mask(polygons=[[(0, 0), (60, 0), (60, 100), (0, 100)]])(gray)
    run_flow(producer, [FrameDump(str(tmp_path / "dump"))(masked)])
    frames, metas = load_dump(str(tmp_path / "dump"))
    assert len(frames) == 20
    for i, frame in enumerate(frames):
        f = cv2.resize(expected_frame(i, W, H)[10:210, 20:260], (120, 100))
        f = cv2.cvtColor(cv2.GaussianBlur(f, (5, 5), 0), cv2.COLOR_BGR2GRAY)
        f[:, 61:] = 0
        assert np.array_equal(frame[:, :60], f[:, :60]) and not frame[:, 61:].any(), i
    assert [m["index"] for m in metas] == list(range(20))


# -- detectors -----------------------------------------------------------------------------------
def _best_iou(box, boxes) -> float:
    if len(boxes) == 0:
        return 0.0
    return float(iou_matrix(np.asarray([box], dtype=np.float32), boxes).max())


@pytest.mark.skipif(not hog_available(), reason="this OpenCV build has no HOGDescriptor")
def test_hog_finds_the_person_sprite():
    detector = HogPeopleDetector()
    detector.open()
    found = 0
    for i in range(0, 40, 4):
        boxes = detector.process(render_frame(i, W, H, with_person=True))
        assert boxes.dtype == np.float32 and boxes.shape[1] == 6
        found += _best_iou(person_box(i, W, H), boxes) > 0.4
    assert found >= 8


def test_detectors_without_opencv_support_fail_clearly():
    if hog_available():
        pytest.skip("this OpenCV has HOG")
    with pytest.raises(RuntimeError, match="HOGDescriptor"):
        HogPeopleDetector()


@pytest.mark.skipif(not haar_available(), reason="this OpenCV build has no Haar cascades")
def test_haar_face_detector_runs_and_finds_no_face_in_shapes():
    detector = HaarFaceDetector()
    detector.open()
    boxes = detector.process(render_frame(3, W, H))
    assert boxes.shape == (0, 6) or boxes.shape[1] == 6


def test_motion_detector_finds_the_moving_shapes():
    detector = MotionDetector()
    detector.open()
    for i in range(30):
        boxes = detector.process(render_frame(i, W, H))
    assert boxes.shape[1] == 6
    for truth in shape_boxes(29, W, H):
        assert _best_iou(truth[:4], boxes) > 0.5


# -- tracker -------------------------------------------------------------------------------------
def _linear_tracks(nb_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Three boxes on straight paths (one passes close to another), with noise and misses."""
    starts = np.array([(10, 20), (250, 30), (40, 180)], dtype=float)
    speeds = np.array([(4, 1), (-3, 2), (3, -1.5)])
    frames = []
    for i in range(nb_frames):
        xy = starts + speeds * i
        boxes = np.zeros((3, 6), dtype=np.float32)
        boxes[:, :2] = xy + rng.normal(0, 1.0, (3, 2))
        boxes[:, 2:4] = xy + 40 + rng.normal(0, 1.0, (3, 2))
        boxes[:, 4] = 0.9
        boxes[:, 5] = np.arange(3)  # class = which object, to check ids against
        keep = rng.random(3) > 0.15  # about one detection in seven is missed
        frames.append(boxes[keep])
    return frames


def test_tracker_ids_are_stable_with_noise_and_misses():
    tracker = SortTracker(max_age=3, min_hits=2)
    ids: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    reported = 0
    for dets in _linear_tracks(50, np.random.default_rng(1)):
        tracks = tracker.update(dets)
        assert tracks.shape[1] == 7 and tracks.dtype == np.float32
        for row in tracks:
            ids[int(row[5])].add(int(row[6]))
        reported += len(tracks)
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len(set().union(*ids.values())) == 3
    assert reported > 100


def test_tracker_boxes_follow_the_objects_and_tracks_expire():
    tracker = SortTracker(max_age=2, min_hits=1)
    box = np.array([[100, 100, 140, 140, 1.0, 0]], dtype=np.float32)
    for i in range(10):
        tracks = tracker.update(box + np.array([5 * i, 0, 5 * i, 0, 0, 0], dtype=np.float32))
    assert tracks[0, 6] == 1 and abs(tracks[0, 0] - 145) < 3
    for _ in range(4):
        assert len(tracker.update(np.zeros((0, 6), np.float32))) == 0
    assert tracker.tracks == []
    assert tracker.update(box)[0, 6] == 2  # a new object gets a new id


@pytest.mark.timeout(60)
def test_detect_track_write_flow(tmp_path):
    path = str(tmp_path / "tracks.jsonl")
    producer = MovingShapesProducer(W, H, count=30)
    detections = MotionDetector()(producer)
    tracks = KalmanTracker(min_hits=2)(detections)
    writer = JsonLinesWriter(path, keys=("detections", "tracks"))(detections, tracks)
    run_flow(producer, [writer])
    with open(path) as f:
        records = [json.loads(line) for line in f]
    assert [r["index"] for r in records] == list(range(30))
    # Once the background model has settled (about 15 frames), three tracks keep their ids.
    late = [r for r in records if r["index"] >= 15]
    assert all(len(r["tracks"]) == 3 for r in late)
    assert len({row[6] for r in late for row in r["tracks"]}) == 3


# -- annotators ----------------------------------------------------------------------------------
def test_box_annotator_draws_on_a_copy():
    frame = _readonly(FRAME)
    tracks = np.array([[30, 40, 90, 120, 0.9, 0, 7]], dtype=np.float32)
    out = BoxAnnotator().process(frame, tracks)
    assert out is not frame and np.array_equal(frame, FRAME)
    assert not np.array_equal(out[40, 30:90], FRAME[40, 30:90])
    assert np.array_equal(out[200:, 200:], FRAME[200:, 200:])
    dets = np.array([[30, 40, 90, 120, 0.9, 1]], dtype=np.float32)
    assert not np.array_equal(BoxAnnotator().process(frame, dets), FRAME)
    assert np.array_equal(BoxAnnotator().process(frame, np.zeros((0, 6))), FRAME)


def test_text_annotator_formats_metadata():
    node = TextAnnotator("frame {index} at {timestamp_ms} {missing}")
    node.meta.update(index=3, timestamp_ms=120.0)
    out = node.process(_readonly(FRAME))
    assert not np.array_equal(out[:30, :150], FRAME[:30, :150])
    assert np.array_equal(out[100:], FRAME[100:])
