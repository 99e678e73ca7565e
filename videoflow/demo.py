"""The demo flow: blur a generated 1280x720 clip in several processes and encode it to a file."""

from __future__ import annotations

from videoflow.consumers.video import VideofileWriter
from videoflow.core import BATCH, Flow, FlowStats
from videoflow.processors.vision import GaussianBlur
from videoflow.producers.shapes import MovingShapesProducer


def run_demo(
    output_path: str, nb_frames: int = 120, nb_tasks: int = 2, flow_type: str = BATCH
) -> FlowStats:
    """MovingShapesProducer (1280x720) -> GaussianBlur(nb_tasks) -> VideofileWriter(output_path).

    The output's codec follows its extension: MJPG for .avi, mp4v otherwise. Returns the
    flow's final statistics (per-node frame counts).
    """
    fourcc = "MJPG" if output_path.lower().endswith(".avi") else "mp4v"
    producer = MovingShapesProducer(1280, 720, count=nb_frames, fps=None, name="shapes")
    blur = GaussianBlur(ksize=15, nb_tasks=nb_tasks, name="blur")(producer)
    writer = VideofileWriter(output_path, fps=25.0, fourcc=fourcc, name="writer")(blur)
    flow = Flow([producer], [writer], flow_type=flow_type)
    flow.run()
    flow.join()
    return flow.stats()
