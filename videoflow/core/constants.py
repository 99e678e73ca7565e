"""Flow types, device types and the stop sentinel, spelled as in the original videoflow."""

import logging

BATCH = "batch"
"""Nothing is dropped: a full queue makes its sender wait."""

REALTIME = "realtime"
"""A message is dropped (and its memory freed) when the next queue is full."""

CPU = "cpu"
GPU = "gpu"

FLOW_TYPES = (BATCH, REALTIME)
DEVICE_TYPES = (CPU, GPU)

STOP_SIGNAL = "alalsl;'sdlfj2389jdalskmghsaiaw98y8asdf;askljoa8y;dsf;lkasdb"
"""The original videoflow's in-band stop marker, kept with the same value for code that
imports or compares it. This engine stops flows out of band (a producer raises StopIteration,
or ``flow.stop()``); a node that returns this string sends it downstream like any other value."""

LOGGING_LEVEL = logging.INFO
"""The level the original set on its loggers; kept for code that imports it."""
