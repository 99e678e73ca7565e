"""Producers: the nodes that start a flow."""

from videoflow.producers.basic import IntProducer, SyntheticFrameProducer

__all__ = ["IntProducer", "SyntheticFrameProducer"]
