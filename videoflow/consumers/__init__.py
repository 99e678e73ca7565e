"""Consumers: the nodes that end the branches of a flow."""

from videoflow.consumers.basic import CommandlineConsumer, VoidConsumer

__all__ = ["CommandlineConsumer", "VoidConsumer"]
