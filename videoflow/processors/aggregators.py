"""Stateful one-task processors that fold the stream of values into a running result."""

from __future__ import annotations

from typing import Any

from videoflow.core.node import OneTaskProcessorNode


class _Aggregator(OneTaskProcessorNode):
    """Emits the running aggregate after each value; state lives in the node's one task."""

    def __init__(self, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self._acc: Any = None

    def open(self) -> None:
        self._acc = None

    def _fold(self, acc: Any, value: Any) -> Any:
        raise NotImplementedError

    def process(self, value: Any) -> Any:
        self._acc = self._first(value) if self._acc is None else self._fold(self._acc, value)
        return self._acc

    def _first(self, value: Any) -> Any:
        return value


class SumAggregator(_Aggregator):
    """Running sum of the values."""

    def _fold(self, acc: Any, value: Any) -> Any:
        return acc + value


class MultiplicationAggregator(_Aggregator):
    """Running product of the values."""

    def _fold(self, acc: Any, value: Any) -> Any:
        return acc * value


class CountAggregator(_Aggregator):
    """Number of values seen so far."""

    def _first(self, value: Any) -> int:
        return 1

    def _fold(self, acc: Any, value: Any) -> int:
        return acc + 1


class MaxAggregator(_Aggregator):
    """Largest value seen so far."""

    def _fold(self, acc: Any, value: Any) -> Any:
        return value if value > acc else acc


class MinAggregator(_Aggregator):
    """Smallest value seen so far."""

    def _fold(self, acc: Any, value: Any) -> Any:
        return value if value < acc else acc
