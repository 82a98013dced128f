"""mod_userdir: `/~user/path` served from a directory of that user's.

As lighttpd 1.4.69: with `userdir.path` set (even to "") and `userdir.active` on (the
default), a URL path `/~name/rest` maps to
- `<home of name>/<userdir.path>/rest`, the home from the password database, when
  `userdir.basepath` is empty, if that directory exists;
- `<basepath>/[<first letter>/]name/<userdir.path>/rest` otherwise, the name made of
  letters, digits, `-`, `_` and `.` only (`.` and `..` refused), lowercased with
  `server.force-lowercase-filenames`; `userdir.letterhomes` adds the letter.
A name in `userdir.exclude-user` (compared without case under
force-lowercase-filenames) or missing from a set `userdir.include-user` is left
alone: the URL then maps into the document root as any other.  `/~name` without the
slash is redirected to `/~name/` (301).

Password database lookups run in the worker's loop; they are remembered for a minute
(names not found as well), so a request does not look the same name up again.
"""

from __future__ import annotations

import pwd
import time
from typing import TYPE_CHECKING, Any

from shared.config.directives import Directive, Type

from ..handler import redirect_to_slash, set_physical
from ..module import HandlerResult, Module as BaseModule
from ..request import Request
from ..vhost import append_path, directory_errno

if TYPE_CHECKING:
    from ..services import Services

DIRECTIVES = (
    Directive("userdir.path", Type.STRING, None,
              doc="the directory of a home served under /~user/ (unset: module off)"),
    Directive("userdir.exclude-user", Type.ARRAY_VLIST, ()),
    Directive("userdir.include-user", Type.ARRAY_VLIST, None),
    Directive("userdir.basepath", Type.STRING, ""),
    Directive("userdir.letterhomes", Type.BOOL, False),
    Directive("userdir.active", Type.BOOL, True),
)
MAX_NAME = 255               # bytes: lighttpd's buffer for the name
LOOKUP_SECONDS = 60.0        # how long a password database answer is kept
MAX_LOOKUPS = 1024           # names kept at most (a flood of names clears them)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class HomeDirectories:
    """getpwnam() answers, each kept LOOKUP_SECONDS: the home directory, or "" for a
    name the database does not know."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[float, str]] = {}

    def home(self, name: str, now: float) -> str:
        kept = self.known.get(name)
        if kept is not None and kept[0] > now:
            return kept[1]
        try:
            home = pwd.getpwnam(name).pw_dir
        except (KeyError, ValueError, UnicodeError):
            home = ""
        if len(self.known) >= MAX_LOOKUPS:
            self.known.clear()
        self.known[name] = (now + LOOKUP_SECONDS, home)
        return home


def _listed(names: tuple[str, ...], name: str, ignore_case: bool) -> bool:
    if ignore_case:
        lower = name.lower()
        return any(entry.lower() == lower for entry in names)
    return name in names


def _user_directory(values: dict[str, Any], name: str, homes: HomeDirectories) -> str:
    """The directory that /~name/ maps to, or "" when it maps to none."""
    path, basepath = values["userdir.path"], values["userdir.basepath"]
    if not basepath:
        home = homes.home(name, time.monotonic())
        if not home:
            return ""
        directory = append_path(home, path)
        return "" if directory_errno(directory) else directory
    if name in (".", "..") or not _NAME_CHARS.issuperset(name):
        return ""
    if values["server.force-lowercase-filenames"]:
        name = name.lower()
    directory = basepath
    if values["userdir.letterhomes"]:
        if name.startswith("."):
            return ""
        directory = append_path(directory, name[0])
    return append_path(append_path(directory, name), path)


class Module(BaseModule):
    name = "userdir"
    replay_safe = True      # follows from the URL, the password database and files
    directives = DIRECTIVES

    def __init__(self, config: Any, services: "Services | None" = None) -> None:
        super().__init__(config, services)
        self.homes = HomeDirectories()

    def handle_physical(self, request: Request) -> HandlerResult:
        path = request.uri_path
        if not path.startswith("/~"):
            return None
        values = request.settings.values
        if not values["userdir.active"] or values["userdir.path"] is None:
            return None
        name, slash, rest = path[2:].partition("/")
        if not slash:
            return redirect_to_slash(request) if name else None
        if not name or not self._admits(values, name):
            return None
        directory = _user_directory(values, name, self.homes)
        if directory:
            set_physical(request, directory, "/" + rest)
        return None

    @staticmethod
    def _admits(values: dict[str, Any], name: str) -> bool:
        """The name fits lighttpd's buffer and the exclude and include lists."""
        if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
            return False
        if _listed(values["userdir.exclude-user"], name,
                   values["server.force-lowercase-filenames"]):
            return False
        included = values["userdir.include-user"]
        return included is None or name in included
