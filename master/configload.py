"""Load a config the way the master needs it: parsed, modules resolved, checked, compiled.

Every failure becomes a `ConfigError` with a place and a reason, so the command line and
a reload can report it in one line and keep running what they had.

Log files the workers will append to are part of the check (lighttpd opens them at
start-up and refuses to start without them), although workers open them lazily: a
module lists them with a `log_files(tree, checked)` classmethod, a config-time hook
found like the request hooks (by name, only on the modules that define it).  Each file
must open for append as the workers will run: after server.chroot and as
server.username when the master is root (checked in a forked child that becomes that
user), else as the current user; one that does not exist yet needs a writable
directory.  Nothing is created or written by the check.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from typing import NoReturn

from shared import log
from shared.config import ConfigError, ConfigTree, Position, load_config
from shared.config.compiled import CompiledConfig
from shared.config.core_directives import CORE_DIRECTIVES
from shared.config.directives import (CheckResult, Directive, DirectiveValueError,
                                      check_config, convert_value, directive_table)
from shared.config.feature_flags import value_bool
from shared.config.values import Array
from worker.module import Module
from worker.modules import ModuleNotAvailable, load_modules

from .privileges import Identity, become, resolve_identity


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


def resolve_modules(tree: ConfigTree) -> tuple[list[type[Module]], list[str]]:
    """The module classes of server.modules (with the ones compat loading adds), and
    the warnings about modules added because a key names them."""
    core = directive_table([CORE_DIRECTIVES])
    names = list(dict.fromkeys(_global_setting(tree, core, "server.modules")))
    compat = _global_setting(tree, core, "server.compat-module-load")
    names, warnings = _replacing_mod_compress(tree, names)
    warnings += _indexfile_order_warning(_kept_by_compat(tree, names) if compat else names)
    if compat:
        warnings += _auth_order_warning(names) + _adding_tls_module(tree, names)
    try:
        modules = load_modules(tuple(names), compat)
        while compat and (added := _companion(tree, modules, names)):
            after, companion = added
            warnings.append(f'Warning: please add "{companion}" to server.modules list in '
                            f"lighttpd.conf.  A future release of lighttpd 1.4.x will not "
                            f"automatically load {companion} and lighttpd will fail to "
                            f"start up since your lighttpd.conf uses {after}.")
            names.insert(names.index(after) + 1, companion)
            modules = load_modules(tuple(names), compat)
    except ModuleNotAvailable as err:
        entry = tree.root.keys.get("server.modules")
        raise ConfigError(str(err), entry.position if entry else None) from None
    return modules, warnings


def _sets_keys_of(tree: ConfigTree, prefix: str) -> bool:
    """Whether some block of the config sets a key starting with `prefix`."""
    return any(key.startswith(prefix) for block in tree.blocks for key, _ in block.keys.items())


def _replacing_mod_compress(tree: ConfigTree, names: list[str]) -> tuple[list[str], list[str]]:
    """mod_compress as lighttpd 1.4.69 takes it: mod_deflate in its place when the
    config sets compress.* keys (with lighttpd's warning), else dropped (and dropped
    too beside a listed mod_deflate)."""
    if "mod_compress" not in names:
        return names, []
    if not _sets_keys_of(tree, "compress."):
        return [name for name in names if name != "mod_compress"], []
    warning = ('Warning: "mod_compress" is DEPRECATED and has been replaced with '
               '"mod_deflate".  A future release of lighttpd 1.4.x will not contain '
               "mod_compress and lighttpd may fail to start up")
    if "mod_deflate" in names:
        return [name for name in names if name != "mod_compress"], [warning]
    return ["mod_deflate" if name == "mod_compress" else name for name in names], [warning]


# the modules that pass requests on to a backend, by the prefix lighttpd matches
DYNAMIC_BACKENDS = ("mod_ajp13", "mod_cgi", "mod_fastcgi", "mod_proxy", "mod_scgi",
                    "mod_sockproxy", "mod_wstunnel")


def _auth_order_warning(names: list[str]) -> list[str]:
    """lighttpd's warning for mod_auth listed after a module that passes requests on."""
    if "mod_auth" not in names:
        return []
    before = [name for name in names[:names.index("mod_auth")]
              if name.startswith(DYNAMIC_BACKENDS)]
    return [f"Warning: mod_auth should be listed in server.modules before dynamic "
            f"backends such as {before[0]}"] if before else []


# the modules that may answer a request for a directory themselves, before
# mod_indexfile had a chance to find its index file, when listed ahead of it
# (in lighttpd: the plugins with both a subrequest-start and a subrequest hook)
SUBREQUEST_HANDLERS = ("mod_cgi", "mod_dirlisting", "mod_fastcgi", "mod_scgi", "mod_ssi")


def _kept_by_compat(tree: ConfigTree, names: list[str]) -> list[str]:
    """`names` without the two modules lighttpd's compat loading unloads when no
    block turns them on: mod_indexfile without index file names, mod_dirlisting
    without listings."""
    idle = []
    if not _has_opt_enabled(tree, ("index-file.names", "server.indexfiles")):
        idle.append("mod_indexfile")
    if not _has_opt_enabled(tree, ("dir-listing.activate", "server.dir-listing")):
        idle.append("mod_dirlisting")
    return [name for name in names if name not in idle]


def _has_opt_enabled(tree: ConfigTree, keys: tuple[str, ...]) -> bool:
    """Whether some block sets one of `keys` to a non-empty list or to a value
    lighttpd reads as true."""
    for block in tree.blocks:
        for key in keys:
            entry = block.keys.get(key)
            if entry is None:
                continue
            value = entry.value
            if len(value) > 0 if isinstance(value, Array) else value_bool(value, False):
                return True
    return False


def _indexfile_order_warning(names: list[str]) -> list[str]:
    """lighttpd's warning for mod_indexfile listed after a module that answers
    requests itself (it always warns, compat loading or not)."""
    if "mod_indexfile" not in names:
        return []
    before = [name for name in names[:names.index("mod_indexfile")]
              if name in SUBREQUEST_HANDLERS]
    return [f"Warning: mod_indexfile should be listed in server.modules prior to "
            f"{before[0]}"] if before else []


def rename_keys(tree: ConfigTree, modules: list[type[Module]]) -> list[str]:
    """The keys the loaded modules read under a newer name (Module.renamed_keys) moved
    to it in every block, each with lighttpd's DEPRECATED warning (the old key wins
    over the new one in the same block, as in lighttpd, which reads it last)."""
    warnings = []
    for module in modules:
        for old, new in module.renamed_keys.items():
            for block in tree.blocks:
                entry = block.keys.get(old)
                if entry is None:
                    continue
                block.keys.extract(old)
                block.keys.replace(new, entry)
                warnings.append(f"{entry.position}: WARNING: DEPRECATED: {old} replaced "
                                f"with {new}")
    return warnings


# lighttpd's TLS modules: one listed, no other is added for ssl.* keys
TLS_MODULES = ("mod_openssl", "mod_gnutls", "mod_mbedtls", "mod_nss", "mod_wolfssl")


def _adding_tls_module(tree: ConfigTree, names: list[str]) -> list[str]:
    """ssl.* keys with no TLS module listed: mod_openssl appended to `names` (last, so
    after mod_extforward), as lighttpd loads it rather than serve those sockets in the
    clear, and lighttpd's warning."""
    if any(name in TLS_MODULES for name in names) or not _sets_keys_of(tree, "ssl."):
        return []
    names.append("mod_openssl")
    return ['Warning: please add "mod_openssl" to server.modules list in lighttpd.conf.  '
            "A future release of lighttpd 1.4.x *will not* automatically load mod_openssl "
            "and lighttpd *will not* use SSL/TLS where your lighttpd.conf contains ssl.* "
            "directives"]


def _companion(tree: ConfigTree, modules: list[type[Module]],
               names: list[str]) -> tuple[str, str] | None:
    """A module the config needs beside a loaded one (Module.companions) that
    server.modules lacks: (the loaded one, the companion), or None."""
    for module in modules:
        for key, by_value in module.companions.items():
            for block in tree.blocks:
                entry = block.keys.get(key)
                companion = by_value.get(entry.value) if entry is not None and \
                    isinstance(entry.value, str) else None
                if companion is not None and companion not in names:
                    return module.__module__.rsplit(".", 1)[1], companion
    return None


def _raise_all(errors: list[ConfigError]) -> None:
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigError("\n".join(map(str, errors)))


def _append_error(path: str) -> str:
    """Why this process could not open `path` for append ("" if it could), without
    creating it: a missing file needs a directory it may write in."""
    try:
        # O_NONBLOCK: a FIFO without a reader fails at once (ENXIO) instead of waiting
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_NOCTTY |
                         os.O_CLOEXEC))
    except FileNotFoundError as err:
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            return err.strerror
        return "" if os.access(directory, os.W_OK | os.X_OK) else os.strerror(errno.EACCES)
    except OSError as err:
        return "" if err.errno == errno.ENXIO else err.strerror  # ENXIO: FIFO, no reader yet
    return ""


def _worker_identity(settings: dict) -> Identity | None:
    """Who the workers will be when that is not who we are: a root master's workers
    after server.chroot / server.username / server.groupname."""
    if os.geteuid() != 0:
        return None
    identity = resolve_identity(settings)
    changed = identity.uid is not None or identity.gid is not None or identity.chroot
    return identity if changed else None


def _append_errors(paths: list[str], identity: Identity | None) -> list[str]:
    """`_append_error` of each path, as a worker of `identity` would see it."""
    if identity is None:
        return [_append_error(path) for path in paths]
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _report_as(identity, paths, write_fd)
    os.close(write_fd)
    with open(read_fd, "rb") as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not report:
        raise ConfigError("could not check the log files as the server's user")
    return json.loads(report)


def _report_as(identity: Identity, paths: list[str], write_fd: int) -> NoReturn:
    """The forked child: become the workers' user, check, write the reasons, exit."""
    status = 1
    try:
        try:
            become(identity)
            reasons = [_append_error(path) for path in paths]
        except OSError as err:
            reasons = [f"{err.strerror} (becoming the server's user)"] * len(paths)
        with open(write_fd, "wb") as pipe:
            pipe.write(json.dumps(reasons).encode())
        status = 0
    finally:
        os._exit(status)


def check_log_files(tree: ConfigTree, checked: CheckResult, modules: list[type[Module]],
                    settings: dict) -> None:
    """Every log file the modules name opens for append as the workers will run
    (`settings`: the typed global ones, for the workers' user)."""
    files: list[tuple[str, Position | None]] = [
        entry for module in modules if hasattr(module, "log_files")
        for entry in module.log_files(tree, checked)]
    if not files:
        return
    reasons = _append_errors([path for path, _ in files], _worker_identity(settings))
    _raise_all([ConfigError(f"opening log '{path}' failed: {reason}", where)
                for (path, where), reason in zip(files, reasons) if reason])


def breakage_logs(config: LoadedConfig) -> list[tuple[str, Position | None]]:
    """Every server.breakagelog the config names, with its place."""
    key = "server.breakagelog"
    found = [(config.compiled.globals[key], config.tree.root.keys.get(key))]
    found += [(block.settings.get(key), config.tree.blocks[block.index].keys.get(key))
              for block in config.compiled.blocks]
    return [(target, entry.position) for target, entry in found if target and entry]


def load(path: str) -> LoadedConfig:
    """Parse, resolve modules, check every value, compile.  Raises ConfigError."""
    tree = load_config(path)
    modules, module_warnings = resolve_modules(tree)
    module_warnings += rename_keys(tree, modules)
    directives = directive_table([CORE_DIRECTIVES, *(m.directives for m in modules)])
    checked = check_config(tree, directives)
    _raise_all(checked.errors)
    if not tree.global_value("server.document-root"):
        raise ConfigError("server.document-root is not set")
    compiled = CompiledConfig(tree, checked, directives)
    check_log_files(tree, checked, modules, compiled.globals)
    for module in modules:
        compiled.prepared[module.name] = module.prepare(tree, checked, compiled)
    return LoadedConfig(path=path, tree=tree, compiled=compiled, modules=modules,
                        warnings=tree.warnings + module_warnings + checked.warnings
                        + upload_dir_warnings(compiled.globals))


def upload_dir_warnings(settings: dict) -> list[str]:
    """lighttpd's start-up words for a server.upload-dirs entry that is missing or not
    a directory (inside server.chroot when there is one): request bodies too large
    for memory cannot be kept there, and the server runs on."""
    chroot = settings["server.chroot"]
    warnings = []
    for folder in settings["server.upload-dirs"]:
        where = os.path.join(chroot, folder.lstrip("/")) if chroot else folder
        if not os.path.exists(where):
            warnings.append(f"server.upload-dirs doesn't exist: {where}")
        elif not os.path.isdir(where):
            warnings.append(f"server.upload-dirs isn't a directory: {where}")
    return warnings


def log_warnings(loaded: LoadedConfig) -> None:
    """The config check's warnings (unknown keys, keys not acted on yet) in the error
    log once it is open, as lighttpd logs them when it starts, and again for the new
    config of a reload: a server must not drop them silently."""
    for warning in loaded.warnings:
        log.error("configfile.c", warning)
