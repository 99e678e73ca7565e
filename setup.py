"""Builds the optional C extension videoflow._native (sources in native/).

Everything else about the package is in pyproject.toml. The extension is optional: when it
cannot be built (no compiler, no Python headers) the install still succeeds and videoflow runs
on its pure-Python transport (``videoflow info`` says which is in use).
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing: the pure-Python path is complete."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    @staticmethod
    def _skip(exc: BaseException) -> None:
        print(
            f"WARNING: videoflow._native was not built ({exc}); "
            "videoflow will use its pure-Python transport",
            file=sys.stderr,
        )


setup(
    ext_modules=[
        Extension(
            "videoflow._native",
            sources=["native/_native.c", "native/ring.c"],
            depends=["native/ring.h"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
