"""Consumers: the nodes that end the branches of a flow."""

from videoflow.consumers.basic import CommandlineConsumer, VoidConsumer
from videoflow.consumers.video import (
    ImageFolderWriter,
    JsonLinesWriter,
    VideoDisplay,
    VideofileWriter,
    VideoWriter,
)

__all__ = [
    "CommandlineConsumer",
    "ImageFolderWriter",
    "JsonLinesWriter",
    "VideoDisplay",
    "VideoWriter",
    "VideofileWriter",
    "VoidConsumer",
]
