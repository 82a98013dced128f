"""Chroot and privilege drop, done in each worker right after fork (the master keeps
root, as nginx's does, so it can rebind and re-read config on reload)."""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from shared.config import ConfigError


@dataclass(frozen=True)
class Identity:
    """Who a worker becomes; resolved in the master so a bad name fails at start-up."""

    uid: int | None
    gid: int | None
    groups: tuple[int, ...]
    chroot: str


def resolve_identity(settings: dict) -> Identity:
    username, groupname, chroot = (settings["server.username"], settings["server.groupname"],
                                   settings["server.chroot"])
    uid = gid = None
    groups: tuple[int, ...] = ()
    if username:
        try:
            user = pwd.getpwnam(username)
        except KeyError:
            raise ConfigError(f'server.username: unknown user "{username}"') from None
        uid, gid = user.pw_uid, user.pw_gid
        groups = tuple(os.getgrouplist(username, user.pw_gid))
    if groupname:
        try:
            gid = grp.getgrnam(groupname).gr_gid
        except KeyError:
            raise ConfigError(f'server.groupname: unknown group "{groupname}"') from None
    if uid == 0 or (gid == 0 and (username or groupname)):
        # as lighttpd: a name that comes back to root is a mistake, not a choice
        # (leaving both out keeps the identity that started the server)
        which = "server.username" if uid == 0 else "server.groupname"
        raise ConfigError(f"{which}: workers are never switched to root (id 0); leave it "
                          "out to keep the user that started the server")
    if chroot and not os.path.isdir(chroot):
        raise ConfigError(f'server.chroot: "{chroot}" is not a directory')
    if (uid is not None or chroot) and os.geteuid() != 0:
        raise ConfigError("server.username / server.chroot need the server started as root")
    return Identity(uid, gid, groups, chroot)


def become(identity: Identity) -> None:
    """chroot, then groups, gid, uid (in that order: afterwards we could not)."""
    if identity.chroot:
        os.chroot(identity.chroot)
        os.chdir("/")
    if identity.gid is not None:
        os.setgroups(list(identity.groups) or [identity.gid])
        os.setgid(identity.gid)
    if identity.uid is not None:
        os.setuid(identity.uid)
