"""Producers: the nodes that start a flow."""

from videoflow.producers.basic import IntProducer, SyntheticFrameProducer
from videoflow.producers.shapes import MovingShapesProducer, write_test_clip
from videoflow.producers.video import (
    ImageFolderReader,
    ImageProducer,
    VideoDeviceReader,
    VideofileReader,
    VideoUrlReader,
)

__all__ = [
    "ImageFolderReader",
    "ImageProducer",
    "IntProducer",
    "MovingShapesProducer",
    "SyntheticFrameProducer",
    "VideoDeviceReader",
    "VideoUrlReader",
    "VideofileReader",
    "write_test_clip",
]
