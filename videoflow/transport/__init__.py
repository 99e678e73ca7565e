"""Transport (internal): shared-memory slot pools, value codec, control queues."""
