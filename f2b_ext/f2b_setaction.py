"""Adapter base: a fail2ban action that keeps a jail's bans in kernel sets with
per-element timeouts (nftset, ipset-net). The backends say *how* to write; this says
*when*.

How it works: `ban()` queues (network, seconds left) and one write runs `batch` seconds
later (at once with `batch=0`), so a burst of bans costs one kernel update. `ban()`
only takes the queue's lock, never the one that orders kernel updates, so fail2ban's
banning thread never waits for the kernel. `unban()`
writes what is queued, then deletes; an element already gone is not an error.
`prolong()` (bantime.increment) replaces the element's timeout. `flush()` is
fail2ban's unban-all (`unban --all`, jail stop): one flush per set, and True tells
fail2ban that no per-ban unban is needed. When a write fails, or the watchdog (every
`checkinterval` s) or fail2ban's own `consistencyCheck()` finds the jail's rules gone
(`nft flush ruleset`, `systemctl restart nftables`, `iptables -F`), the sets and rules
are rebuilt and refilled from the jail's ban list. Each element's timeout is the ban's
remaining time, so the kernel lifts a ban even if fail2ban dies.

Backends implement `validate` (their directions and block types), `_setup`,
`_remove_rules`, `_teardown`, `_write`, `_delete`, `_flush_sets` and `_intact`.
"""
from __future__ import annotations

import ipaddress
import threading

from fail2ban.server.action import ActionBase
from fail2ban.server.mytime import MyTime


class BackendError(RuntimeError):
    pass


def remaining(start: float, bantime, now: float):
    """Seconds a ban has left (None: permanent)."""
    if bantime is None or bantime < 0:
        return None
    return start + bantime - now


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


class SetAction(ActionBase):
    banEpoch = 0
    _prolongable = True
    BACKEND = "set"            # the name used in log messages

    def __init__(self, jail, name, direction="in", blocktype="drop", batch="0.02", checkinterval="10"):
        super().__init__(jail, name)
        try:
            self.validate(direction, blocktype)
            self._batch = seconds("batch", batch, 0, 5)
            self._checkinterval = seconds("checkinterval", checkinterval, 0, 86400)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        self.direction, self.blocktype = direction, blocktype
        self._jailname = jail.name
        self._pending: list[tuple] = []
        self._lock = threading.Lock()     # the queue and its timer; held for microseconds
        self._io = threading.RLock()      # orders every kernel update; ban() never waits on it
        self._timer = None
        self._watchdog = None
        self.applied = 0            # elements written (fail2ban-client get JAIL action NAME applied)

    # -- what a backend provides --
    @staticmethod
    def validate(direction: str, blocktype: str): raise NotImplementedError
    def _setup(self): raise NotImplementedError
    def _remove_rules(self): raise NotImplementedError
    def _teardown(self): raise NotImplementedError
    def _write(self, entries: list[tuple]) -> bool: raise NotImplementedError
    def _delete(self, net) -> None: raise NotImplementedError
    def _flush_sets(self) -> bool: raise NotImplementedError
    def _intact(self) -> bool: raise NotImplementedError

    # -- lifecycle --
    def start(self):
        with self._io:
            self._setup()
        if self._checkinterval and self._watchdog is None:
            self._watchdog = threading.Event()
            threading.Thread(target=self._watch, args=(self._watchdog,), daemon=True,
                             name=f"f2b-{self.BACKEND}-{self._jailname}").start()

    def _watch(self, stopped: threading.Event):
        while not stopped.wait(self._checkinterval):
            try:
                self.consistencyCheck()
            except Exception as exc:        # keep watching; the next round may succeed
                self._logSys.error("%s: check failed: %s", self.BACKEND, exc)

    def stop(self):
        if self._watchdog is not None:
            self._watchdog.set()
            self._watchdog = None
        with self._io:
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

    def clearAllParams(self):
        pass

    # -- bans --
    def ban(self, aInfo):
        left = remaining(aInfo["time"], aInfo["bantime"], MyTime.time())
        if left is not None and left <= 0:
            return
        net = network(aInfo["ip"])
        with self._lock:
            self._pending.append((net, left))
            now = self._batch <= 0
            if not now and self._timer is None:
                self._timer = threading.Timer(self._batch, self._write_pending)
                self._timer.daemon = True
                self._timer.start()
        if now:
            self._write_pending()

    def prolong(self, aInfo):
        """bantime.increment made the ban longer: replace the element's timeout."""
        with self._io:
            self._write_pending()
            self._delete(network(aInfo["ip"]))
            self.ban(aInfo)

    def unban(self, aInfo):
        with self._io:
            self._write_pending()
            self._delete(network(aInfo["ip"]))

    def flush(self):
        with self._io:
            with self._lock:
                self._cancel_timer()
                self._pending.clear()
            return self._flush_sets()

    def _write_pending(self):
        with self._io:
            with self._lock:
                self._cancel_timer()
                batch, self._pending = self._pending, []
            if not batch or self._written(batch):
                return
            self._repair()
            if not self._written(batch):
                self._logSys.error("%s: could not add %d element(s) even after repair", self.BACKEND, len(batch))

    def _written(self, batch) -> bool:
        if self._write(batch):
            self.applied += len(batch)
            return True
        return False

    def _repair(self):
        """Rebuild sets and rules, refill them from the jail's current bans."""
        self._logSys.warning("%s: sets or rules missing; rebuilding from the ban list", self.BACKEND)
        self._setup()
        now = MyTime.time()
        manager = self._jail.actions.banManager
        default = manager.getBanTime()
        entries = []
        for ticket in manager:
            left = remaining(ticket.getTime(), ticket.getBanTime(default), now)
            if left is None or left > 0:
                entries.append((network(ticket.getID()), left))
        if entries:
            self._written(entries)

    def consistencyCheck(self, beforeRepair=None):
        with self._io:
            if not self._intact() and (beforeRepair is None or beforeRepair()):
                self._repair()
        return True

    def _cancel_timer(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
