"""Consumers: the nodes that end the branches of a flow.

Each takes ``ConsumerNode``'s keywords besides its own: ``name``, ``join`` (where several
producers' streams first meet at it) and ``realtime_drop`` (what a full queue in front of it
drops in a REALTIME flow).
"""

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
