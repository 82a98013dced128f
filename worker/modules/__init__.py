"""Module discovery: `server.modules` names map to files in this package by name."""

from __future__ import annotations

import importlib
import re

from shared import hotpath

from ..module import Module

hotpath.activate(__path__, "worker/modules")    # as C where the build is current

# lighttpd loads these even when server.modules omits them (server.compat-module-load):
# mod_indexfile first (a directory's index file is found before mod_staticfile, or a
# gateway, would answer for the directory), the others last.
COMPAT_FIRST = ("mod_indexfile",)
COMPAT_LAST = ("mod_dirlisting", "mod_staticfile")
_MODULE_NAME = re.compile(r"mod_[a-z0-9_]+")


class ModuleNotAvailable(Exception):
    """A module named in server.modules that pylighttpd does not have."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f'module "{name}" named in server.modules is not available in '
                         "pylighttpd")


def module_class(name: str) -> type[Module]:
    if not _MODULE_NAME.fullmatch(name):
        raise ModuleNotAvailable(name)
    try:
        file = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"{__name__}.{name}":
            raise ModuleNotAvailable(name) from None
        raise
    return file.Module


def module_names(configured: tuple[str, ...], compat_load: bool) -> list[str]:
    """The modules to load, in order, without repeats, with the compat ones added
    where lighttpd adds them."""
    names = list(dict.fromkeys(configured))
    if compat_load:
        first = _frameworks_first(names)
        first += [name for name in COMPAT_FIRST if name not in names]
        names = list(dict.fromkeys(first + names))
        names += [name for name in COMPAT_LAST if name not in names]
    return names


def _frameworks_first(names: list[str]) -> list[str]:
    """What lighttpd puts in front for a backend listed without its framework:
    mod_vhostdb for a mod_vhostdb_* when mod_vhostdb is not listed, mod_auth for a
    mod_authn_* listed before mod_auth (or without it), so that the framework's
    hooks run and its keys (auth.require) are read."""
    auth_at = names.index("mod_auth") if "mod_auth" in names else len(names)
    first = []
    if "mod_vhostdb" not in names and any(name.startswith("mod_vhostdb_") for name in names):
        first.append("mod_vhostdb")
    if any(name.startswith("mod_auth") for name in names[:auth_at]):
        first.append("mod_auth")
    return first


def load_modules(configured: tuple[str, ...], compat_load: bool = True) -> list[type[Module]]:
    """Module classes for `server.modules`; raises ModuleNotAvailable for a missing one."""
    return [module_class(name) for name in module_names(configured, compat_load)]
