"""Transport (internal): shared-memory slot pools, value codec, control queues."""


def native_status() -> str:
    """Whether the native extension is in use ("off" until it is built)."""
    return "off (pure Python)"
