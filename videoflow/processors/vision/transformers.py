"""Frame transformers on OpenCV: this project's (Resize, Crop, Mask, CvtColor, GaussianBlur)
and the original videoflow's (CropImageTransformer, MaskImageTransformer,
ResizeImageTransformer), which take their parameters as a second input.

Outputs are written through OpenCV's ``dst=`` (or numpy's ``out=``) into an array from
``self.allocate(...)``, which lives in a shared-memory slot: the result travels downstream
without a copy. ``Crop`` returns a view of its input, which costs nothing at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from videoflow.core.node import ProcessorNode


def _size(width: int, height: int) -> tuple[int, int]:
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    return int(width), int(height)


class Resize(ProcessorNode):
    """cv2.resize to ``width`` x ``height`` (interpolation: a cv2.INTER_* flag)."""

    def __init__(
        self, width: int, height: int, interpolation: int = cv2.INTER_LINEAR, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.width, self.height = _size(width, height)
        self.interpolation = interpolation

    def process(self, frame: np.ndarray) -> np.ndarray:
        out = self.allocate((self.height, self.width, *frame.shape[2:]), frame.dtype)
        return cv2.resize(
            frame, (self.width, self.height), dst=out, interpolation=self.interpolation
        )


class Crop(ProcessorNode):
    """The region ``x, y, width, height`` of the frame (clipped to the frame).

    The output is a view of the input slot: no pixel is copied. An empty region is an error.
    """

    def __init__(self, x: int, y: int, width: int, height: int, **kw: Any) -> None:
        super().__init__(**kw)
        if x < 0 or y < 0:
            raise ValueError(f"x and y must be >= 0, got {x}, {y}")
        self.x, self.y = int(x), int(y)
        self.width, self.height = _size(width, height)

    def process(self, frame: np.ndarray) -> np.ndarray:
        region = frame[self.y : self.y + self.height, self.x : self.x + self.width]
        if region.size == 0:
            raise ValueError(
                f"crop ({self.x}, {self.y}, {self.width}, {self.height}) lies outside the "
                f"{frame.shape[1]}x{frame.shape[0]} frame"
            )
        return region


class Mask(ProcessorNode):
    """Keeps the pixels inside a mask and sets the others to ``fill``.

    mask:      an (H, W) array, non-zero where pixels are kept; or
    polygons:  a list of polygons (lists of (x, y) points) drawn as the kept area, on frames of
               any size.
    invert:    keep the pixels outside instead.
    """

    def __init__(
        self,
        mask: np.ndarray | None = None,
        polygons: Sequence[Sequence[tuple[int, int]]] | None = None,
        invert: bool = False,
        fill: int = 0,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if (mask is None) == (polygons is None):
            raise ValueError("Mask needs exactly one of mask= or polygons=")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim != 2:
                raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
            mask = (mask != 0).astype(np.uint8) * 255
        self.polygons = [np.asarray(p, dtype=np.int32) for p in (polygons or [])]
        self.invert, self.fill = invert, fill
        self._mask = None if mask is None else self._finish(mask)

    def _finish(self, mask: np.ndarray) -> np.ndarray:
        return cv2.bitwise_not(mask) if self.invert else mask

    def _mask_for(self, shape: tuple[int, ...]) -> np.ndarray:
        if self._mask is None or (self.polygons and self._mask.shape != shape[:2]):
            mask = np.zeros(shape[:2], dtype=np.uint8)
            cv2.fillPoly(mask, self.polygons, 255)
            self._mask = self._finish(mask)
        if self._mask.shape != shape[:2]:
            raise ValueError(f"mask is {self._mask.shape}, frame is {shape[:2]}")
        return self._mask

    def process(self, frame: np.ndarray) -> np.ndarray:
        mask = self._mask_for(frame.shape)
        out = self.allocate(frame.shape, frame.dtype)
        out.fill(self.fill)
        return cv2.copyTo(frame, mask, dst=out)


class CvtColor(ProcessorNode):
    """cv2.cvtColor with ``code`` (a cv2.COLOR_* constant, e.g. cv2.COLOR_BGR2GRAY).

    The output shape is learnt on the first frame of each input shape; after that OpenCV
    converts straight into the output slot.
    """

    def __init__(self, code: int = cv2.COLOR_BGR2GRAY, **kw: Any) -> None:
        super().__init__(**kw)
        self.code = code
        self._shapes: dict[tuple[tuple[int, ...], str], tuple[tuple[int, ...], Any]] = {}

    def process(self, frame: np.ndarray) -> np.ndarray:
        key = (frame.shape, frame.dtype.str)
        known = self._shapes.get(key)
        if known is None:
            converted = cv2.cvtColor(frame, self.code)
            self._shapes[key] = (converted.shape, converted.dtype)
            out = self.allocate(converted.shape, converted.dtype)
            np.copyto(out, converted)
            return out
        out = self.allocate(*known)
        return cv2.cvtColor(frame, self.code, dst=out)


class GaussianBlur(ProcessorNode):
    """cv2.GaussianBlur with a ``ksize`` x ``ksize`` kernel (odd) and ``sigma`` (0: from ksize)."""

    def __init__(self, ksize: int = 15, sigma: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        if ksize < 1 or ksize % 2 == 0:
            raise ValueError(f"ksize must be a positive odd number, got {ksize}")
        self.ksize, self.sigma = int(ksize), float(sigma)

    def process(self, frame: np.ndarray) -> np.ndarray:
        out = self.allocate(frame.shape, frame.dtype)
        return cv2.GaussianBlur(frame, (self.ksize, self.ksize), self.sigma, dst=out)


# -- the original videoflow's transformers ------------------------------------------------------
def _crop_boxes(crop_dimensions: Any) -> np.ndarray:
    """``crop_dimensions`` as an (n, 4) array of ``ymin, xmin, ymax, xmax``, checked."""
    boxes = np.asarray(crop_dimensions)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"crop_dimensions must be (n, 4): ymin, xmin, ymax, xmax; got {boxes.shape}"
        )
    if (boxes < 0).any():
        raise ValueError("One of the crop values is less than 0")
    if (boxes[:, 0] > boxes[:, 2]).any() or (boxes[:, 1] > boxes[:, 3]).any():
        raise ValueError("ymin > ymax or xmin > xmax")
    return boxes


class CropImageTransformer(ProcessorNode):
    """Crops an image into one region per row of ``crop_dimensions``; returns a list of crops
    (views of the input: the crops cost no copy until they are sent downstream).

    crop_dimensions: an (n, 4) array of ``ymin, xmin, ymax, xmax``, or None to take them from
                     a second parent: ``CropImageTransformer()(image, boxes)``.
    ValueError for negative values, ``ymin > ymax`` or ``xmin > xmax`` (at creation when
    given here) and for a region that goes beyond the image.
    """

    def __init__(self, crop_dimensions: np.ndarray | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crop_dimensions = None if crop_dimensions is None else _crop_boxes(crop_dimensions)

    def _crop(self, im: np.ndarray, crop_dimensions: Any = None) -> list[np.ndarray]:
        if crop_dimensions is None:
            if self.crop_dimensions is None:
                raise RuntimeError(
                    "Crop dimensions were not specified: give crop_dimensions= or a second parent"
                )
            boxes = self.crop_dimensions
        else:
            boxes = _crop_boxes(crop_dimensions)
        height, width = im.shape[:2]
        if (boxes[:, 2] > height).any() or (boxes[:, 3] > width).any():
            raise ValueError(
                f"One of the crop indexes is out of bounds of the {width}x{height} image"
            )
        return [im[int(y0) : int(y1), int(x0) : int(x1)] for y0, x0, y1, x1 in boxes]

    def process(self, im: np.ndarray, crop_dimensions: Any = None) -> list[np.ndarray]:
        return self._crop(im, crop_dimensions)


class MaskImageTransformer(ProcessorNode):
    """Multiplies an image by a mask: ``MaskImageTransformer()(image, mask)``.

    The mask is (h, w) with values between 0 and 1 (the image's height and width, or
    ValueError); every channel of a pixel is scaled by its mask value, truncated to uint8.
    """

    def _mask(self, im: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask)
        if mask.shape[:2] != im.shape[:2]:
            raise ValueError("`mask` does not have same dimensions as `im`")
        scaled = im * (mask.reshape(mask.shape[:2] + (1,) * (im.ndim - 2)).astype(np.float64))
        out = self.allocate(im.shape, np.uint8)
        np.copyto(out, scaled, casting="unsafe")
        return out

    def process(self, im: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._mask(im, mask)


def letterbox(im: np.ndarray, height: int, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """``im`` scaled by one factor to fit ``height`` x ``width``, at the top left of a black
    image of that size (the aspect ratio kept, the rest padded)."""
    ratio = min(height / im.shape[0], width / im.shape[1])
    h = max(1, min(height, int(im.shape[0] * ratio)))
    w = max(1, min(width, int(im.shape[1] * ratio)))
    if out is None:
        out = np.empty((height, width, *im.shape[2:]), dtype=im.dtype)
    out.fill(0)
    out[:h, :w] = cv2.resize(im, (w, h))
    return out


class ResizeImageTransformer(ProcessorNode):
    """Resizes an image to a size given by a second parent:
    ``ResizeImageTransformer()(image, size)`` with ``size = (new_height, new_width)``.

    maintain_ratio: keep the aspect ratio, padding the bottom or right with black.
    ValueError for a negative height or width.
    """

    def __init__(self, maintain_ratio: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._maintain_ratio = maintain_ratio

    def _resize(self, im: np.ndarray, new_size: Any) -> np.ndarray:
        height, width = (int(v) for v in new_size)
        if height < 0 or width < 0:
            raise ValueError("One of `width` or `height` is a negative value")
        out = self.allocate((height, width, *im.shape[2:]), im.dtype)
        if self._maintain_ratio:
            return letterbox(im, height, width, out=out)
        return cv2.resize(im, (width, height), dst=out)

    def process(self, im: np.ndarray, new_size: Any) -> np.ndarray:
        return self._resize(im, new_size)
