"""Adapter base: a fail2ban action that keeps a jail's bans in kernel sets with
per-element timeouts (nftset, ipset-net). The backends say *how* to write; this says
*when*, and keeps one invariant: what fail2ban lists as banned for the jail is what the
jail's kernel sets hold, with the same expiry (f2b_ext.core.setsync decides what differs).

How it works: `ban()` queues (network, seconds left) and one write runs `batch` seconds
later (at once with `batch=0`), so a burst of bans costs one kernel update. `ban()`
only takes the queue's lock, never the one that orders kernel updates, so fail2ban's
banning thread never waits for the kernel. A batch that fails goes back on the queue
and the error goes to fail2ban's log (also from the timer thread). `unban()` writes
what is queued, then deletes; an element already gone is not an error. `prolong()`
(bantime.increment) replaces the element's timeout.

Start: the backend first proves it can enforce (library present, permission), then
adopts what the kernel already holds (an nftset jail's prefix sets get their rules in
the same transaction as the host sets: no window after kill -9), then the kernel is
synchronised with fail2ban's list. Elements fail2ban does not list yet but its
database still holds (restored right after start) are kept. A backend that cannot
enforce, or a bad parameter, stops the jail with one ERROR line instead of logging
bans nobody enforces.

The watchdog (every `checkinterval` s) and fail2ban's own `consistencyCheck()` rebuild
missing sets or rules (`nft flush ruleset`, `iptables -F`) and compare elements both
ways (`nft flush set`, `ipset flush`, an element added or deleted by hand, a wrong
timeout), repairing the kernel to fail2ban's list and logging what they fixed. Beside
it (while `checkinterval` is not 0), a backend that names a `_event_scope` hears the
kernel's nf_tables notifications (f2b_ext.system.nftevents): a deletion in the jail's
tables that another process or thread committed (`nft flush set`, a deleted rule or
chain, `nft flush ruleset`, iptables-nft's `-F`) brings the same compare about 0.2 s
later, at most twice a second; it adds and retimes, and leaves removing strays to the
watchdog (fail2ban drops a ticket from its list just before it unbans it). Transactions
this action's own threads commit (its unbans, its repairs) are not heard. If the socket
cannot be opened, one line says so and the watchdog alone remains.

`flush()` is fail2ban's unban-all (`unban --all`, an action removed by reload): one
flush per set. When the jail itself stops (stop, restart) and fail2ban keeps its bans
in its database, the kernel keeps them too (each element still expires on its own), so
a restart never opens a window; without a database, stop removes everything.

Backends implement `validate`, `_probe`, `_adopt`, `_setup`, `_remove_rules`,
`_teardown`, `_write`, `_replace`, `_delete`, `_flush_sets`, `_intact` and `_held`.
"""
from __future__ import annotations

import gc
import ipaddress
import math
import threading
import time

from fail2ban.server.action import ActionBase
from fail2ban.server.mytime import MyTime

from f2b_ext.core import nftevents
from f2b_ext.core import setsync
from f2b_ext.core.setsync import remaining  # noqa: F401  (kept for importers)
from f2b_ext.errors import F2bExtError
from f2b_ext.system.nftevents import EventWatch, open_socket, thread_ids_comparable


# seconds a thread that wrote to the kernel counts as this action's own (NEWGEN names the
# committing thread, and is heard within milliseconds unless the listener is busy in a
# compare; a batch timer's thread is gone by then, and Linux hands its id out again only
# after the pid counter wraps). Missing it costs one compare, never a repair.
WRITER_MEMORY = 10.0


class BackendError(F2bExtError, RuntimeError):
    pass


def network(ip) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """What fail2ban bans (an IPAddr: host or CIDR) as a network."""
    return ipaddress.ip_network(str(ip), strict=False)


def seconds(name: str, text, low: float, high: float) -> float:
    """A parameter in seconds within [low, high], or ValueError naming it."""
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not low <= value <= high:
        raise ValueError(f"{name}: {text!r} must be seconds between {low:g} and {high:g}")
    return value


def stop_jail(jail):
    """Ask fail2ban-server to stop `jail` (from another thread: the jail's own actions
    thread would wait for itself). Outside fail2ban-server (tests) nothing happens."""
    try:
        from fail2ban.server.server import Server
    except ImportError:          # pragma: no cover
        return
    servers = [o for o in gc.get_objects() if isinstance(o, Server)]
    if servers:
        threading.Thread(target=servers[0].stopJail, args=(jail.name,), daemon=True,
                         name=f"f2b-ext-stop-{jail.name}").start()


class SetAction(ActionBase):
    banEpoch = 0
    _prolongable = True
    BACKEND = "set"            # the name used in log messages

    def __init__(self, jail, name, direction="in", blocktype="drop", batch="0.02", checkinterval="10"):
        super().__init__(jail, name)
        self.fault = None          # why this action refuses to run (the jail is stopped)
        self.direction, self.blocktype = "in", "drop"
        self._batch, self._checkinterval = 0.02, 10.0
        try:
            self.validate(direction, blocktype)
            self._batch = seconds("batch", batch, 0, 5)
            self._checkinterval = seconds("checkinterval", checkinterval, 0, 86400)
            self.direction, self.blocktype = direction, blocktype
        except ValueError as exc:
            # Raising here would leave the jail running without this action (fail2ban
            # logs the error and starts the rest); start() stops the jail instead.
            self.fault = f"{name}: {exc}"
        self._jailname = jail.name
        self._pending: list[tuple] = []
        self._lock = threading.Lock()     # the queue and its timer; held for microseconds
        self._io = threading.RLock()      # orders every kernel update; ban() never waits on it
        self._timer = None
        self._watchdog = None
        self._events = None          # the nf_tables notification listener (system.nftevents.EventWatch)
        self._writers: dict[int, float] = {}   # thread id -> when it last wrote to the kernel
        self._bad_texts: set[str] = set()
        self.applied = 0            # elements written (fail2ban-client get JAIL action NAME applied)
        self.repairs = 0            # elements the checks added, retimed or removed
        actions = getattr(jail, "actions", None)
        if getattr(actions, "active", False) is True:
            # Added by a reload to a running jail. fail2ban (1.0.2, 1.1.0) calls start()
            # only when the jail's actions thread starts, and at the end of the reload
            # flushes and stops every action it did not *reload*, new ones included: so
            # enforce what it lists now, and count as reloaded.
            reloading = getattr(actions, "_reload_actions", None)
            if isinstance(reloading, dict):
                reloading[name] = dict(direction=direction, blocktype=blocktype, batch=batch,
                                       checkinterval=checkinterval)
            self.start()

    # -- what a backend provides --
    @staticmethod
    def validate(direction: str, blocktype: str): raise NotImplementedError
    def _probe(self): pass                     # raise BackendError if it cannot enforce
    def _adopt(self): pass                     # learn what the kernel already holds
    def _setup(self): raise NotImplementedError
    def _remove_rules(self): raise NotImplementedError
    def _teardown(self): raise NotImplementedError
    def _write(self, entries: list[tuple]) -> bool: raise NotImplementedError
    def _replace(self, entries: list[tuple]) -> bool: return self._write(entries)
    def _delete(self, net) -> None: raise NotImplementedError
    def _flush_sets(self) -> bool: raise NotImplementedError
    def _intact(self) -> bool: raise NotImplementedError
    def _held(self) -> dict: raise NotImplementedError
    def _as_kernel(self, left): return left       # the timeout the kernel can hold
    def _event_scope(self): return None            # core.nftevents.Scope: where nf_tables events matter

    # -- lifecycle --
    def start(self):
        if self.fault:
            return self._refuse(self.fault)
        try:
            self._probe()
            with self._io:
                self._adopt()
                self._setup()
                self.sync()
        except Exception as exc:
            return self._refuse(f"{self.BACKEND} cannot enforce bans: {exc}")
        self._start_watching()

    def _start_watching(self):
        """The watchdog and the event listener, while checkinterval is not 0. Called in
        the thread (and so the network namespace) the action enforces in."""
        if not self._checkinterval:
            return
        if self._watchdog is None:
            self._watchdog = threading.Event()
            threading.Thread(target=self._watch, args=(self._watchdog,), daemon=True,
                             name=f"f2b-{self.BACKEND}-{self._jailname}").start()
        if self._events is None:
            scope = self._event_scope()
            if scope is None:
                return
            try:
                sock = open_socket()
            except OSError as exc:
                self._logSys.warning("%s: cannot listen to nftables events (%s); repairs wait for the next check"
                                     " (every %g s)", self.BACKEND, exc, self._checkinterval)
                return
            ours = self._wrote_recently if thread_ids_comparable() else (lambda tid: False)
            self._events = EventWatch(
                sock, nftevents.Transactions(scope, ours), self._event_check, self._logSys,
                name=f"f2b-{self.BACKEND}-events-{self._jailname}").start()

    def _stop_watching(self):
        if self._watchdog is not None:
            self._watchdog.set()
            self._watchdog = None
        if self._events is not None:
            self._events.stop()
            self._events = None

    def _note_writer(self):
        """This thread is about to commit to the kernel: its transactions are our own."""
        now = time.monotonic()
        if len(self._writers) > 256:
            self._writers = {tid: t for tid, t in self._writers.items() if now - t < WRITER_MEMORY}
        self._writers[threading.get_native_id()] = now

    def _wrote_recently(self, tid: int) -> bool:
        return time.monotonic() - self._writers.get(tid, -math.inf) < WRITER_MEMORY

    def _event_check(self, reason: str):
        """After an nf_tables change that may have removed enforcement (listener thread):
        the watchdog's check, without removing strays."""
        self._check(f"after {reason}", remove=False)

    def _refuse(self, reason: str):
        """One clear line, and the jail stops: bans nobody enforces are worse than none."""
        self.fault = reason
        self._logSys.error("Jail %r stopped: %s", self._jailname, reason)
        stop_jail(self._jail)

    def _watch(self, stopped: threading.Event):
        while not stopped.wait(self._checkinterval):
            try:
                self.consistencyCheck()
            except Exception as exc:        # keep watching; the next round may succeed
                self._logSys.error("%s: check failed: %s", self.BACKEND, exc)

    def _keeps_bans_on_stop(self) -> bool:
        """The jail is stopping (not an action removed by reload) and fail2ban's database
        keeps its bans for the next start: so does the kernel."""
        actions = getattr(self._jail, "actions", None)
        return (getattr(actions, "active", True) is False
                and getattr(self._jail, "database", None) is not None)

    def stop(self):
        self._stop_watching()
        if self.fault:
            return
        with self._io:
            if self._keeps_bans_on_stop():
                self._write_pending()
                self._logSys.info("%s: jail stopping; its kernel bans stay until they expire or fail2ban"
                                  " restores them", self.BACKEND)
                return
            with self._lock:
                self._cancel_timer()
                self._pending.clear()
            self._teardown()

    def reload(self, direction=None, blocktype=None, batch=None, checkinterval=None, **_):
        """fail2ban-client reload: new parameters, same sets and bans. A new direction
        or blocktype first removes the rules written for the old one."""
        with self._io:
            self._write_pending()
            direction, blocktype = direction or self.direction, blocktype or self.blocktype
            try:
                self.validate(direction, blocktype)
                if batch is not None:
                    self._batch = seconds("batch", batch, 0, 5)
                if checkinterval is not None:
                    self._checkinterval = seconds("checkinterval", checkinterval, 0, 86400)
            except ValueError as exc:
                raise ValueError(f"{self._name}: {exc}") from None
            if (direction, blocktype) != (self.direction, self.blocktype):
                self._remove_rules()
                self.direction, self.blocktype = direction, blocktype
            self._setup()
            self.sync()
        if not self._checkinterval:          # outside the lock: a listener's check may be waiting for it
            self._stop_watching()
        elif not self.fault:
            self._start_watching()

    def clearAllParams(self):
        pass

    # -- bans --
    def ban(self, aInfo):
        if self.fault:
            return
        left = remaining(aInfo["time"], aInfo["bantime"], MyTime.time())
        if left is not None and left <= 0:
            return
        try:
            net = network(aInfo["ip"])
        except ValueError:
            self._logSys.warning("%s: %r is not an address or network; not written", self.BACKEND, str(aInfo["ip"]))
            return
        with self._lock:
            self._pending.append((net, left))
            now = self._batch <= 0
            if not now and self._timer is None:
                self._timer = threading.Timer(self._batch, self._timer_fired)
                self._timer.daemon = True
                self._timer.start()
        if now:
            self._write_pending()

    def prolong(self, aInfo):
        """bantime.increment made the ban longer: replace the element's timeout."""
        if self.fault:
            return
        left = remaining(aInfo["time"], aInfo["bantime"], MyTime.time())
        with self._io:
            self._write_pending()
            try:
                net = network(aInfo["ip"])
            except ValueError:
                return
            if left is None or left > 0:
                self._replace([(net, left)])

    def unban(self, aInfo):
        if self.fault:
            return
        try:
            net = network(aInfo["ip"])
        except ValueError:
            return
        with self._io:
            self._write_pending()
            self._delete(net)

    def flush(self):
        if self.fault:
            return True
        with self._io:
            if self._keeps_bans_on_stop():
                return True                 # stop() keeps them; nothing per ban follows
            with self._lock:
                self._cancel_timer()
                self._pending.clear()
            return self._flush_sets()

    def _timer_fired(self):
        """The batch timer's thread: errors go to fail2ban's log, never lost in a thread."""
        try:
            self._write_pending()
        except Exception as exc:
            self._logSys.error("%s: writing a batch failed (%s); it stays queued for the next write or check",
                               self.BACKEND, exc)

    def _write_pending(self):
        with self._io:
            with self._lock:
                self._cancel_timer()
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                if self._written(batch):
                    return
                self._repair()
                if not self._written(batch):
                    self._logSys.error("%s: could not add %d element(s) even after repair", self.BACKEND, len(batch))
            except Exception:
                with self._lock:
                    self._pending[:0] = batch
                raise

    def _written(self, batch) -> bool:
        if self._write(batch):
            self.applied += len(batch)
            return True
        return False

    def _repair(self, why: str = ""):
        """Rebuild sets and rules, then make their elements fail2ban's list."""
        self._logSys.warning("%s: sets or rules missing%s; rebuilding from the ban list", self.BACKEND,
                             f" ({why})" if why else "")
        self._adopt()
        self._setup()
        self.sync()

    # -- the invariant --
    def _listed(self, now: float) -> dict:
        manager = self._jail.actions.banManager
        default = manager.getBanTime()
        tickets = [(t.getID(), t.getTime(), t.getBanTime(default)) for t in list(manager)]
        nets, bad = setsync.listed(tickets, now)
        nets = {net: self._as_kernel(left) for net, left in nets.items()}
        for text in set(bad) - self._bad_texts:
            self._bad_texts.add(text)
            self._logSys.warning("%s: fail2ban lists %r, which is not an address or network: it cannot be"
                                 " enforced (unban it)", self.BACKEND, text)
        return nets

    def _in_database(self, now: float) -> set:
        """Bans fail2ban's database holds for this jail (restored after a restart)."""
        database = getattr(self._jail, "database", None)
        if database is None:
            return set()
        nets, _ = setsync.listed(((t.getID(), t.getTime(), t.getBanTime()) for t in
                                  database.getCurrentBans(jail=self._jail, fromtime=now, correctBanTime=False)), now)
        return set(nets)

    def sync(self, why: str = "", remove: bool = True) -> setsync.Plan:
        """Make the kernel's elements fail2ban's list; log what differed. `remove` False:
        only add and retime (elements fail2ban no longer lists stay for the watchdog)."""
        with self._io:
            self._write_pending()
            now = MyTime.time()
            listed = self._listed(now)
            held = self._held()
            keep = self._in_database(now) if any(net not in listed for net in held) else set()
            plan = setsync.plan(listed, held, keep, tolerance=self._batch + 2)
            if not remove:
                plan.remove = []
            if plan:
                for net in plan.remove:
                    self._delete(net)
                if plan.retime:
                    self._replace(plan.retime)
                if plan.add:
                    self._written(plan.add)
                self.repairs += len(plan.add) + len(plan.retime) + len(plan.remove)
                self._logSys.warning("%s: the kernel differed from fail2ban's list%s: %s", self.BACKEND,
                                     f" ({why})" if why else "", plan.summary())
            return plan

    def consistencyCheck(self, beforeRepair=None):
        self._check(beforeRepair=beforeRepair)
        return True

    def _check(self, why: str = "", remove: bool = True, beforeRepair=None):
        """Rebuild what is missing, else make the elements fail2ban's list (the watchdog,
        fail2ban's consistencyCheck and the event listener all come here)."""
        if self.fault:
            return
        with self._io:
            if not self._intact():
                if beforeRepair is None or beforeRepair():
                    self._repair(why)
            else:
                self.sync(why, remove=remove)

    def _cancel_timer(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
