"""A worker process: one event loop serving HTTP on the listeners the master gives it."""

from . import compiled

COMPILED = compiled.activate(__path__)   # the hot path as C when its build is current
