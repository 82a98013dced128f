"""The supervisor: one loop that keeps the right workers running and acts on signals.

Signal handlers only queue the signal (and wake the loop through the wakeup fd); the
loop handles them one at a time in `_handle_signal`.  Every step of the loop is
non-blocking: a reload or a retirement is a state the loop advances on each tick, so
the master keeps reaping and respawning while it waits.  The master never handles a
request and starts no threads.  It also starts and supervises the gateways' `bin-path`
backends (spawner.py): started before the workers that use them, reaped and
restarted here, stopped after the last worker has exited.
"""

from __future__ import annotations

import gc
import os
import resource
import select
import signal
import sys
import time
from dataclasses import dataclass, field

import psutil
from setproctitle import setproctitle

from shared import log
from shared.config import ConfigError
from shared.stats import Field, Header, State, StatsSegment, monotonic_ms
from worker import COMPILED
from worker.context import WorkerContext
from worker.main import run_worker

from .clockwatch import ClockWatch
from .configload import LoadedConfig, load, log_warnings
from .generation import Generation, open_generation, release_exited, start_backends
from .listeners import ListenerSet, inherited_sockets, tcp_migrate_req_enabled
from .privileges import become
from .sdnotify import notify
from .spawner import Spawner

HANDLED_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
                   signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD, signal.SIGTTIN,
                   signal.SIGTTOU)
TICK = 0.2                    # seconds between loop turns when nothing happens
READY_TIMEOUT = 15.0          # a new generation not serving by then aborts the reload
ABORT_GRACE = 2.0             # SIGABRT, then SIGKILL after this long
RESPAWN_BACKOFF_MAX = 30.0
MAX_SLOTS = 256
EXIT_IDLE = 0


@dataclass
class Worker:
    pid: int
    slot: int
    generation: int
    stats_slot: int
    retiring: bool = False
    aborted_at: float | None = None


@dataclass
class PendingReload:
    old: Generation
    new_pids: list[int]
    deadline: float


@dataclass
class Retirement:
    """A slot being removed (TTOU): steered away from, then drained, then closed."""

    slot: int
    pid: int | None
    since: float
    signalled: bool = False


@dataclass
class SlotHealth:
    """A slot's recent crashes and when its next worker may start.

    While a slot waits out its back-off, new connections are steered to the other
    slots.  What already waits in its accept queue (connections routed to it before
    its worker's death was noticed) would otherwise wait for the whole back-off, so
    one worker may be started early to serve them (`may_start_early`); it gets no new
    connections before the back-off is over, so a slot that crashes under load still
    backs off.
    """

    deaths: list[float] = field(default_factory=list)
    next_spawn: float = 0.0
    may_start_early: bool = False


class StartupError(Exception):
    """What stops the master before it serves (a log or pid file it cannot write), in
    lighttpd's words."""


class Arbiter:
    def __init__(self, config: LoadedConfig, foreground: bool,
                 idle_exit: float | None = None, argv: list[str] | None = None) -> None:
        self.foreground = foreground
        self.idle_exit = idle_exit
        self.argv = argv or []
        self.workers: dict[int, Worker] = {}
        self.signals: list[int] = []
        self.stopping: int | None = None        # the signal that started the stop
        self.stop_deadline = 0.0
        self.pending_reload: PendingReload | None = None
        self.reload_requested = False   # a HUP that came while a reload was under way
        self.retirements: list[Retirement] = []
        self.health: dict[int, SlotHealth] = {}
        settings = config.settings
        try:
            self.errorlog = log.ErrorLog(settings["server.errorlog"],
                                         settings["server.errorlog-use-syslog"])
        except OSError as err:
            raise StartupError(f"opening errorlog '{settings['server.errorlog']}' failed: "
                               f"{err.strerror}") from None
        log.set_default(self.errorlog)
        _raise_fd_limit(settings["server.max-fds"])
        if settings["server.core-files"]:
            _allow_core_files()
        self.target = max(1, settings["server.max-worker"])   # slots with listeners
        self.wanted = self.target      # TTIN/TTOU and reloads move this; the loop follows
        self.stats = StatsSegment(worker_slots=2 * MAX_SLOTS)
        self.listeners = ListenerSet(settings["server.listen-backlog"],
                                     inherited_sockets(os.environ))
        self.generation = open_generation(1, config, self.listeners, self.target)
        self.spawner = Spawner(self.errorlog)   # the bin-path backends, one set for all
        self.last_generation = 1   # numbers are never reused, not even an aborted one's
        self.pidfile = settings["server.pid-file"]
        self.clock = ClockWatch()

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        if not self.foreground:
            _daemonize(keep_stderr=not self.errorlog.path)
        _write_pidfile(self.pidfile)
        setproctitle(f"pylighttpd: master -f {os.path.abspath(self.generation.config.path)}")
        self.wakeup_r, self.wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wakeup_w)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._queue_signal)
        migrate = tcp_migrate_req_enabled()
        log.error("server.c", f"server started (pylighttpd), {self.target} workers; "
                  "net.ipv4.tcp_migrate_req is "
                  + {True: "on", False: "off", None: "unknown"}[migrate]
                  + ("; hot path compiled" if COMPILED else "; hot path as Python"))
        try:
            # started here, after daemonizing: the backends are the master's children
            self._start_first_backends()
            # Everything imported so far is shared with the workers copy-on-write; keep
            # the cyclic GC from touching (and so copying) those pages in every worker.
            gc.freeze()
            self._manage_workers()
            notify(f"READY=1\nMAINPID={os.getpid()}")
            return self._loop()
        finally:
            self.spawner.kill_all()   # only what a failure left running
            _remove_pidfile(self.pidfile)
            _remove_pidfile(self.pidfile + ".oldbin")

    def _queue_signal(self, signum: int, _frame) -> None:
        self.signals.append(signum)

    def _loop(self) -> int:
        last_sample = 0.0
        while True:
            self._wait(TICK)
            while self.signals:
                self._handle_signal(self.signals.pop(0))
            self._reap()
            if self.stopping is not None:
                if self.workers:
                    if time.monotonic() > self.stop_deadline:
                        self._signal_all(signal.SIGKILL)
                    continue
                # the backends outlive the workers, which drain through them
                self.spawner.release_all()
                self.spawner.tick()
                if self.spawner.idle:
                    log.error("server.c", "server stopped")
                    return 0
                continue
            self.spawner.tick()
            self._advance_reload()
            self._release_exited_generations()
            self._converge_worker_count()
            self._advance_retirements()
            self._check_heartbeats()
            self._manage_workers()
            self.listeners.steer(self._slots_taking_connections())
            if time.monotonic() - last_sample >= 1.0:
                last_sample = time.monotonic()
                self._sample_processes()
                if self.clock.jumped(self.generation.config.settings):
                    self._reload()

    def _wait(self, timeout: float) -> None:
        try:
            readable, _, _ = select.select([self.wakeup_r], [], [], timeout)
        except InterruptedError:
            return
        if readable:
            try:
                os.read(self.wakeup_r, 4096)
            except BlockingIOError:
                pass

    def _handle_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stop(signal.SIGTERM)
        elif signum == signal.SIGQUIT:
            self._stop(signal.SIGQUIT)
        elif self.stopping is not None:
            return
        elif signum == signal.SIGHUP:
            self._reload()
        elif signum == signal.SIGUSR1:
            self.errorlog.reopen()
            self._signal_all(signal.SIGUSR1)
        elif signum == signal.SIGUSR2:
            self._upgrade_binary()
        elif signum == signal.SIGTTIN:
            self.wanted = min(self.wanted + 1, MAX_SLOTS)
        elif signum == signal.SIGTTOU:
            self.wanted = max(self.wanted - 1, 1)

    def _stop(self, how: int) -> None:
        """TERM: workers exit now.  QUIT: they drain; hard kill at the graceful timeout."""
        if self.stopping is None:
            notify("STOPPING=1")
            grace = self.generation.config.settings["server.graceful-shutdown-timeout"]
            self.stop_deadline = time.monotonic() + (grace + 1 if how == signal.SIGQUIT else 5)
        self.stopping = how
        self._signal_all(how)

    def _signal_all(self, signum: int) -> None:
        for pid in list(self.workers):
            _kill(pid, signum)

    # -------------------------------------------------------------- workers
    def _manage_workers(self) -> None:
        """Start a worker for every slot that has none: at once, after its back-off, or
        early for the connections that wait in its queue.

        A slot counts as filled by any worker not told to stop: during a reload both
        generations serve it, and a new worker that dies aborts the reload instead of
        being replaced."""
        busy = {w.slot for w in self.workers.values() if not w.retiring}
        now = time.monotonic()
        for slot in range(self.target):
            if slot in busy:
                continue
            health = self._health(slot)
            if now >= health.next_spawn:
                self._spawn(slot, self.generation)
            elif health.may_start_early and (waiting := self._queued(slot)):
                health.may_start_early = False
                log.error("server.c", f"worker {slot}: {waiting} connection(s) wait in its "
                          f"queue: starting it {health.next_spawn - now:.0f}s before its "
                          "back-off ends, to serve them")
                self._spawn(slot, self.generation)

    def _slots_taking_connections(self) -> list[int]:
        """The slots new connections go to: those whose worker is ready and that are
        not backing off; failing that, those with a ready worker; then those with a
        worker starting; with no worker anywhere, the slot that gets one first (its
        queue keeps the connections, and a queue may get its worker early)."""
        now = time.monotonic()
        ready, starting = set(), set()
        for worker in self.workers.values():
            if worker.retiring or worker.aborted_at is not None or \
                    worker.slot >= self.target:
                continue
            state = self.stats.slot(worker.stats_slot)[Field.STATE]
            (ready if state == State.READY else starting).add(worker.slot)
        settled = {slot for slot in ready if now >= self._health(slot).next_spawn}
        for choice in (settled, ready, starting):
            if choice:
                return sorted(choice)
        return [min(range(self.target), key=lambda slot: self._health(slot).next_spawn)]

    def _queued(self, slot: int) -> int:
        """Connections waiting in the slot's queues for the running generation's
        addresses (those of a draining generation only are served by no new worker)."""
        return self.listeners.queued(slot, self.generation.addresses)

    def _health(self, slot: int) -> SlotHealth:
        return self.health.setdefault(slot, SlotHealth())

    def _spawn(self, slot: int, generation: Generation) -> int:
        stats_slot = self.stats.claim(0, generation.number, generation.config)
        sockets = self.listeners.for_slot(slot, generation.addresses)
        self.stats.words[Header.SPAWNS] += 1
        master_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._child(slot, generation, stats_slot, sockets, master_pid)
        self.stats.slot(stats_slot)[Field.PID] = pid
        self.workers[pid] = Worker(pid, slot, generation.number, stats_slot)
        return pid

    def _child(self, slot: int, generation: Generation, stats_slot: int, sockets,
               master_pid: int) -> None:
        """The forked worker: never returns into the master's code."""
        status = 70
        try:
            for signum in HANDLED_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            os.close(self.wakeup_r)
            os.close(self.wakeup_w)
            self.listeners.close_in_child(sockets)
            become(generation.identity)
            setproctitle(f"pylighttpd: worker {slot} (gen {generation.number})")
            status = run_worker(WorkerContext(
                slot=slot, generation=generation.number, listeners=sockets,
                config=generation.config, idle_exit=self.idle_exit,
                stats=self.stats, stats_slot=stats_slot, master_pid=master_pid))
        except BaseException as err:  # a worker must never fall back into the master
            log.error("server.c", f"worker {slot} failed: {type(err).__name__}: {err}")
        finally:
            os._exit(status)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spawner.reaped(pid, status):
                continue
            worker = self.workers.pop(pid, None)
            if worker is not None:
                served = self.stats.slot(worker.stats_slot)[Field.STATE] == State.READY
                self.stats.retire(worker.stats_slot)
                self._after_exit(worker, os.waitstatus_to_exitcode(status), served)

    def _after_exit(self, worker: Worker, code: int, served: bool) -> None:
        """`served`: the worker had got ready (a crash at start-up is never replaced
        early, or a worker that cannot start would be restarted in a loop)."""
        if self.stopping is not None or worker.retiring:
            return
        if self.idle_exit and code == EXIT_IDLE:
            log.error("server.c", f"no request for {self.idle_exit:g}s: shutting down")
            self._stop(signal.SIGQUIT)
            return
        reason = "heartbeat timeout" if worker.aborted_at else (
            f"signal {-code}" if code < 0 else f"exit status {code}")
        log.error("server.c", self._record_death(worker, reason, served))

    def _record_death(self, worker: Worker, reason: str, served: bool) -> str:
        """Count a death where it counts; the log line that says what becomes of the slot.
        Only a worker serving the running generation's slot is respawned, so only its
        death counts towards the slot's back-off."""
        died = f"worker {worker.slot} (pid {worker.pid}) died: {reason}"
        if worker.slot >= self.target:
            return f"{died}; its slot is being retired: not replaced"
        pending = self.pending_reload
        if pending is not None and worker.pid in pending.new_pids:
            return (f"worker {worker.slot} (pid {worker.pid}) of generation "
                    f"{worker.generation} died before the reload completed: {reason}; "
                    "the reload is aborted")
        if pending is not None:
            return f"{died}; its slot is taken by generation {self.generation.number}"
        counter = Header.RESPAWN_TIMEOUT if worker.aborted_at else Header.RESPAWN_CRASH
        self.stats.words[counter] += 1
        delay = self._backoff(worker.slot, served)
        return f"{died}; respawning in {delay:.0f}s" if delay else f"{died}; respawning"

    def _backoff(self, slot: int, served: bool) -> float:
        """0 for an occasional death; doubling delays for a slot that keeps dying.

        The slot's queue may get a worker early if the dead one served and was not
        itself serving only the queue of an earlier death (still in its back-off)."""
        health = self._health(slot)
        now = time.monotonic()
        health.may_start_early = served and now >= health.next_spawn
        health.deaths = [t for t in health.deaths if now - t < 60] + [now]
        delay = 0.0 if len(health.deaths) <= 3 else min(2.0 ** (len(health.deaths) - 3),
                                                        RESPAWN_BACKOFF_MAX)
        health.next_spawn = now + delay
        return delay

    def _check_heartbeats(self) -> None:
        now_ms, now = monotonic_ms(), time.monotonic()
        timeout = self.generation.config.settings["server.worker-heartbeat-timeout"]
        for worker in list(self.workers.values()):
            words = self.stats.slot(worker.stats_slot)
            if worker.aborted_at is not None:
                if now - worker.aborted_at > ABORT_GRACE:
                    _kill(worker.pid, signal.SIGKILL)
            elif words[Field.STATE] in (State.READY, State.DRAINING) and \
                    now_ms - words[Field.HEARTBEAT] > timeout * 1000:
                log.error("server.c", f"worker {worker.slot} (pid {worker.pid}) silent for "
                          f"{timeout}s: aborting it")
                worker.aborted_at = now
                _kill(worker.pid, signal.SIGABRT)

    def _sample_processes(self) -> None:
        """RSS, CPU, fds and threads of every worker, for /server-status to read."""
        self.stats.record_rate_sample()
        for worker in list(self.workers.values()):
            try:
                process = psutil.Process(worker.pid)
                with process.oneshot():
                    memory, cpu = process.memory_info(), process.cpu_times()
                    words = self.stats.slot(worker.stats_slot)
                    words[Field.RSS] = memory.rss
                    words[Field.CPU_MS] = int((cpu.user + cpu.system) * 1000)
                    words[Field.FDS] = process.num_fds()
                    words[Field.THREADS] = process.num_threads()
            except psutil.Error:
                continue

    # ---------------------------------------------------------------- reload
    def _reload(self) -> None:
        """Validate the new config, start a new generation, retire the old once ready."""
        if self.pending_reload is not None:
            self.reload_requested = True  # the config may have changed again: reload
            return                        # once more when this one is done
        notify("RELOADING=1")
        old = self.generation
        try:
            new = open_generation(self.last_generation + 1, load(old.config.path),
                                  self.listeners, self.target)
            start_backends(new, self.listeners, self.spawner)   # before its workers serve
        except ConfigError as err:
            self.stats.words[Header.RELOADS_REFUSED] += 1
            log.error("server.c", f"reload refused, keeping the running config: {err}")
            notify("READY=1")
            return
        self.generation = new
        log_warnings(self.generation.config)
        self.last_generation = self.generation.number
        new_pids = [self._spawn(slot, self.generation) for slot in range(self.target)]
        self.pending_reload = PendingReload(old, new_pids, time.monotonic() + READY_TIMEOUT)

    def _advance_reload(self) -> None:
        pending = self.pending_reload
        if pending is None:
            return
        states = [self.stats.slot(self.workers[pid].stats_slot)[Field.STATE]
                  if pid in self.workers else None for pid in pending.new_pids]
        if all(state == State.READY for state in states):
            for worker in self.workers.values():
                if worker.generation == pending.old.number:
                    worker.retiring = True
                    _kill(worker.pid, signal.SIGQUIT)
            self.stats.words[Header.RELOADS_OK] += 1
            self.stats.words[Header.LAST_RELOAD] = int(time.time())
            self.stats.words[Header.RESPAWN_RELOAD] += len(pending.new_pids)
            self.health.clear()   # back-off is for crashes of the generation now serving
            self.wanted = max(1, min(self.generation.config.settings["server.max-worker"],
                                     MAX_SLOTS))
            log.error("server.c", f"reloaded {self.generation.config.path} "
                      f"(generation {self.generation.number})")
        elif None in states or time.monotonic() > pending.deadline:
            why = "a new worker died" if None in states else \
                f"the new workers were not ready within {READY_TIMEOUT:g}s"
            log.error("server.c", f"reload aborted: {why}; the running generation keeps "
                      "serving")
            for pid in pending.new_pids:
                if pid in self.workers:
                    self.workers[pid].retiring = True
                    _kill(pid, signal.SIGTERM)
            self.generation = pending.old
            self.stats.words[Header.RELOADS_REFUSED] += 1
        else:
            return
        self.pending_reload = None
        notify("READY=1")
        if self.reload_requested:
            self.reload_requested = False
            self._reload()

    def _release_exited_generations(self) -> None:
        """Close the addresses that only generations gone for good held: one replaced
        by a reload once its last worker has drained, one whose reload aborted once its
        workers are reaped.  The running generation (and, while a reload is pending,
        the one it would replace) keeps its addresses even with no worker alive."""
        in_use = {worker.generation for worker in self.workers.values()}
        in_use.add(self.generation.number)
        if self.pending_reload is not None:
            in_use.add(self.pending_reload.old.number)
        for number, closed in release_exited(self.listeners, self.spawner, in_use):
            if closed:
                log.error("server.c", f"generation {number} has exited: closed "
                          f"{', '.join(closed)}, which no running config names")

    def _start_first_backends(self) -> None:
        """The first generation's bin-path backends running (ConfigError if one cannot
        start: logged too, since a daemon's stderr may go nowhere)."""
        try:
            start_backends(self.generation, self.listeners, self.spawner)
        except ConfigError as err:
            log.error("server.c", str(err))
            raise

    # ------------------------------------------------------------ TTIN/TTOU
    def _converge_worker_count(self) -> None:
        """One step towards `wanted` workers (TTIN/TTOU, server.max-worker on reload):
        a slot more, or the last slot retired without losing what waits in its queue."""
        if self.pending_reload is not None or self.target == self.wanted or \
                (self.target > self.wanted and self.retirements):
            return
        if self.target < self.wanted:
            try:
                self.listeners.acquire(self.generation.number, self.generation.addresses,
                                       self.target + 1)
            except ConfigError as err:
                log.error("server.c", f"cannot add a worker: {err}")
                self.wanted = self.target
                return
            self.target += 1
        else:
            self.target -= 1
            slot = self.target   # steered away from from now on: it is not below target
            worker = next((w for w in self.workers.values() if w.slot == slot
                           and not w.retiring), None)
            self.retirements.append(Retirement(slot, worker.pid if worker else None,
                                               time.monotonic()))
        log.error("server.c", f"worker count is now {self.target}")

    def _advance_retirements(self) -> None:
        """Retire a steered-away slot once its accept queue is empty, then close it."""
        for retirement in list(self.retirements):
            if not retirement.signalled:
                settled = time.monotonic() - retirement.since > 0.2
                if settled and self._queued(retirement.slot) == 0:
                    retirement.signalled = True
                    if retirement.pid in self.workers:
                        self.workers[retirement.pid].retiring = True
                        _kill(retirement.pid, signal.SIGQUIT)
            elif not any(w.slot == retirement.slot for w in self.workers.values()):
                self.listeners.close_slot(retirement.slot)
                self.retirements.remove(retirement)

    # ----------------------------------------------------------- USR2 upgrade
    def _upgrade_binary(self) -> None:
        """Start a new master from the (possibly new) code on disk, handing it every
        listening socket in the LISTEN_FDS form; the operator then QUITs this one."""
        fds, names = self.listeners.handover()
        if self.pidfile:
            try:
                os.replace(self.pidfile, self.pidfile + ".oldbin")
            except OSError as err:
                log.error("server.c", f"USR2: cannot rename the pid file: {err}")
        pid = os.fork()
        if pid == 0:
            try:
                _exec_new_master(fds, names, self.argv)
            finally:
                os._exit(71)
        log.error("server.c", f"USR2: new master started as pid {pid}")


def _exec_new_master(fds: list[int], names: list[str], argv: list[str]) -> None:
    for index, fd in enumerate(fds):
        os.dup2(fd, 200 + index, inheritable=False)
    for index in range(len(fds)):
        os.dup2(200 + index, 3 + index, inheritable=True)
    os.closerange(3 + len(fds), 200 + len(fds))
    env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)),
               LISTEN_FDNAMES=":".join(names))
    os.execve(sys.executable, [sys.executable, "-m", "master.cli", *argv], env)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _raise_fd_limit(wanted: int) -> None:
    """server.max-fds: raise RLIMIT_NOFILE, or fail at start-up with a clear reason."""
    if not wanted:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted <= soft:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError) as err:
        raise ConfigError(f"server.max-fds = {wanted}: cannot raise the open files limit "
                          f"(soft {soft}, hard {hard}): {err}") from None


def _allow_core_files() -> None:
    """server.core-files: a crashing process may dump core up to the hard limit (the
    soft limit raised to it, as lighttpd does; the workers inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def _daemonize(keep_stderr: bool) -> None:
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1) if keep_stderr else (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _write_pidfile(path: str) -> None:
    """Atomically: a reader never sees a half-written pid."""
    if not path:
        return
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w") as file:
            file.write(f"{os.getpid()}\n")
        os.replace(temporary, path)
    except OSError as err:
        raise StartupError(f"opening pid-file failed: {path}: {err.strerror}") from None


def _remove_pidfile(path: str) -> None:
    """Remove the pid file only if it is still ours (a USR2 successor owns the new one)."""
    if not path:
        return
    try:
        with open(path) as file:
            if file.read().strip() == str(os.getpid()):
                os.unlink(path)
    except OSError:
        pass
