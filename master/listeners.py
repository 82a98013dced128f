"""Listening sockets: addresses from the config, one SO_REUSEPORT socket per worker slot.

The master owns every listening socket for as long as a generation of workers holds
its address; workers inherit them through fork and only ever close their own copies.
Unix sockets cannot be shared with SO_REUSEPORT, so a unix address has one socket that
every slot shares.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import stat

from shared import log
from shared.config import ConfigError
from shared.config.compiled import CompiledConfig

from .steering import accept_queue_length, steer_to, stop_steering

LISTEN_FDS_START = 3  # systemd's convention: passed sockets start at fd 3


@dataclasses.dataclass(frozen=True)
class Address:
    """One listen address: `spec` is how the config names it ($SERVER["socket"])."""

    spec: str
    family: int
    target: tuple | str   # (host, port) or a unix socket path
    v6only: bool = True   # server.set-v6only: an IPv6 socket does not take IPv4 too
    perms: str = ""       # server.socket-perms: octal mode of a unix socket
    defer_accept: bool = False      # server.defer-accept: TCP_DEFER_ACCEPT


def parse_address(spec: str, default_port: int) -> Address:
    """`host:port`, `:port`, `[v6]:port`, `/unix/path` -> Address; ConfigError if bad."""
    if spec.startswith("/"):
        return Address(spec, socket.AF_UNIX, spec)
    host, port_text = spec, ""
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0:
            raise ConfigError(f'bad socket address "{spec}": missing "]"')
        host, rest = spec[1:end], spec[end + 1:]
        if rest and not rest.startswith(":"):
            raise ConfigError(f'bad socket address "{spec}"')
        port_text = rest[1:]
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
    if port_text and not port_text.isdigit():
        raise ConfigError(f'bad port in socket address "{spec}"')
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ConfigError(f'port out of range in socket address "{spec}"')
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return Address(spec, family, (host or ("::" if family == socket.AF_INET6 else "0.0.0.0"),
                                  port))


def configured_addresses(config: CompiledConfig) -> list[Address]:
    """The main server.bind / server.port address plus every $SERVER["socket"] one,
    each with the socket options its own block sets (else the global ones)."""
    settings = config.globals
    port = settings["server.port"]
    bind = settings["server.bind"]
    if bind.startswith("/"):
        main = Address(bind, socket.AF_UNIX, bind)
    else:
        host = bind or ("::" if settings["server.use-ipv6"] else "0.0.0.0")
        main = parse_address(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", port)
    addresses = {main.target: _with_options(main, settings)}
    for spec in config.socket_specs():
        address = _with_options(parse_address(spec, port), config.socket_values(spec))
        addresses.setdefault(address.target, address)
    return list(addresses.values())


def _with_options(address: Address, values: dict) -> Address:
    """server.v4mapped, when set, decides over server.set-v6only (as in lighttpd); a
    TLS socket defers no accept (its handshake starts with the client's data anyway)."""
    v4mapped = values["server.v4mapped"]
    return dataclasses.replace(
        address, perms=values["server.socket-perms"],
        v6only=values["server.set-v6only"] if v4mapped is None else not v4mapped,
        defer_accept=values["server.defer-accept"] and not values.get("ssl.engine")
        and address.family != socket.AF_UNIX)


def open_socket(address: Address, backlog: int, reuse_port: bool) -> socket.socket:
    """Bind and listen; an OSError is turned into a one-line ConfigError."""
    sock = _bound_socket(address, reuse_port)
    try:
        if address.family == socket.AF_UNIX and address.perms:
            os.chmod(address.target, int(address.perms, 8))
        sock.listen(backlog)
        if address.defer_accept:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        raise _cannot_listen(address, err) from None
    return sock


def _bound_socket(address: Address, reuse_port: bool) -> socket.socket:
    """A socket bound to the address, with the options the config asks; ConfigError
    if the bind fails."""
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        if address.family == socket.AF_UNIX:
            _remove_stale_unix_socket(address.target)  # type: ignore[arg-type]
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(address.v6only))
        sock.bind(address.target)
    except OSError as err:
        sock.close()
        raise _cannot_listen(address, err) from None
    return sock


def _cannot_listen(address: Address, err: OSError) -> ConfigError:
    return ConfigError(f"cannot listen on {address.spec}: {err.strerror}")


def _remove_stale_unix_socket(path: str) -> None:
    """A socket file left by a server that is gone is removed; one a live server still
    listens on is an error, as in lighttpd (taking it over would leave that server
    unreachable)."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
            return
    raise OSError(errno.EADDRINUSE, "a server still listens on it")


def refuse_if_taken(address: Address) -> None:
    """A TCP address another process listens on is an error, as in lighttpd: the
    slots' SO_REUSEPORT would otherwise let this server take a share of that one's
    connections without a word.  A probe bound without SO_REUSEPORT finds the holder
    (sockets in TIME_WAIT do not count, as for the real bind)."""
    _bound_socket(address, reuse_port=False).close()


def tcp_migrate_req_enabled() -> bool | None:
    """net.ipv4.tcp_migrate_req: queued connections move off a closed SO_REUSEPORT socket."""
    try:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as file:
            return file.read().strip() == "1"
    except OSError:
        return None


def _same_address(sock: socket.socket, address: Address) -> bool:
    if sock.family != address.family:
        return False
    bound = sock.getsockname()
    if address.family == socket.AF_UNIX:
        return bound == address.target
    return (bound[0], bound[1]) == (address.target[0], address.target[1])


def _shared_by_all_slots(sock: socket.socket) -> bool:
    """A unix socket, or an inherited one without SO_REUSEPORT, cannot get siblings."""
    return sock.family == socket.AF_UNIX or not sock.getsockopt(socket.SOL_SOCKET,
                                                                 socket.SO_REUSEPORT)


def inherited_sockets(environ: dict[str, str]) -> list[tuple[socket.socket, str]]:
    """Sockets passed in systemd's LISTEN_FDS form (by systemd, or by our USR2).
    LISTEN_PID names this process, or, in lighttpd's `parent:PID` form, its parent:
    a process manager that cannot know the server's pid before it starts it (it
    passes its own sockets to a child) names itself that way."""
    listen_pid = environ.get("LISTEN_PID", "")
    owner = os.getppid() if listen_pid.startswith("parent:") else os.getpid()
    if listen_pid.removeprefix("parent:") != str(owner):
        return []
    count = int(environ.get("LISTEN_FDS", "0") or 0)
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    found = []
    for index in range(count):
        fd = LISTEN_FDS_START + index
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        os.set_inheritable(fd, False)
        found.append((sock, names[index] if index < len(names) else ""))
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(key, None)
    return found


def _one_socket_for_all_slots(sockets: list[socket.socket]) -> bool:
    """A unix socket, or an inherited one without SO_REUSEPORT: no steering, and no
    queue of a slot's own."""
    return sockets[0].family == socket.AF_UNIX or (len(sockets) > 1
                                                   and sockets[-1] is sockets[0])


def _steering(slots: list[int], group_size: int) -> tuple[int, ...] | None:
    """The slots of a group of `group_size` sockets to steer to; None for all of them."""
    wanted = tuple(slot for slot in slots if slot < group_size)
    return None if len(wanted) == group_size else wanted


def _key(address: Address) -> tuple:
    """What makes two configured addresses one: a reload that names the same address
    another way (`:80`, `0.0.0.0:80`) keeps its sockets rather than binding a second
    group on the port."""
    return address.family, address.target


@dataclasses.dataclass
class _Group:
    """One listen address: its sockets by slot, and the generations that hold it."""

    address: Address
    sockets: list[socket.socket]
    holders: set[int] = dataclasses.field(default_factory=set)
    # the slots new connections are steered to (None: all); not known until first set,
    # as for sockets inherited from a previous master that may have steered them
    steering: tuple[int, ...] | None = None
    steering_known: bool = False

    def close(self) -> None:
        for sock in {id(s): s for s in self.sockets}.values():
            sock.close()


class ListenerSet:
    """Every listening socket, by address and worker slot, owned by the master and held
    by the generations that serve it.

    A TCP address has one SO_REUSEPORT socket per slot so the kernel spreads
    connections over the workers; a unix address (or an inherited socket that has no
    siblings) is one socket that every slot shares.  An address stays open, the same
    sockets, while any generation holds it: a reload that keeps it, or that removes it
    and adds it back while the generation before still drains, never resets what
    waits in its queues.
    """

    def __init__(self, backlog: int, inherited: list[tuple[socket.socket, str]] = ()) -> None:
        self.backlog = backlog
        self.groups: dict[tuple, _Group] = {}
        self._inherited = list(inherited)

    def acquire(self, generation: int, addresses: list[Address], slots: int) -> None:
        """Let `generation` hold `addresses`, each with a socket for `slots` slots: the
        sockets of an address already open (held by another generation, or inherited
        from a previous master), new ones bound for the rest.  All or nothing: if one
        address cannot be bound (ConfigError), what this call bound is closed and every
        generation holds what it held."""
        opened: list[socket.socket] = []
        try:
            wanted = [(address, self._slot_sockets(address, slots, opened))
                      for address in addresses]
        except ConfigError:
            for sock in opened:
                sock.close()
            raise
        for address, sockets in wanted:
            group = self.groups.setdefault(_key(address), _Group(address, sockets))
            group.sockets = sockets
            group.holders.add(generation)
            self._inherited = [(s, name) for s, name in self._inherited if s not in sockets]

    def _slot_sockets(self, address: Address, slots: int,
                      opened: list[socket.socket]) -> list[socket.socket]:
        """The address's sockets for `slots` slots, binding what is missing (appended to
        `opened` as well)."""
        group = self.groups.get(_key(address))
        sockets = list(group.sockets) if group else self._inherited_for(address)
        if not sockets and address.family != socket.AF_UNIX:
            refuse_if_taken(address)      # the first socket this server binds there
        while len(sockets) < slots:
            if sockets and _shared_by_all_slots(sockets[0]):
                sockets.append(sockets[0])
                continue
            sock = open_socket(address, self.backlog,
                               reuse_port=address.family != socket.AF_UNIX)
            opened.append(sock)
            sockets.append(sock)
        return sockets

    def _inherited_for(self, address: Address) -> list[socket.socket]:
        """Inherited sockets for this address, in slot order (names end in `#slot`)."""
        mine = [(sock, name) for sock, name in self._inherited if _same_address(sock, address)]
        mine.sort(key=lambda pair: int(pair[1].rpartition("#")[2] or 0)
                  if pair[1].rpartition("#")[2].isdigit() else 0)
        return [sock for sock, _ in mine]

    def release(self, generation: int) -> list[str]:
        """`generation` has no worker left: close every address no other generation
        holds (what still waits in their queues was bound for no worker that is left);
        the specs closed."""
        closed = []
        for key, group in list(self.groups.items()):
            group.holders.discard(generation)
            if not group.holders:
                del self.groups[key]
                group.close()
                closed.append(group.address.spec)
        return closed

    def holders(self) -> set[int]:
        """The generations that hold some address."""
        return set().union(*(group.holders for group in self.groups.values()))

    def for_slot(self, slot: int, addresses: list[Address]) -> list[tuple[socket.socket, str]]:
        """A slot's sockets for these (held) addresses, each named as its config names it."""
        found = []
        for address in addresses:
            sockets = self.groups[_key(address)].sockets
            if slot < len(sockets):
                found.append((sockets[slot], address.spec))
        return found

    def close_in_child(self, keep: list[tuple[socket.socket, str]]) -> None:
        """In a forked worker: close the copies of every socket that is not its own.

        A copy left open in another worker would keep a retired slot's socket alive
        (and its accept queue unserved) after the master closed it.
        """
        mine = {id(sock) for sock, _ in keep}
        for group in self.groups.values():
            for sock in group.sockets:
                if id(sock) not in mine and sock.fileno() >= 0:
                    sock.close()

    def steer(self, slots: list[int]) -> None:
        """New connections go only to these slots' sockets, on every address; when they
        are all of an address's slots, the kernel spreads them as it does by default.
        Only a change reaches the kernel (a failure is logged once, not retried)."""
        for group in self.groups.values():
            sockets = group.sockets
            if not sockets or _one_socket_for_all_slots(sockets):
                continue
            wanted = _steering(slots, len(sockets))
            if group.steering_known and group.steering == wanted:
                continue
            group.steering, group.steering_known = wanted, True
            try:
                if wanted is None:
                    stop_steering(sockets[0])
                else:
                    steer_to(sockets[0], wanted)
            except OSError as err:
                log.error("server.c", f"cannot steer new connections on "
                          f"{group.address.spec} to slots {wanted}: {err.strerror}")

    def queued(self, slot: int, addresses: list[Address]) -> int:
        """Connections waiting in the queues of the slot's own sockets for these (held)
        addresses: the running generation's, since an address only a draining one
        holds gets no worker any more.  A socket that every slot shares is served by
        the other slots' workers."""
        groups = [self.groups[_key(address)] for address in addresses]
        return sum(accept_queue_length(group.sockets[slot]) for group in groups
                   if slot < len(group.sockets)
                   and not _one_socket_for_all_slots(group.sockets))

    def close_slot(self, slot: int) -> None:
        """Close the last slot's own sockets (shared ones stay); the next `steer` sets
        the smaller group's steering."""
        for group in self.groups.values():
            sockets = group.sockets
            if slot == len(sockets) - 1 and slot > 0:
                sock = sockets.pop()
                if sock is not sockets[0]:
                    sock.close()
                    group.steering_known = False

    def handover(self) -> tuple[list[int], list[str]]:
        """fds and names (`spec#slot`) for LISTEN_FDS / LISTEN_FDNAMES (USR2)."""
        fds, names = [], []
        for group in self.groups.values():
            for slot, sock in enumerate(group.sockets):
                if slot and sock is group.sockets[0]:
                    continue
                fds.append(sock.fileno())
                names.append(f"{group.address.spec}#{slot}")
        return fds, names
