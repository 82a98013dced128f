"""The master process: command line, config loading, listeners, worker supervision."""

__version__ = "0.1.0"
