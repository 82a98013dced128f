"""Code that the master and the workers both use: config language, stats, logging."""
