"""lighttpd's config language: parse, check against module directives, compile.

`load_config(path)` gives a `ConfigTree`; `check_config` validates it against the
directives the loaded modules declare; `compile_config` turns it into what a worker
evaluates per request.
"""

from __future__ import annotations

import os
import sys

from .. import hotpath
from .errors import ConfigError, Position
from .parser import ConfigParser
from .printer import format_config
from .tree import ConfigTree

# the per-request form (compiled.py) as C when the hot path's build is current; none of
# the modules above imports it
hotpath.activate(__path__, "shared/config")

__all__ = ["ConfigError", "ConfigTree", "Position", "format_config", "load_config",
           "load_config_text"]


def load_config(path: str, environ: dict[str, str] | None = None) -> ConfigTree:
    """Parse the main config file `path` ('-' reads standard input)."""
    if path == "-":
        return load_config_text(sys.stdin.read(), "<stdin>", os.getcwd(), environ)
    parser = ConfigParser(basedir=os.path.dirname(os.path.abspath(path)), environ=environ)
    parser.parse_file(path)
    return parser.tree()


def load_config_text(text: str, source: str, basedir: str,
                     environ: dict[str, str] | None = None) -> ConfigTree:
    """Parse config text; includes are relative to `basedir`."""
    parser = ConfigParser(basedir=basedir, environ=environ)
    parser.parse_text(text, source)
    return parser.tree()
