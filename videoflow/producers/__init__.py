"""Producers: the nodes that start a flow."""

from videoflow.producers.basic import ImageProducer, IntProducer, SyntheticFrameProducer
from videoflow.producers.shapes import MovingShapesProducer, write_test_clip
from videoflow.producers.video import (
    ImageFolderReader,
    VideoDeviceReader,
    VideofileReader,
    VideoUrlReader,
)
from videoflow.producers.video import ImageProducer as ImageFileReader

__all__ = [
    "ImageFileReader",
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
