"""Load a config the way the master needs it: parsed, modules resolved, checked, compiled.

Every failure becomes a `ConfigError` with a place and a reason, so the command line and
a reload can report it in one line and keep running what they had.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.config import ConfigError, ConfigTree, load_config
from shared.config.compiled import CompiledConfig
from shared.config.core_directives import CORE_DIRECTIVES
from shared.config.directives import (Directive, DirectiveValueError, check_config,
                                      convert_value, directive_table)
from worker.module import Module
from worker.modules import ModuleNotAvailable, load_modules


@dataclass
class LoadedConfig:
    """Everything a worker needs from the config; built once, inherited through fork."""

    path: str
    tree: ConfigTree
    compiled: CompiledConfig
    modules: list[type[Module]]
    warnings: list[str] = field(default_factory=list)

    @property
    def settings(self) -> dict:
        """The global (unconditional) settings, typed."""
        return self.compiled.globals


def _global_setting(tree: ConfigTree, directives: dict[str, Directive], key: str):
    entry = tree.root.keys.get(key)
    if entry is None:
        return directives[key].default
    try:
        return convert_value(directives[key], entry.value)
    except DirectiveValueError as err:
        raise ConfigError(f"{key}: {err}", entry.position) from None


def resolve_modules(tree: ConfigTree) -> list[type[Module]]:
    core = directive_table([CORE_DIRECTIVES])
    names = _global_setting(tree, core, "server.modules")
    compat = _global_setting(tree, core, "server.compat-module-load")
    try:
        return load_modules(tuple(names), compat)
    except ModuleNotAvailable as err:
        entry = tree.root.keys.get("server.modules")
        raise ConfigError(str(err), entry.position if entry else None) from None


def load(path: str) -> LoadedConfig:
    """Parse, resolve modules, check every value, compile.  Raises ConfigError."""
    tree = load_config(path)
    modules = resolve_modules(tree)
    directives = directive_table([CORE_DIRECTIVES, *(m.directives for m in modules)])
    checked = check_config(tree, directives)
    if checked.errors:
        raise checked.errors[0] if len(checked.errors) == 1 else ConfigError(
            "\n".join(str(e) for e in checked.errors))
    if not tree.global_value("server.document-root"):
        raise ConfigError("server.document-root is not set")
    compiled = CompiledConfig(tree, checked, directives)
    return LoadedConfig(path=path, tree=tree, compiled=compiled, modules=modules,
                        warnings=checked.warnings)
