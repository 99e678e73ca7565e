"""The original videoflow's interface of image segmenters."""

from __future__ import annotations

from typing import Any

import numpy as np

from videoflow.core.node import ProcessorNode


class Segmenter(ProcessorNode):
    """Subclass it and implement ``_segment(im)``; ``process(im)`` returns its result.

    ``_segment`` takes an (h, w, 3) image and returns ``masks`` (nb_masks, h, w), ``classes``
    (nb_masks,) and ``scores`` (nb_masks,), the input of SegmenterAnnotator.
    """

    def _segment(self, im: np.ndarray) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement _segment(im)")

    def process(self, im: np.ndarray) -> Any:
        return self._segment(im)
