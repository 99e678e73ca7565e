"""Inputs of the vision comparison, shared by tests/test_compat_api.py (this project) and
original_vision.py (run with the original videoflow): numpy only."""

import numpy as np

IMAGE = (np.arange(60 * 80 * 3, dtype=np.uint32).reshape(60, 80, 3) * 7 % 251).astype(np.uint8)
DETS = np.array([[10, 12, 40, 50, 1, 0.87], [2, 3, 20, 30, 3, 0.5]])  # ymin, xmin, ymax, xmax
TRACKS = np.array([[30, 5, 55, 25, 7], [2, 40, 20, 78, 12]])
MASKS = np.zeros((2, 60, 80), dtype=np.uint8)
MASKS[0, 10:30, 10:40] = 1
MASKS[1, 25:50, 30:70] = 1
MASK_CLASSES = np.array([1, 5])
CROPS = np.array([[0, 0, 10, 20], [5, 7, 60, 80]])
FLOAT_MASK = np.linspace(0.0, 1.0, 60 * 80).reshape(60, 80)
LABEL_DATASETS = ("coco", "oidv4", "pascal", "kitti", "faces")


def draw(annotators, transformers, coco_labels):
    """Every image the compared nodes make from the inputs, by name; ``annotators`` and
    ``transformers`` are the modules (the original's or this project's)."""
    out = {
        "boxes": annotators.BoundingBoxAnnotator(coco_labels).process(IMAGE, DETS),
        "tracks": annotators.TrackerAnnotator().process(IMAGE, TRACKS),
        "segments": annotators.SegmenterAnnotator(coco_labels).process(
            IMAGE, [MASKS, MASK_CLASSES, None]
        ),
        "resize": transformers.ResizeImageTransformer().process(IMAGE, (30, 50)),
        "letterbox": transformers.ResizeImageTransformer(maintain_ratio=True).process(
            IMAGE, (40, 100)
        ),
        "mask": transformers.MaskImageTransformer().process(IMAGE, FLOAT_MASK),
    }
    for i, crop in enumerate(transformers.CropImageTransformer().process(IMAGE, CROPS)):
        out[f"crop{i}"] = np.array(crop)
    return out
