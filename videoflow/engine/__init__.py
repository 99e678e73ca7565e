"""Execution engine (internal): task chain plan, task processes, stop/error protocol, counters."""
