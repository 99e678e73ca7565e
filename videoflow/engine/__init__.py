"""Execution engine: task chain plan, task processes, stop/error protocol, counters.

Internal: nothing here is a public API, and any of it may change without notice. Use
``videoflow.core`` (Flow, the nodes, FlowStats, NodeStats, TaskStats, Report) and
``videoflow.config`` (FlowConfig, available_cpus) instead. Names an engine author needs (the
``Engine`` protocol in ``engine/base.py``, ``register_engine`` in ``engine/engines.py``) are
documented in docs/architecture.md.
"""
