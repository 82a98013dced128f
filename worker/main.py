"""The worker's entry point: what the master runs in a forked child."""

from __future__ import annotations

from shared.stats import State

from .context import WorkerContext
from .server import Server


def run_worker(context: WorkerContext) -> int:
    """Serve on the inherited listeners until told to stop; returns the exit status.

    Modules are instantiated here, once per worker, after the fork, so whatever they
    open (files, backend connections) belongs to this process alone.
    """
    server = Server(context.config, context.listeners, idle_exit=context.idle_exit,
                    stats=context.stats, stats_slot=context.stats_slot,
                    master_pid=context.master_pid)
    server.install_signals()
    server.start_accepting()
    server.counters.set_state(State.READY)
    if context.on_ready is not None:
        context.on_ready()
    return server.run()
