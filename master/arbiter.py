"""The supervisor: one loop that forks workers, watches them, and acts on signals.

Signals are only queued by their handlers (plus a byte on a wakeup pipe); the loop
handles them one at a time in `_handle_signal`, so no supervisor logic runs inside a
signal handler.  The master never handles a request and starts no threads.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field

from setproctitle import setproctitle

from shared import log
from shared.config import ConfigError

from . import listeners
from .sdnotify import notify
from .configload import LoadedConfig, load
from .privileges import Identity, become, resolve_identity

HANDLED_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                   signal.SIGUSR1, signal.SIGCHLD, signal.SIGTTIN, signal.SIGTTOU)
READY_TIMEOUT = 10.0          # a new worker that is not serving by then aborts a reload
RESPAWN_BACKOFF_MAX = 30.0
EXIT_IDLE = 0


@dataclass
class Worker:
    pid: int
    slot: int
    generation: int
    ready_fd: int
    started: float
    ready: bool = False
    retiring: bool = False


@dataclass
class Generation:
    number: int
    config: LoadedConfig
    identity: Identity
    slots: list[listeners.SlotSockets] = field(default_factory=list)


class Arbiter:
    def __init__(self, config: LoadedConfig, foreground: bool,
                 idle_exit: float | None = None) -> None:
        self.foreground = foreground
        self.idle_exit = idle_exit
        self.workers: dict[int, Worker] = {}
        self.signals: list[int] = []
        self.shared_unix: dict = {}
        self.stopping = False
        self.deaths: dict[int, list[float]] = {}
        self.generation = self._prepare(config, 1)
        self.errorlog = log.ErrorLog(config.settings["server.errorlog"],
                                     config.settings["server.errorlog-use-syslog"])
        log.set_default(self.errorlog)

    # ---------------------------------------------------------------- set-up
    def _prepare(self, config: LoadedConfig, number: int,
                 previous: Generation | None = None) -> Generation:
        """Check identity and open listeners; reuse the previous generation's sockets
        for every address that did not change (a reload never rebinds them)."""
        identity = resolve_identity(config.settings)
        addresses = listeners.configured_addresses(config.settings,
                                                   config.compiled.socket_specs())
        backlog = config.settings["server.listen-backlog"]
        generation = Generation(number, config, identity)
        reusable = self._sockets_by_spec(previous)
        try:
            for slot in range(max(1, config.settings["server.max-worker"])):
                taken = reusable.get(slot, {})
                fresh = [a for a in addresses if a.spec not in taken]
                sockets = listeners.open_slot(fresh, backlog, self.shared_unix)
                sockets.sockets.extend(taken[a.spec] for a in addresses if a.spec in taken)
                generation.slots.append(sockets)
        except ConfigError:
            for slot_sockets in generation.slots:
                self._close_unshared(slot_sockets, previous)
            raise
        return generation

    @staticmethod
    def _sockets_by_spec(previous: Generation | None) -> dict[int, dict]:
        if previous is None:
            return {}
        return {index: {spec: (sock, spec) for sock, spec in slot.sockets}
                for index, slot in enumerate(previous.slots)}

    def _close_unshared(self, slot: listeners.SlotSockets, keep: Generation | None) -> None:
        kept = {id(s) for g in ([keep] if keep else []) for sl in g.slots for s, _ in sl.sockets}
        for sock, _ in slot.sockets:
            if id(sock) not in kept and sock not in self.shared_unix.values():
                sock.close()

    def run(self) -> int:
        if not self.foreground:
            self._daemonize()
        self._write_pidfile()
        setproctitle(f"pylighttpd: master -f {os.path.abspath(self.generation.config.path)}")
        self.wakeup_r, self.wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wakeup_w)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._queue_signal)
        migrate = listeners.tcp_migrate_req_enabled()
        log.error("server.c", f"server started (pylighttpd), {len(self.generation.slots)} "
                  f"workers; net.ipv4.tcp_migrate_req is "
                  f"{'on' if migrate else 'off' if migrate is False else 'unknown'}")
        for slot in range(len(self.generation.slots)):
            self._spawn(slot, self.generation)
        notify(f"READY=1\nMAINPID={os.getpid()}")
        try:
            return self._loop()
        finally:
            self._remove_pidfile()

    # ------------------------------------------------------------------ loop
    def _queue_signal(self, signum: int, _frame) -> None:
        self.signals.append(signum)

    def _loop(self) -> int:
        deadline = None
        while True:
            fds = [self.wakeup_r] + [w.ready_fd for w in self.workers.values() if not w.ready]
            try:
                readable, _, _ = select.select(fds, [], [], 1.0)
            except InterruptedError:
                readable = []
            for fd in readable:
                self._drain(fd)
            while self.signals:
                self._handle_signal(self.signals.pop(0))
            self._reap()
            if self.stopping:
                if not self.workers:
                    log.error("server.c", "server stopped")
                    return 0
                deadline = deadline or time.monotonic() + self._graceful_timeout()
                if time.monotonic() > deadline:
                    self._signal_all(signal.SIGKILL)

    def _drain(self, fd: int) -> None:
        try:
            data = os.read(fd, 512)
        except BlockingIOError:
            return
        if fd == self.wakeup_r:
            return
        for worker in self.workers.values():
            if worker.ready_fd == fd and data:
                worker.ready = True
                self._close_ready_pipe(worker)

    def _handle_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stop(signal.SIGTERM)
        elif signum == signal.SIGQUIT:
            self._stop(signal.SIGQUIT)
        elif signum == signal.SIGHUP and not self.stopping:
            self._reload()
        elif signum == signal.SIGUSR1:
            self.errorlog.reopen()
            self._signal_all(signal.SIGUSR1)
        elif signum == signal.SIGTTIN and not self.stopping:
            self._resize(+1)
        elif signum == signal.SIGTTOU and not self.stopping:
            self._resize(-1)

    def _stop(self, how: int) -> None:
        if not self.stopping:
            notify("STOPPING=1")
        self.stopping = True
        self._signal_all(how)

    def _signal_all(self, signum: int) -> None:
        for pid in list(self.workers):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    # --------------------------------------------------------------- workers
    def _spawn(self, slot: int, generation: Generation) -> None:
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            self._child(slot, generation, ready_w)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        self.workers[pid] = Worker(pid, slot, generation.number, ready_r, time.monotonic())

    def _child(self, slot: int, generation: Generation, ready_fd: int) -> None:
        """In the forked worker: never returns to the master's code."""
        status = 70
        try:
            for signum in HANDLED_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            os.close(self.wakeup_r)
            os.close(self.wakeup_w)
            for worker in self.workers.values():
                self._close_ready_pipe(worker)
            become(generation.identity)
            setproctitle(f"pylighttpd: worker {slot} (gen {generation.number})")
            from worker.context import WorkerContext
            from worker.main import run_worker

            def ready() -> None:
                os.write(ready_fd, b"R")
                os.close(ready_fd)

            status = run_worker(WorkerContext(
                slot=slot, generation=generation.number,
                listeners=list(generation.slots[slot].sockets), config=generation.config,
                idle_exit=self.idle_exit, on_ready=ready))
        except BaseException as err:  # the worker must never fall back into the master
            log.error("server.c", f"worker {slot} failed: {err!r}")
        finally:
            os._exit(status)

    @staticmethod
    def _close_ready_pipe(worker: Worker) -> None:
        if worker.ready_fd >= 0:
            os.close(worker.ready_fd)
            worker.ready_fd = -1

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self._close_ready_pipe(worker)
            self._after_exit(worker, status)

    def _after_exit(self, worker: Worker, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        if self.stopping or worker.retiring:
            return
        if self.idle_exit and code == EXIT_IDLE:
            log.error("server.c", f"worker {worker.slot} idle for {self.idle_exit:g}s: "
                      "shutting down")
            self._stop(signal.SIGQUIT)
            return
        reason = f"signal {-code}" if code < 0 else f"exit status {code}"
        delay = self._backoff(worker.slot)
        log.error("server.c", f"worker {worker.slot} (pid {worker.pid}) died with {reason}; "
                  f"respawning{f' in {delay:.0f}s' if delay else ''}")
        if delay:
            time.sleep(min(delay, 1.0))
        if worker.generation == self.generation.number and \
                worker.slot < len(self.generation.slots):
            self._spawn(worker.slot, self.generation)

    def _backoff(self, slot: int) -> float:
        """0 for an occasional death; growing delays for a slot that keeps dying."""
        now = time.monotonic()
        recent = [t for t in self.deaths.get(slot, []) if now - t < 60] + [now]
        self.deaths[slot] = recent
        return 0.0 if len(recent) <= 3 else min(2.0 ** (len(recent) - 3), RESPAWN_BACKOFF_MAX)

    # ---------------------------------------------------------------- reload
    def _reload(self) -> None:
        """Start a new generation on the new config; retire the old one once it is up."""
        path = self.generation.config.path
        notify("RELOADING=1")
        try:
            config = load(path)
            new = self._prepare(config, self.generation.number + 1, self.generation)
        except ConfigError as err:
            log.error("server.c", f"reload refused, keeping the running config: {err}")
            notify("READY=1")
            return
        old = self.generation
        self.generation = new
        new_pids = []
        for slot in range(len(new.slots)):
            self._spawn(slot, new)
            new_pids.append(max(self.workers))
        if not self._wait_ready(new_pids):
            log.error("server.c", "reload aborted: new workers did not become ready")
            for pid in new_pids:
                self.workers[pid].retiring = True
                os.kill(pid, signal.SIGTERM)
            self.generation = old
            notify("READY=1")
            return
        for worker in self.workers.values():
            if worker.generation == old.number:
                worker.retiring = True
                os.kill(worker.pid, signal.SIGQUIT)
        log.error("server.c", f"reloaded {path} (generation {new.number})")
        notify("READY=1")

    def _wait_ready(self, pids: list[int]) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            pending = [self.workers[p] for p in pids if p in self.workers
                       and not self.workers[p].ready]
            if any(p not in self.workers for p in pids):
                return False
            if not pending:
                return True
            readable, _, _ = select.select([w.ready_fd for w in pending], [], [], 0.1)
            for fd in readable:
                self._drain(fd)
        return False

    def _resize(self, delta: int) -> None:
        log.error("server.c", "TTIN/TTOU resizing is not supported yet; ignored")

    # --------------------------------------------------------- process setup
    def _graceful_timeout(self) -> float:
        return float(self.generation.config.settings["server.graceful-shutdown-timeout"]) + 1

    def _daemonize(self) -> None:
        if os.fork():
            os._exit(0)
        os.setsid()
        if os.fork():
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1) + (() if self.errorlog.path else ()):
            os.dup2(devnull, fd)
        os.close(devnull)

    def _pidfile(self) -> str:
        return self.generation.config.settings["server.pid-file"]

    def _write_pidfile(self) -> None:
        path = self._pidfile()
        if not path:
            return
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w") as file:
            file.write(f"{os.getpid()}\n")
        os.replace(temporary, path)

    def _remove_pidfile(self) -> None:
        path = self._pidfile()
        try:
            with open(path) as file:
                if path and file.read().strip() == str(os.getpid()):
                    os.unlink(path)
        except OSError as err:
            if err.errno != errno.ENOENT:
                print(f"pylighttpd: cannot remove {path}: {err}", file=sys.stderr)
