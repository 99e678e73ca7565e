"""Flow types and device types, spelled as in the original videoflow."""

BATCH = "batch"
"""Nothing is dropped: a full queue makes its sender wait."""

REALTIME = "realtime"
"""A message is dropped (and its memory freed) when the next queue is full."""

CPU = "cpu"
GPU = "gpu"

FLOW_TYPES = (BATCH, REALTIME)
DEVICE_TYPES = (CPU, GPU)
