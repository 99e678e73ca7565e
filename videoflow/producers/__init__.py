"""Producers: the nodes that start a flow.

This project's readers (``VideoReader``, ``StreamReader``, ``CameraReader``) produce BGR frames
alone, with what is known about them in ``self.meta``; the readers named as in videoflow 0.2.10
(``VideoFileReader``, ``VideostreamReader``, ...) produce that release's ``(index, frame)``.
"""

from videoflow.producers.basic import ImageProducer, IntProducer, SyntheticFrameProducer
from videoflow.producers.capture import CameraReader, CaptureReader, StreamReader, VideoReader
from videoflow.producers.shapes import MovingShapesProducer, write_test_clip
from videoflow.producers.video import (
    ImageFileReader,
    ImageFolderReader,
    VideoDeviceReader,
    VideoFileReader,
    VideofileReader,
    VideoFolderReader,
    VideostreamReader,
    VideoUrlReader,
)

__all__ = [
    "CameraReader",
    "CaptureReader",
    "ImageFileReader",
    "ImageFolderReader",
    "ImageProducer",
    "IntProducer",
    "MovingShapesProducer",
    "StreamReader",
    "SyntheticFrameProducer",
    "VideoDeviceReader",
    "VideoFileReader",
    "VideoFolderReader",
    "VideoReader",
    "VideoUrlReader",
    "VideofileReader",
    "VideostreamReader",
    "write_test_clip",
]
