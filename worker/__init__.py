"""A worker process: one event loop serving HTTP on the listeners the master gives it."""
