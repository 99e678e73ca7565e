"""FileAppenderConsumer: appends each value to a file, one JSON document per line."""

from __future__ import annotations

import os
from typing import Any

from videoflow.consumers.video import _check_folder_of
from videoflow.consumers.webhook import json_body
from videoflow.core.node import ConsumerNode


class FileAppenderConsumer(ConsumerNode):
    """Appends one line per value to the file at ``path``: the value as JSON (arrays as lists;
    a str is written as it is). The file is created if needed and never truncated, so several
    runs accumulate; use JsonLinesWriter for a fresh file with each message's index.

    The original videoflow's FileAppenderConsumer took no argument and raised
    NotImplementedError on its first value; here a missing ``path`` is an error at creation.
    """

    transient = ("_file",)

    def __init__(
        self, path: str | os.PathLike[str] | None = None, name: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        if path is None:
            raise ValueError(
                "FileAppenderConsumer needs the file to append to: "
                "FileAppenderConsumer(path='results.jsonl')"
            )
        self.path = os.fspath(path)
        _check_folder_of(self.path)
        self._file: Any = None

    def open(self) -> None:
        self._file = open(self.path, "ab")  # noqa: SIM115 (closed in close())

    def consume(self, *inputs: Any) -> None:
        line = json_body(inputs[0] if len(inputs) == 1 else list(inputs))
        self._file.write(line.replace(b"\n", b" ") + b"\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
