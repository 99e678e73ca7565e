"""Consumers: the nodes that end the branches of a flow."""

from videoflow.consumers.basic import CommandlineConsumer, VoidConsumer
from videoflow.consumers.files import FileAppenderConsumer
from videoflow.consumers.mjpeg import MjpegServer
from videoflow.consumers.video import (
    ImageFolderWriter,
    JsonLinesWriter,
    VideoDisplay,
    VideofileWriter,
    VideoWriter,
)
from videoflow.consumers.webhook import WebhookConsumer

__all__ = [
    "CommandlineConsumer",
    "FileAppenderConsumer",
    "ImageFolderWriter",
    "JsonLinesWriter",
    "MjpegServer",
    "VideoDisplay",
    "VideoWriter",
    "VideofileWriter",
    "VoidConsumer",
    "WebhookConsumer",
]
