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
        names = [name for name in COMPAT_FIRST if name not in names] + names
        names += [name for name in COMPAT_LAST if name not in names]
    return names


def load_modules(configured: tuple[str, ...], compat_load: bool = True) -> list[type[Module]]:
    """Module classes for `server.modules`; raises ModuleNotAvailable for a missing one."""
    return [module_class(name) for name in module_names(configured, compat_load)]
