"""Benchmark results: rows, the result of a run, its JSON schema, validation and comparison.

A result is plain data: ``BenchResult.to_dict()`` is what ``videoflow bench --json`` writes and
``SCHEMA`` documents it (JSON Schema draft 2020-12). ``validate`` checks a result with the
jsonschema package (the bench and test extras install it), numbers being finite ones, as JSON
has no NaN or infinity.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import sys
from collections.abc import Iterable
from typing import Any

SCHEMA_VERSION = 1

Number = int | float


@dataclasses.dataclass
class Row:
    """One measurement.

    section:      handoff, scaling, realtime, file, join or flow (a user's own flow).
    impl:         what moved the frames: ``videoflow`` or a baseline (see ``baselines.py``).
    params:       what was measured (size, hops, nb_tasks, rate, ...).
    frames:       frames timed (warm-up excluded); seconds: how long they took.
    fps, mb_s:    frames and megabytes (1e6 bytes of input frames) per second.
    us_per_frame: 1e6 / fps.
    hop_cpu_us:   CPU microseconds one pass-through task spends per frame (receive, decode,
                  encode, send): the cost of a hop, independent of how many cores there are.
    latency_*_ms: producer-to-consumer latency per frame; drop_rate: dropped / produced.
    ratios:       fps of this row over the fps of each baseline row measured on the same
                  params (a baseline's params are a subset of this row's).
    extra:        other figures, named (for example ``hop_latency_us``).
    """

    section: str
    impl: str
    params: dict[str, Any]
    frames: int
    seconds: float
    fps: float
    mb_s: float = 0.0
    us_per_frame: float = 0.0
    hop_cpu_us: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    drop_rate: float | None = None
    ratios: dict[str, float] = dataclasses.field(default_factory=dict)
    extra: dict[str, float] = dataclasses.field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        if not self.us_per_frame and self.fps > 0:
            self.us_per_frame = 1e6 / self.fps

    @property
    def key(self) -> str:
        """Identifies the row across runs (for ``compare``)."""
        params = ",".join(f"{k}={self.params[k]}" for k in sorted(self.params))
        return f"{self.section}/{self.impl}/{params}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclasses.dataclass
class BenchResult:
    """Everything one benchmark run measured, with the machine it ran on."""

    rows: list[Row]
    machine: dict[str, Any]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: str = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat()
    )
    skipped: list[str] = dataclasses.field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "created": self.created,
            "machine": dict(self.machine),
            "options": dict(self.options),
            "skipped": list(self.skipped),
            "rows": [row.to_dict() for row in self.rows],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        problems = validate(data)
        if problems:
            raise ValueError("not a videoflow benchmark result: " + "; ".join(problems[:5]))
        return cls(
            rows=[Row.from_dict(r) for r in data["rows"]],
            machine=data["machine"],
            options=data.get("options", {}),
            created=data["created"],
            skipped=data.get("skipped", []),
            schema_version=data["schema_version"],
        )

    @classmethod
    def load(cls, path: str) -> BenchResult:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def save(self, path: str) -> None:
        """Write the result as JSON; ValueError (and no file) if it breaks ``SCHEMA``."""
        problems = validate(self.to_dict())
        if problems:
            raise ValueError("result does not match its schema: " + "; ".join(problems[:5]))
        with open(path, "w") as f:
            f.write(self.to_json())
            f.write("\n")

    def find(self, section: str, impl: str, **params: Any) -> Row:
        """The row of ``section`` and ``impl`` whose params include ``params``."""
        for row in self.rows:
            if row.section == section and row.impl == impl and all(
                row.params.get(k) == v for k, v in params.items()
            ):
                return row
        raise KeyError(f"no row {section}/{impl} with {params}")


def add_ratios(rows: Iterable[Row], ours: str = "videoflow") -> None:
    """Fill ``ratios`` of each ``ours`` row against the baseline rows of its section whose
    params it shares (a single-process loop at one size serves every hop count)."""
    rows = list(rows)
    for row in rows:
        if row.impl != ours:
            continue
        for other in rows:
            if (
                other.impl != ours
                and other.section == row.section
                and other.params.items() <= row.params.items()
                and other.fps > 0
            ):
                row.ratios[other.impl] = row.fps / other.fps


# -- machine ---------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(start_method: str | None = None) -> dict[str, Any]:
    """CPU, cores, Python and library versions, native extension, start method."""
    import numpy

    from videoflow import __version__, native_status
    from videoflow.config import FlowConfig, available_cpus

    try:
        import cv2

        opencv = str(cv2.__version__)
    except ImportError:
        opencv = None
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count() or 1,
        "usable_cores": available_cpus(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "opencv": opencv,
        "videoflow": __version__,
        "native": native_status(),
        "start_method": start_method or FlowConfig.from_options().start_method,
        # Other processes compete for the cores: a load above the core count skews everything.
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# -- schema ----------------------------------------------------------------------------------
_NUM = {"type": "number"}
_OPT_NUM = {"type": ["number", "null"]}
_STR = {"type": "string"}

ROW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["section", "impl", "params", "frames", "seconds", "fps", "mb_s", "us_per_frame",
                 "hop_cpu_us", "latency_p50_ms", "latency_p99_ms", "drop_rate", "ratios", "extra",
                 "note"],
    "additionalProperties": False,
    "properties": {
        "section": {
            "type": "string",
            "enum": ["handoff", "scaling", "realtime", "file", "join", "flow"],
        },
        "impl": _STR,
        "params": {"type": "object", "additionalProperties": {"type": ["string", "number",
                                                                       "boolean", "null"]}},
        "frames": {"type": "integer", "minimum": 0},
        "seconds": {"type": "number", "minimum": 0},
        "fps": {"type": "number", "minimum": 0},
        "mb_s": {"type": "number", "minimum": 0},
        "us_per_frame": {"type": "number", "minimum": 0},
        "hop_cpu_us": _OPT_NUM,
        "latency_p50_ms": _OPT_NUM,
        "latency_p99_ms": _OPT_NUM,
        "drop_rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "ratios": {"type": "object", "additionalProperties": _NUM},
        "extra": {"type": "object", "additionalProperties": _NUM},
        "note": _STR,
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "videoflow benchmark result",
    "type": "object",
    "required": ["schema_version", "created", "machine", "options", "skipped", "rows"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
        "created": _STR,
        "machine": {
            "type": "object",
            "required": ["cpu_model", "cores", "usable_cores", "python", "numpy", "opencv",
                         "videoflow", "native", "start_method"],
            "properties": {
                "cpu_model": _STR,
                "cores": {"type": "integer", "minimum": 1},
                "usable_cores": {"type": "integer", "minimum": 1},
                "python": _STR,
                "numpy": _STR,
                "opencv": {"type": ["string", "null"]},
                "videoflow": _STR,
                "native": _STR,
                "start_method": {"type": "string", "enum": ["forkserver", "spawn", "fork"]},
                "load_average": {"type": ["array", "null"], "items": _NUM},
            },
        },
        "options": {"type": "object"},
        "skipped": {"type": "array", "items": _STR},
        "rows": {"type": "array", "items": ROW_SCHEMA},
    },
}

def _finite_number(checker: Any, value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    )


def _where(path: Iterable[Any]) -> str:
    """A path into the result as ``$.rows[0].fps``."""
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate(data: Any, schema: dict[str, Any] = SCHEMA) -> list[str]:
    """Check ``data`` against ``schema`` with jsonschema; returns the problems found, each as
    ``$.path: message`` (empty: valid). ImportError, saying what to install, without it."""
    try:
        import jsonschema
    except ImportError as exc:
        raise ImportError(
            "checking a benchmark result needs the jsonschema package: "
            'pip install "videoflow-shm[bench]"'
        ) from exc
    base = jsonschema.validators.validator_for(schema)
    checker = base.TYPE_CHECKER.redefine("number", _finite_number)
    validator = jsonschema.validators.extend(base, type_checker=checker)(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    return [f"{_where(e.absolute_path)}: {e.message}" for e in errors]


# -- comparison ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Change:
    key: str
    old_fps: float | None
    new_fps: float | None

    @property
    def ratio(self) -> float | None:
        if not self.old_fps or self.new_fps is None:
            return None
        return self.new_fps / self.old_fps


def compare(old: BenchResult, new: BenchResult) -> list[Change]:
    """fps of every row key in either result, old against new (None where a side lacks it)."""
    old_rows = {r.key: r for r in old.rows}
    new_rows = {r.key: r for r in new.rows}
    keys = list(new_rows) + [k for k in old_rows if k not in new_rows]
    return [
        Change(
            k,
            old_rows[k].fps if k in old_rows else None,
            new_rows[k].fps if k in new_rows else None,
        )
        for k in keys
    ]
