"""The `bin-path` backends of the gateway modules, started and supervised by the master.

    fastcgi.server = ( ".php" => (( "bin-path" => "/usr/bin/php-cgi",
                                    "socket" => "/run/lighttpd/php.socket", ... )))

lighttpd starts these processes inside each server process, so with
`server.max-worker = N` it runs N sets of them, each server reaping and restarting its
own.  Here the master, which already supervises the workers, is the one parent: one set
of processes serves every worker, a process that dies is restarted (with a back-off)
whatever the workers do, and a HUP keeps the processes whose config did not change.
Workers only connect to the addresses (`HostSpec.procs`).

Each process is started as lighttpd's gw_spawn_connection starts it:

- its listening socket is made in the forked child, after server.chroot and as
  server.username (the master keeps root, so it forks the child and the child drops
  privileges first, as lighttpd spawns after its own setuid): a unix socket `socket-N`
  (a socket file already there is unlinked first; its mode comes from the umask, as in
  lighttpd) or TCP `host:port+N` with SO_REUSEADDR, `listen(listen-backlog)`;
- that socket is the process's fd 0 (FCGI_LISTENSOCK_FILENO), it runs in the directory
  of its program, in a process group of its own (see below), with SIGPIPE, SIGTTIN,
  SIGTTOU and SIGTSTP back to their defaults;
- `bin-path` is split on spaces and tabs and executed directly (no shell, no PATH),
  or run as `/bin/sh -c "exec <bin-path>"` for a module that asks for it
  (`HostSpec.bin_shell`: lighttpd's mod_scgi);
- its environment is the `bin-copy-environment` variables of the master's environment
  (the whole environment when that list is empty), then `bin-environment`, with
  PHP_FCGI_CHILDREN=1 unless set; the systemd LISTEN_* variables meant for the master
  are never passed on.

Where it differs from lighttpd: each process leads a process group of its own (php-cgi
makes one for its PHP_FCGI_CHILDREN anyway), and whatever is left of the group once
the process has exited is killed: the children of a php-cgi that was killed or crashed
would otherwise live on, reparented to init, serving a socket file that its restarted
successor has replaced (or holding a TCP address from it); signals are sent to the
whole group, and a
terminal's Ctrl-C reaches the master alone, which stops them.  The master owns each
address, so a socket file someone else listens on is replaced rather than used as an
external backend; stdout is /dev/null and stderr is the top-level server.breakagelog,
else the master's error log (lighttpd passes on its own stdout and stderr, stderr being
the breakagelog when there is one); a program that cannot be executed, or an address
that cannot be bound, is reported with its reason by the failing child through a
close-on-exec pipe, so a start or a reload fails with that message (a refused reload
keeps the running config).

Which processes run follows the generations (master/generation.py): a generation holds
the backends of its config from before its workers start until its last worker has
exited, and a backend no generation holds is stopped (`kill-signal`, SIGKILL after
STOP_GRACE) and its socket file removed, if the file is still the one it bound.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import stat
import time
from dataclasses import dataclass, field
from typing import Iterable, NoReturn

from shared import log
from shared.config import ConfigError
from shared.gateway_hosts import Extension, HostSpec, Proc, spawned_hosts

from .configload import LoadedConfig
from .privileges import Identity, become

STOP_GRACE = 5.0             # seconds between kill-signal and SIGKILL
GROUP_EXIT_WAIT = 1.0        # seconds a killed group's leftovers get to exit (_wait_for)
STARTUP_CHECK = 0.01         # a process that exits this soon failed to start (lighttpd)
BACKOFF_FIRST = 0.5          # seconds before restarting a process that died once
BACKOFF_MAX = 30.0
DEATH_WINDOW = 60.0          # deaths counted towards the back-off
MASTER_ONLY_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGTTIN, signal.SIGTTOU, signal.SIGTSTP)


class SpawnError(ConfigError):
    """A backend could not be started: refuses a start or a reload like a bad config."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"backend {name}: {detail}")
        self.detail = detail


@dataclass(frozen=True)
class Launch:
    """Everything that decides how one backend process is started.  Two configs whose
    Launch of a process is equal share that process across a reload."""

    argv: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]
    family: int
    address: tuple | str
    name: str                  # "unix:/run/php.socket-0", for logs
    listen_backlog: int
    kill_signal: int
    max_procs: int
    identity: Identity
    stderr_log: str = ""       # the top-level server.breakagelog, else the error log

    @property
    def unix_path(self) -> str:
        return self.address if self.family == socket.AF_UNIX else ""  # type: ignore


@dataclass
class Backend:
    """One process slot: its launch, who holds it, its pid while it runs."""

    launch: Launch
    holders: set[int] = field(default_factory=set)   # generation numbers
    pid: int | None = None
    socket_inode: tuple[int, int] | None = None       # (st_dev, st_ino) of its socket file
    deaths: list[float] = field(default_factory=list)
    next_start: float = 0.0
    stop_deadline: float | None = None                # set once it is told to stop


# ------------------------------------------------------------------ from the config
def spawned_in(config: LoadedConfig) -> list[HostSpec]:
    """The `bin-path` hosts of every `*.server` directive of every config block, found
    by the type of their value (a tuple of Extension), not by module."""
    compiled = config.compiled
    settings = [compiled.globals, *(block.settings for block in compiled.blocks)]
    return [spec for values in settings for key, value in values.items()
            if key.endswith(".server") and _is_extensions(value)
            for spec in spawned_hosts(value)]


def _is_extensions(value: object) -> bool:
    return isinstance(value, tuple) and bool(value) and \
        all(isinstance(item, Extension) for item in value)


def plan(config: LoadedConfig, identity: Identity,
         environ: dict[str, str] | None = None) -> list[Launch]:
    """The processes `config` needs, each address once; ConfigError when a program is
    not executable or one address is given two different programs (lighttpd's
    "duplicate unixsocket path")."""
    environ = dict(os.environ if environ is None else environ)
    launches: dict[object, Launch] = {}
    for spec in spawned_in(config):
        _check_program(spec, identity)
        for proc in spec.procs:
            launch = _launch(spec, proc, identity, environ,
                             config.settings["server.breakagelog"])
            known = launches.setdefault(_address_key(launch), launch)
            if known != launch:
                raise ConfigError(f"{proc.name}: two different backends are configured "
                                  "on this address")
    return list(launches.values())


def program_argv(bin_path: str) -> tuple[str, ...]:
    """`bin-path` split as lighttpd splits it: at every space and tab."""
    return tuple(re.split(r"[ \t]", bin_path))


def launch_argv(spec: HostSpec) -> tuple[str, ...]:
    """What is executed: the split bin-path, or the shell running it."""
    if spec.bin_shell:
        return ("/bin/sh", "-c", f"exec {spec.bin_path}")
    return program_argv(spec.bin_path)


def backend_environment(spec: HostSpec, environ: dict[str, str]) -> dict[str, str]:
    """lighttpd's rules: the variables `bin-copy-environment` names (all of them when it
    names none), then `bin-environment`, and PHP_FCGI_CHILDREN=1 unless set."""
    inherited = {key: value for key, value in environ.items()
                 if key not in MASTER_ONLY_VARIABLES}
    if spec.bin_copy_environment:
        inherited = {key: inherited[key] for key in spec.bin_copy_environment
                     if key in inherited}
    inherited.update(spec.bin_environment)
    inherited.setdefault("PHP_FCGI_CHILDREN", "1")
    return inherited


def _launch(spec: HostSpec, proc: Proc, identity: Identity,
            environ: dict[str, str], stderr_log: str) -> Launch:
    argv = launch_argv(spec)
    program = os.path.abspath(argv[0]) if not identity.chroot else argv[0]
    return Launch(argv=(program, *argv[1:]),
                  environment=tuple(sorted(backend_environment(spec, environ).items())),
                  family=proc.family, address=proc.address, name=proc.name,
                  listen_backlog=spec.listen_backlog, kill_signal=spec.kill_signal,
                  max_procs=spec.max_procs, identity=identity, stderr_log=stderr_log)


def _check_program(spec: HostSpec, identity: Identity) -> None:
    """The program exists, is a regular file and has an execute bit (lighttpd's check;
    inside server.chroot when there is one)."""
    program = program_argv(spec.bin_path)[0]
    where = _outside_chroot(program, identity)
    try:
        mode = os.stat(where).st_mode
    except OSError as err:
        raise ConfigError(f'invalid "bin-path" => "{spec.bin_path}" for {spec.name}: '
                          f"{err.strerror}") from None
    if not stat.S_ISREG(mode) or not mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        raise ConfigError(f'invalid "bin-path" => "{spec.bin_path}" for {spec.name}: '
                          "not an executable regular file")


def _outside_chroot(path: str, identity: Identity) -> str:
    """Where the master (not chrooted) finds a path the backend sees."""
    if not identity.chroot:
        return path
    return os.path.join(identity.chroot, path.lstrip("/"))


def _address_key(launch: Launch) -> object:
    return (launch.family, launch.address)


# ----------------------------------------------------------------------- the spawner
class Spawner:
    """The backends of every live generation, started, reaped, restarted and stopped
    from the master's loop (never blocking longer than a starting child's exec)."""

    def __init__(self, errorlog: log.ErrorLog) -> None:
        self.errorlog = errorlog          # the backends' stderr
        self.backends: dict[Launch, Backend] = {}
        self.owners: dict[object, Launch] = {}   # address -> the backend serving it

    # ---------------------------------------------------------------- generations
    def acquire(self, generation: int, launches: Iterable[Launch]) -> None:
        """Let `generation` hold these backends, starting those not running yet.  All or
        nothing: on a SpawnError what this call started is stopped and the error
        raised, every other backend untouched."""
        started: list[Backend] = []
        try:
            for launch in launches:
                backend = self.backends.get(launch)
                if backend is None:
                    backend = self.backends[launch] = Backend(launch)
                    started.append(backend)
                    self._start(backend, check=True)
                backend.holders.add(generation)
        except SpawnError:
            for backend in started:
                self._discard(backend)
            raise

    def release(self, generation: int) -> None:
        """`generation` is gone: stop every backend no other generation holds."""
        for backend in list(self.backends.values()):
            backend.holders.discard(generation)
            if not backend.holders:
                self._stop(backend)

    def release_all(self) -> None:
        """Shutting down: every backend is stopped and none restarted."""
        for backend in list(self.backends.values()):
            backend.holders.clear()
            self._stop(backend)

    @property
    def idle(self) -> bool:
        """No backend process left."""
        return not self.backends

    def kill_all(self) -> None:
        """The master is exiting: SIGKILL whatever still runs and reap it."""
        for backend in list(self.backends.values()):
            if backend.pid is not None:
                _kill_group(backend.pid, signal.SIGKILL)
                _wait_for(backend.pid)
                backend.pid = None
            self._forget(backend)

    # --------------------------------------------------------------- supervision
    def reaped(self, pid: int, status: int) -> bool:
        """The master's waitpid found `pid`: True if it was a backend (now handled)."""
        backend = next((b for b in self.backends.values() if b.pid == pid), None)
        if backend is None:
            return False
        backend.pid = None
        _kill_group(pid, signal.SIGKILL)     # what it left of its group
        if backend.stop_deadline is not None or not backend.holders:
            self._forget(backend)
        else:
            code = os.waitstatus_to_exitcode(status)
            self._record_death(backend, f"pid {pid} died: " +
                               (f"signal {-code}" if code < 0 else f"exit status {code}"))
        return True

    def tick(self) -> None:
        """Restart the backends whose back-off is over; SIGKILL those that did not stop
        within STOP_GRACE."""
        now = time.monotonic()
        for backend in list(self.backends.values()):
            if backend.stop_deadline is not None:
                if now > backend.stop_deadline and backend.pid is not None:
                    log.error("gw_backend.c", f"{backend.launch.name} (pid {backend.pid}) "
                              f"did not stop within {STOP_GRACE:g}s: killing it")
                    _kill_group(backend.pid, signal.SIGKILL)
                    backend.stop_deadline = float("inf")
            elif backend.pid is None and now >= backend.next_start and \
                    self._may_serve(backend):
                try:
                    self._start(backend, check=False)
                except SpawnError as err:
                    self._record_death(backend, err.detail)

    def _record_death(self, backend: Backend, reason: str) -> None:
        """Log the death (or failed restart) once, with its reason, and when it restarts
        (doubling delays for a process that keeps dying, capped at BACKOFF_MAX)."""
        now = time.monotonic()
        backend.deaths = [t for t in backend.deaths if now - t < DEATH_WINDOW] + [now]
        delay = min(BACKOFF_FIRST * 2 ** (len(backend.deaths) - 1), BACKOFF_MAX)
        backend.next_start = now + delay
        log.error("gw_backend.c", f"backend {backend.launch.name}: {reason}; restarting in "
                  f"{delay:g}s")

    def _may_serve(self, backend: Backend) -> bool:
        """Its address is its own, or free: a backend replaced on the same address by a
        newer config's is not restarted over it."""
        owner = self.owners.get(_address_key(backend.launch))
        return owner is None or owner == backend.launch

    # ------------------------------------------------------------ start and stop
    def _stderr_fd(self, launch: Launch) -> int:
        """The top-level server.breakagelog of the launch's config (held open by its
        generation since before the backends start), else the error log."""
        return log.BREAKAGE.fd(launch.stderr_log) if launch.stderr_log \
            else self.errorlog.fileno()

    def _start(self, backend: Backend, check: bool) -> None:
        """Fork, set up and exec one backend; SpawnError with the child's reason.
        `check`: wait STARTUP_CHECK for an early exit, as lighttpd does at start-up."""
        launch = backend.launch
        self._displace(launch)
        stderr_fd = self._stderr_fd(launch)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _exec_backend(launch, write_fd, stderr_fd)
        os.close(write_fd)
        with open(read_fd, "rb") as pipe:
            failure = pipe.read().decode("utf-8", "replace")
        if failure:
            _wait_for(pid)
            raise SpawnError(launch.name, f"cannot start {' '.join(launch.argv)}: {failure}")
        backend.pid = pid
        backend.stop_deadline = None
        self.owners[_address_key(launch)] = launch
        backend.socket_inode = _inode(_outside_chroot(launch.unix_path, launch.identity)) \
            if launch.unix_path else None
        if check:
            self._check_started(backend)

    def _check_started(self, backend: Backend) -> None:
        time.sleep(STARTUP_CHECK)
        assert backend.pid is not None
        pid, status = os.waitpid(backend.pid, os.WNOHANG)
        if pid:
            backend.pid = None
            _kill_group(pid, signal.SIGKILL)
            code = os.waitstatus_to_exitcode(status)
            raise SpawnError(backend.launch.name, f"{backend.launch.argv[0]} exited at once "
                             f"(status {code}); is it a FastCGI or SCGI program?")

    def _displace(self, launch: Launch) -> None:
        """Another config's backend on the same TCP address must go first (two
        processes cannot listen on one port); on a unix path the new socket file simply
        replaces the old one, which keeps serving whoever is connected."""
        owner = self.owners.get(_address_key(launch))
        if owner is None or owner == launch or launch.unix_path:
            return
        previous = self.backends.get(owner)
        if previous is not None and previous.pid is not None:
            log.error("gw_backend.c", f"backend {owner.name} (pid {previous.pid}) replaced "
                      "by a changed config on the same address: stopping it first")
            _kill_group(previous.pid, owner.kill_signal)
            if not _wait_for(previous.pid, STOP_GRACE):
                _kill_group(previous.pid, signal.SIGKILL)
                _wait_for(previous.pid)
            previous.pid = None

    def _stop(self, backend: Backend) -> None:
        if backend.stop_deadline is not None:
            return
        if backend.pid is None:
            self._forget(backend)
            return
        backend.stop_deadline = time.monotonic() + STOP_GRACE
        _kill_group(backend.pid, backend.launch.kill_signal)

    def _discard(self, backend: Backend) -> None:
        """A backend started by an acquire that failed: gone at once."""
        if backend.pid is not None:
            _kill_group(backend.pid, signal.SIGKILL)
            _wait_for(backend.pid)
            backend.pid = None
        self._forget(backend)

    def _forget(self, backend: Backend) -> None:
        """The process has exited for good: drop it, its address and its socket file
        (only if the file is still the one it bound)."""
        launch = backend.launch
        self.backends.pop(launch, None)
        if self.owners.get(_address_key(launch)) == launch:
            del self.owners[_address_key(launch)]
        if launch.unix_path and backend.socket_inode is not None:
            path = _outside_chroot(launch.unix_path, launch.identity)
            if _inode(path) == backend.socket_inode:
                try:
                    os.unlink(path)
                except OSError as err:
                    log.error("gw_backend.c", f"cannot remove {path}: {err.strerror}")


# --------------------------------------------------------------- the forked child
def _exec_backend(launch: Launch, report_fd: int, stderr_fd: int) -> NoReturn:
    """In the forked child: become the server's user, make the listening socket fd 0,
    exec.  A failure is written to `report_fd` (closed by a successful exec)."""
    stage, bound = "leading a process group", ""
    try:
        os.setpgid(0, 0)
        stage = "becoming the server's user"
        become(launch.identity)
        stage = f"binding {launch.name}"
        listener = _listen(launch)
        bound = launch.unix_path
        stage = "setting up"
        _standard_fds(listener, stderr_fd)
        for signum in RESET_SIGNALS:   # Python ignores SIGPIPE; exec would keep that
            signal.signal(signum, signal.SIG_DFL)
        stage = f"changing to the directory of {launch.argv[0]}"
        os.chdir(os.path.dirname(launch.argv[0]) or ".")
        stage = f"executing {launch.argv[0]}"
        os.execve(launch.argv[0], list(launch.argv), dict(launch.environment))
    except OSError as err:
        _report(report_fd, f"{stage}: {err.strerror or err}", bound)
    except BaseException as err:  # the child must never return into the master
        _report(report_fd, f"{stage}: {type(err).__name__}: {err}", bound)
    finally:
        os._exit(127)


def _report(report_fd: int, failure: str, bound: str) -> None:
    """The child failed: no socket file left behind, the reason to the master."""
    if bound:
        try:
            os.unlink(bound)
        except OSError:
            pass
    os.write(report_fd, failure.encode())


def _listen(launch: Launch) -> socket.socket:
    listener = socket.socket(launch.family, socket.SOCK_STREAM)
    if launch.unix_path:
        _remove_socket_file(launch.unix_path)
    else:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(launch.address)
    listener.listen(launch.listen_backlog)
    return listener


def _remove_socket_file(path: str) -> None:
    """A socket file left behind (or held by a process being replaced) goes; any other
    kind of file is not ours to remove."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "the path exists and is not a socket")
    os.unlink(path)


def _standard_fds(listener: socket.socket, stderr_fd: int) -> None:
    """fd 0: the listening socket; 1: /dev/null; 2: the error log."""
    os.dup2(stderr_fd, 2)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.dup2(listener.fileno(), 0)


# ----------------------------------------------------------------------- helpers
def _kill_group(pid: int, signum: int) -> None:
    """Signal the process group a backend leads (its pid names it): the backend and
    what it forked.  The group outlives its leader while a member lives, and its id
    is not reused meanwhile; once it is empty there is nothing to signal."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def _wait_for(pid: int, timeout: float | None = None) -> bool:
    """Reap `pid`, then kill what is left of the process group it led (a child it left
    would keep its listening socket, and a TCP address from its successor); with a
    timeout, give up after it (False).  Only for a child the master is stopping on
    purpose, so the wait is short."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG if deadline is not None else 0)
        except ChildProcessError:
            return True
        if done:
            _kill_group(pid, signal.SIGKILL)
            _wait_group_exit(pid)
            return True
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def _wait_group_exit(pgid: int) -> None:
    """Wait, GROUP_EXIT_WAIT at most, until every process of the group has exited: a
    killed member frees its sockets when it exits, not when the signal is sent, and a
    successor binding the same TCP address meanwhile would find it in use."""
    deadline = time.monotonic() + GROUP_EXIT_WAIT
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.005)


def group_members(pgid: int) -> list[int]:
    """The processes of a group that have not exited.  Zombies have (their sockets are
    closed): an init that is slow to reap them, or never does, keeps them in the group,
    so /proc says which members are only that."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"{entry.path}/stat", "rb") as stat:
                    state, _ppid, group = stat.read().rsplit(b")", 1)[1].split(None, 3)[:3]
            except OSError:
                continue
            if int(group) == pgid and state != b"Z":
                members.append(int(entry.name))
    return members


def _inode(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)
