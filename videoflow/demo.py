"""The demo flow: blur a generated 1280x720 clip in several processes and encode it to a file."""

from __future__ import annotations

from videoflow.consumers.video import VideoWriter
from videoflow.core import BATCH, Flow, FlowStats
from videoflow.processors.vision import GaussianBlur
from videoflow.producers.shapes import MovingShapesProducer


def run_demo(
    output_path: str, nb_frames: int = 120, nb_tasks: int = 2, flow_type: str = BATCH
) -> FlowStats:
    """MovingShapesProducer (1280x720) -> GaussianBlur(nb_tasks) -> VideoWriter(output_path).

    An .mp4 (or .mov, .mkv) output is H.264 (``codec="auto"``: NVENC on an NVIDIA GPU that has
    it, libx264 elsewhere), a file browsers play; other extensions get the writer's default
    codec for them (MJPEG for .avi, VP9 for .webm). Returns the flow's final statistics
    (per-node frame counts; ``stats.notes`` says which encoder wrote).
    """
    codec = "auto" if VideoWriter.default_codec(output_path) == "h264" else None
    producer = MovingShapesProducer(1280, 720, count=nb_frames, fps=None, name="shapes")
    blur = GaussianBlur(ksize=15, nb_tasks=nb_tasks, name="blur")(producer)
    writer = VideoWriter(output_path, fps=25.0, codec=codec, name="writer")(blur)
    flow = Flow([producer], [writer], flow_type=flow_type)
    flow.run()
    flow.join()
    return flow.stats()
