"""A worker process: one event loop serving HTTP on the listeners the master gives it."""

from shared import hotpath

COMPILED = hotpath.activate(__path__, "worker")   # the hot path as C when its build is current
