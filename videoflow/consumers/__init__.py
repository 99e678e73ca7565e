"""Consumers: the nodes that end the branches of a flow."""

from videoflow.consumers.basic import CommandlineConsumer, VoidConsumer
from videoflow.consumers.mjpeg import MjpegServer
from videoflow.consumers.video import (
    ImageFolderWriter,
    JsonLinesWriter,
    VideoDisplay,
    VideofileWriter,
)

__all__ = [
    "CommandlineConsumer",
    "ImageFolderWriter",
    "JsonLinesWriter",
    "MjpegServer",
    "VideoDisplay",
    "VideofileWriter",
    "VoidConsumer",
]
