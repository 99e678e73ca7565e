"""Reads the public API of the original videoflow 0.2.10: run it with that package's Python
(``/work/orig-venv/bin/python tests/compat_expected/original_api.py``) to print the JSON that
tests/compat_expected/original_api.json holds. Imports only; no flow runs, nothing downloads.
"""

import importlib
import inspect
import json
import sys

CLASSES = {
    "videoflow.core": ["Flow", "Node", "ConsumerNode", "ProcessorNode", "ProducerNode",
                       "FunctionProcessorNode"],
    "videoflow.core.flow": ["Flow"],
    "videoflow.core.node": ["Node", "Leaf", "ConsumerNode", "ProcessorNode",
                            "OneTaskProcessorNode", "TaskModuleNode", "FunctionProcessorNode",
                            "ModuleNode", "ProducerNode"],
    "videoflow.producers": ["IntProducer"],
    "videoflow.producers.basic": ["IntProducer"],
    "videoflow.processors": ["IdentityProcessor", "JoinerProcessor", "SumAggregator",
                             "MultiplicationAggregator", "CountAggregator", "MaxAggregator",
                             "MinAggregator"],
    "videoflow.processors.basic": ["IdentityProcessor", "JoinerProcessor"],
    "videoflow.processors.aggregators": ["SumAggregator", "MultiplicationAggregator",
                                         "CountAggregator", "MaxAggregator", "MinAggregator"],
    "videoflow.processors.vision.annotators": ["ImageAnnotator", "BoundingBoxAnnotator",
                                               "TrackerAnnotator", "SegmenterAnnotator"],
    "videoflow.processors.vision.transformers": ["CropImageTransformer",
                                                 "MaskImageTransformer",
                                                 "ResizeImageTransformer"],
    "videoflow.processors.vision.detectors": ["ObjectDetector"],
    "videoflow.processors.vision.segmentation": ["Segmenter"],
    "videoflow.processors.vision.trackers": ["BoundingBoxTracker"],
    "videoflow.consumers": ["CommandlineConsumer", "VoidConsumer"],
    "videoflow.consumers.basic": ["CommandlineConsumer", "VoidConsumer", "WebhookConsumer",
                                  "FileAppenderConsumer"],
}
# ImageProducer lives in videoflow.producers.video in the original; see test_compat_api.py.
EXTRA_CLASSES = {"videoflow.producers.video": ["ImageProducer"]}
METHODS = {
    "videoflow.core.node:Node": ["add_child", "remove_child", "open", "close"],
    "videoflow.core.flow:Flow": ["run", "join", "stop"],
}
CONSTANTS = {
    "videoflow.core.constants": ["BATCH", "REALTIME", "FLOW_TYPES", "GPU", "CPU",
                                 "DEVICE_TYPES", "STOP_SIGNAL", "LOGGING_LEVEL"],
}


def describe(signature):
    """A signature as JSON: one [name, kind, default] per parameter (default None: none)."""
    rows = []
    for p in signature.parameters.values():
        default = None if p.default is inspect.Parameter.empty else repr(p.default)
        rows.append([p.name, p.kind.name, default])
    return rows


def read_api():
    api = {"classes": {}, "methods": {}, "constants": {}}
    for table in (CLASSES, EXTRA_CLASSES):
        for module, names in table.items():
            mod = importlib.import_module(module)
            for name in names:
                api["classes"][f"{module}:{name}"] = describe(inspect.signature(getattr(mod, name)))
    for where, names in METHODS.items():
        module, cls = where.split(":")
        klass = getattr(importlib.import_module(module), cls)
        for name in names:
            api["methods"][f"{where}.{name}"] = describe(inspect.signature(getattr(klass, name)))
    for module, names in CONSTANTS.items():
        mod = importlib.import_module(module)
        for name in names:
            value = getattr(mod, name)
            if isinstance(value, (list, tuple)):
                value = list(value)
            api["constants"][f"{module}:{name}"] = value
    return api


def dumps(api):
    """JSON with one entry per line, so that a diff shows which name changed."""
    parts = []
    for section in sorted(api):
        rows = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(api[section].items())]
        parts.append(f" {json.dumps(section)}: {{\n" + ",\n".join(rows) + "\n }")
    return "{\n" + ",\n".join(parts) + "\n}\n"


if __name__ == "__main__":
    sys.stdout.write(dumps(read_api()))
