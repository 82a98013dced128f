"""The `pylighttpd` command line, with lighttpd's flags.

Exit status 0 on success, 1 on a config error, 2 on a usage error.  A bad config is
reported as `file:line:column: what was expected` and never as a Python traceback.
"""

from __future__ import annotations

import getopt
import os
import sys
from dataclasses import dataclass

from shared import log
from shared.config import ConfigError, format_config, load_config
from worker.oneshot import serve_stdin

from . import __version__, features
from .arbiter import Arbiter, StartupError
from .configload import load, log_warnings
from .privileges import resolve_identity

USAGE = f"""pylighttpd/{__version__} - a light and fast webserver
usage:
 -f <name>  filename of the config-file ("-" reads it from standard input)
 -m <name>  module directory (accepted for lighttpd compatibility; unused)
 -i <secs>  graceful shutdown after <secs> of inactivity
 -1         process single (one) request on stdin socket, then exit
 -p         print the parsed config-file in internal form, and exit
 -t         test config-file syntax, then exit
 -tt        test config-file syntax, load and init modules, then exit
 -D         don't go to background (default: go to background)
 -v         show version
 -V         show compile-time features
 -h         show this help
"""


class UsageError(Exception):
    pass


@dataclass
class Options:
    config: str | None = None
    test_level: int = 0
    print_config: bool = False
    foreground: bool = False
    one_shot: bool = False
    idle_exit: float | None = None
    action: str = "serve"          # serve | version | features | help


def parse_args(argv: list[str]) -> Options:
    try:
        pairs, rest = getopt.getopt(argv, "f:m:i:hvVD1pt")
    except getopt.GetoptError as err:
        raise UsageError(str(err)) from None
    if rest:
        raise UsageError(f"unexpected argument: {rest[0]}")
    options = Options()
    for flag, value in pairs:
        if flag == "-f":
            if options.config is not None:
                raise UsageError("-f may be given only once")
            options.config = value
        elif flag == "-i":
            try:
                options.idle_exit = float(value)
            except ValueError:
                raise UsageError(f"-i takes a number of seconds, not {value!r}") from None
            if options.idle_exit <= 0:
                raise UsageError("-i takes a positive number of seconds")
        elif flag == "-t":
            options.test_level += 1
        elif flag == "-p":
            options.print_config = True
        elif flag == "-D":
            options.foreground = True
        elif flag == "-1":
            options.one_shot = True
        elif flag in ("-v", "-V", "-h"):
            options.action = {"-v": "version", "-V": "features", "-h": "help"}[flag]
    return options


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as err:
        print(f"pylighttpd: {err}\n{USAGE}", file=sys.stderr, end="")
        return 2
    if options.action == "help":
        print(USAGE, end="")
        return 0
    if options.action == "version":
        print(f"pylighttpd/{__version__} - a light and fast webserver")
        return 0
    if options.action == "features":
        print(features.report(), end="")
        return 0
    if options.config is None:
        print(f"pylighttpd: no config file given (use -f FILE)\n{USAGE}", file=sys.stderr,
              end="")
        return 2
    try:
        return _run(options, sys.argv[1:] if argv is None else argv)
    except (ConfigError, StartupError) as err:
        print(f"pylighttpd: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # pid file directory missing, log file not writable, ...
        print(f"pylighttpd: {err.strerror}: {err.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(options: Options, argv: list[str]) -> int:
    if options.print_config:
        print(format_config(load_config(options.config)), end="")
        return 0
    if options.test_level == 1:
        load_config(options.config)  # syntax only, as lighttpd -t: modules are not loaded
        print("Syntax OK")
        return 0
    loaded = load(options.config)
    if options.test_level >= 2:
        if os.geteuid() == 0:               # as lighttpd -tt: who the workers become
            resolve_identity(loaded.settings)
        for warning in loaded.warnings:
            print(warning, file=sys.stderr)
        return 0
    if options.one_shot:
        settings = loaded.settings
        log.ensure_default(settings["server.errorlog"], settings["server.errorlog-use-syslog"],
                           settings["server.syslog-facility"])
        log_warnings(loaded)
        return serve_stdin(loaded)
    arbiter = Arbiter(loaded, foreground=options.foreground, idle_exit=options.idle_exit,
                      argv=argv)
    log_warnings(loaded)
    return arbiter.run()


if __name__ == "__main__":
    sys.exit(main())
