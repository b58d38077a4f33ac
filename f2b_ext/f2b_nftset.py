"""Adapter: the `nftset` fail2ban action: bans into nftables sets, in-process.

How it works: libnftables (Debian's python3-nftables) runs in fail2ban-server's own
process and network namespace: no process per ban. Bans that arrive together are
batched: `ban()` queues the element and one write runs `batch` seconds later (or at once
when `batch=0`), one `add element` per set. `unban()` writes what is queued, then
deletes; an element already gone is not an error. Each element's timeout is the ban's
remaining time, so the kernel lifts it even if fail2ban dies. If the table vanished
(`nft flush ruleset`), the next write or `consistencyCheck()` rebuilds it and refills it
from the jail's current ban list; a watchdog runs that check every `checkinterval`
seconds, because `systemctl restart nftables` flushes the ruleset without any ban to
notice it. `flush()` is fail2ban's unban-all (`unban --all`, jail stop): one `flush set`
per set instead of one delete per ban. What to write is f2b_ext.nftset's business.
"""
from __future__ import annotations

import ipaddress
import threading

from fail2ban.server.action import ActionBase
from fail2ban.server.mytime import MyTime

from . import nftset


class NftError(RuntimeError):
    pass


def remaining(start: float, bantime, now: float):
    """Seconds a ban has left (None: permanent)."""
    if bantime is None or bantime < 0:
        return None
    return start + bantime - now


def _seconds(name: str, text, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not low <= value <= high:
        raise ValueError(f"{name}: {text!r} must be seconds between {low:g} and {high:g}")
    return value


class NftSetAction(ActionBase):
    banEpoch = 0
    _prolongable = True

    def __init__(self, jail, name, direction="in", blocktype="drop", batch="0.02", checkinterval="10"):
        super().__init__(jail, name)
        try:
            nftset.setup_script(jail.name, direction, blocktype)
            self._batch = _seconds("batch", batch, 0, 5)
            self._checkinterval = _seconds("checkinterval", checkinterval, 0, 86400)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        self.direction, self.blocktype = direction, blocktype
        self._jailname = jail.name
        self._nft = None
        self._prefix_sets: set[str] = set()
        self._pending: list[tuple] = []
        self._lock = threading.RLock()
        self._timer = None
        self._watchdog = None
        self.applied = 0            # elements written (for fail2ban-client get ... applied)

    # -- nft --
    def _run(self, script: str) -> tuple[int, str]:
        rc, _out, err = self._cmd(script)
        return rc, err

    def _cmd(self, script: str) -> tuple[int, str, str]:
        if self._nft is None:
            from nftables import Nftables
            self._nft = Nftables()
        rc, out, err = self._nft.cmd(script)
        return rc, out, err.strip()

    def _setup(self):
        rc, err = self._run(nftset.setup_script(self._jailname, self.direction, self.blocktype, self._prefix_sets))
        if rc != 0:
            raise NftError(f"nftables setup failed: {err}")

    # -- lifecycle --
    def start(self):
        with self._lock:
            self._setup()
        if self._checkinterval and self._watchdog is None:
            self._watchdog = threading.Event()
            threading.Thread(target=self._watch, args=(self._watchdog,), daemon=True,
                             name=f"f2b-nftset-{self._jailname}").start()

    def _watch(self, stopped: threading.Event):
        while not stopped.wait(self._checkinterval):
            try:
                self.consistencyCheck()
            except Exception as exc:        # keep watching; fail2ban logs the rest
                self._logSys.error("nftset: check failed: %s", exc)

    def stop(self):
        if self._watchdog is not None:
            self._watchdog.set()
            self._watchdog = None
        with self._lock:
            self._cancel_timer()
            self._pending.clear()
            self._run(nftset.teardown_script(self._jailname, self.direction, self._set_names()))
            rc, out, _ = self._cmd(f"list table {nftset.TABLE}")
            if rc == 0 and "chain " not in out and "set " not in out:
                self._run(f"delete table {nftset.TABLE}")

    def reload(self, direction=None, blocktype=None, batch=None, checkinterval=None, **_):
        with self._lock:
            self._write_pending()
            self.direction = direction or self.direction
            self.blocktype = blocktype or self.blocktype
            if batch is not None:
                self._batch = _seconds("batch", batch, 0, 5)
            if checkinterval is not None:
                self._checkinterval = _seconds("checkinterval", checkinterval, 0, 86400)
            self._setup()

    def clearAllParams(self):
        pass

    # -- bans --
    def ban(self, aInfo):
        left = remaining(aInfo["time"], aInfo["bantime"], MyTime.time())
        if left is not None and left <= 0:
            return
        net = ipaddress.ip_network(str(aInfo["ip"]), strict=False)
        with self._lock:
            self._pending.append((net, left))
            if self._batch <= 0:
                self._write_pending()
            elif self._timer is None:
                self._timer = threading.Timer(self._batch, self._write_pending)
                self._timer.daemon = True
                self._timer.start()

    def prolong(self, aInfo):
        """bantime.increment made the ban longer: replace the element's timeout."""
        with self._lock:
            self._write_pending()
            self._delete(aInfo["ip"])
        self.ban(aInfo)

    def unban(self, aInfo):
        with self._lock:
            self._write_pending()
            self._delete(aInfo["ip"])

    def flush(self):
        """fail2ban's unban-all: empty every set of this jail at once. True tells
        fail2ban that no per-ban unban is needed."""
        with self._lock:
            self._cancel_timer()
            self._pending.clear()
            rc, err = self._run("\n".join(f"flush set {nftset.TABLE} {name}" for name in sorted(self._set_names())))
            if rc != 0:
                self._logSys.warning("nftset: flush: %s", err)
            return rc == 0

    def _set_names(self) -> set[str]:
        return {f"{nftset.jail_key(self._jailname)}_h{f}" for f in (4, 6)} | self._prefix_sets

    def _delete(self, ip):
        rc, err = self._run(nftset.delete_element_script(self._jailname, str(ip)))
        if rc != 0 and "No such file or directory" not in err:
            self._logSys.warning("nftset: unban %s: %s", ip, err)

    def _write_pending(self):
        with self._lock:
            self._cancel_timer()
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            if self._write(batch) != 0:
                self._repair()
                if self._write(batch) != 0:
                    self._logSys.error("nftset: could not add %d element(s) even after repair", len(batch))

    def _write(self, batch) -> int:
        script = []
        for net, _ in batch:
            name = nftset.set_name(self._jailname, net)
            if nftset.is_prefix(net) and name not in self._prefix_sets:
                self._prefix_sets.add(name)
                script.append(nftset.new_prefix_set_script(self._jailname, name, self.direction, self.blocktype))
        script.append(nftset.add_elements_script(self._jailname, batch))
        rc, err = self._run("\n".join(script))
        if rc == 0:
            self.applied += len(batch)
        else:
            self._logSys.warning("nftset: %s", err.splitlines()[0] if err else rc)
        return rc

    def _repair(self):
        """Rebuild the table and refill it from the jail's current bans."""
        self._logSys.warning("nftset: table %s missing or broken; rebuilding from the ban list", nftset.TABLE)
        self._setup()
        now = MyTime.time()
        manager = self._jail.actions.banManager
        default = manager.getBanTime()
        entries = []
        for ticket in manager:
            left = remaining(ticket.getTime(), ticket.getBanTime(default), now)
            if left is None or left > 0:
                entries.append((ipaddress.ip_network(str(ticket.getID()), strict=False), left))
        if entries:
            self._write(entries)

    def consistencyCheck(self, beforeRepair=None):
        """Repair unless the jail's first chain still holds its host-set rule (a
        `flush ruleset` removes the table, a `flush chain` the rules)."""
        key = nftset.jail_key(self._jailname)
        hook = nftset.HOOKS[self.direction][0][0]
        with self._lock:
            rc, out, _ = self._cmd(f"list chain {nftset.TABLE} {key}_{hook}")
            if rc != 0 or f"@{key}_h4 " not in out:
                if beforeRepair is None or beforeRepair():
                    self._repair()
        return True

    def _cancel_timer(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
