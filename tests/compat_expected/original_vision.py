"""``python original_vision.py SITE LABELS_DIR OUT``: draws vision_inputs.py's inputs with the
original videoflow 0.2.10's annotators and transformers, found in the site-packages folder
SITE, into OUT (.npz), and writes OUT.labels.json: the label maps of LABELS_DIR (this
project's shipped files) as the original's own parser reads them.

Run it with this project's Python: the original's package is imported under the name
``orig_videoflow``, next to this project's ``videoflow``, so that both draw with the same
OpenCV build (text rendering differs between OpenCV releases).
"""

import json
import os
import sys
import tempfile

import numpy as np
import vision_inputs

site, labels_dir, out = sys.argv[1:4]
alias = tempfile.mkdtemp(prefix="orig_videoflow.")
os.symlink(os.path.join(site, "videoflow"), os.path.join(alias, "orig_videoflow"))
sys.path.insert(0, alias)
sys.path.append(site)  # the original's own dependencies (six), after this project's numpy and cv2

from orig_videoflow.processors.vision import annotators, transformers  # noqa: E402
from orig_videoflow.utils.parsers import parse_label_map  # noqa: E402


def labels(name):
    return os.path.join(labels_dir, f"labels_{name}.pbtxt")


try:
    np.savez(out, **vision_inputs.draw(annotators, transformers, labels("coco")))
    with open(out + ".labels.json", "w") as f:
        maps = {name: parse_label_map(labels(name)) for name in vision_inputs.LABEL_DATASETS}
        json.dump(maps, f)
finally:
    os.unlink(os.path.join(alias, "orig_videoflow"))
    os.rmdir(alias)
