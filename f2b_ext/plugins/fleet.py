"""Adapter: the `fleet` fail2ban action, both ends of the fleet inside fail2ban-server.

How it works
------------
`role = publish` (added to a jail's actions): every ban of the jail becomes a fleet
event appended to the local spool (f2b_ext.system.fleet_spool; one SQLite row, on disk before
ban() returns, no network). Bans restored after a restart are not re-sent (the bus
already has them). An unban is sent only when it comes before the ban's end (an admin's
`unbanip`): ordinary expiry needs no message, every event carries its end time.

`role = inbox` (the action of the fleet jail): the fleet agent hands it remote bans
over fail2ban's own socket (`set <jail> action fleet remotebans {"bans": [...]}`), one
call per batch; each becomes a ticket with its remaining time put into the jail, so
fail2ban bans it with the jail's ban action (nftset), stores it in its database, lists
it in `fail2ban-client status`, restores it after a restart and lifts it on time.
It never publishes: the fleet jail's bans came from the fleet.
"""
from __future__ import annotations

import ipaddress
import secrets
import socket
import threading

from fail2ban.server.action import ActionBase
from fail2ban.server.mytime import MyTime
from fail2ban.server.ticket import FailTicket

from f2b_ext.core.escalation import DAY, ban_end
from f2b_ext.core.fleet import EventError, make_event
from f2b_ext.system.fleet_spool import DEFAULT_SPOOL, Spool

DEFAULTS = dict(role="publish", server="", spool=DEFAULT_SPOOL)
MAX_BATCH = 5000


def default_server() -> str:
    return socket.gethostname().split(".")[0]


class FleetAction(ActionBase):
    def __init__(self, jail, name, **params):
        super().__init__(jail, name)
        self.role, self.server, self.spool_path = self._parse(params)
        self._spool = None
        self._lock = threading.Lock()
        self.published = self.received = 0

    def _parse(self, params) -> tuple[str, str, str]:
        unknown = set(params) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"{self._name}: unknown parameter(s): {', '.join(sorted(unknown))}")
        p = dict(DEFAULTS, **params)
        if p["role"] not in ("publish", "inbox"):
            raise ValueError(f"{self._name}: role: {p['role']!r} must be publish or inbox")
        return p["role"], p["server"] or default_server(), p["spool"]

    def reload(self, **params):
        """fail2ban-client reload: the new parameters, the same counts; a publisher whose
        spool moved (or that became the inbox) closes the old one (the next ban opens it)."""
        role, server, spool_path = self._parse(params)
        with self._lock:
            if self._spool and (role != "publish" or spool_path != self.spool_path):
                self._spool.close()
                self._spool = None
            self.role, self.server, self.spool_path = role, server, spool_path

    def clearAllParams(self):
        """Called by reload before the new parameters arrive. fail2ban (1.0.2, 1.1.0:
        Actions.add) keeps an action across a reload only if it has both reload() and
        this; without them the reload dropped the action: a publisher stopped sharing the
        jail's bans and the fleet jail lost its inbox."""

    def start(self):
        if self.role == "publish":
            with self._lock:
                self._spool = Spool(self.spool_path)
        self._logSys.info("fleet: %s as %s (spool %s)", self.role, self.server, self.spool_path)

    def stop(self):
        with self._lock:
            if self._spool:
                self._spool.close()
                self._spool = None

    def _append(self, kind: str, aInfo):
        if self.role != "publish":
            return
        data = aInfo["F-*"] or {}
        ip = str(aInfo["ip"])
        now = MyTime.time()
        bantime = aInfo["bantime"]
        start = float(aInfo["time"] or now)
        end = ban_end(start, bantime)
        end = start + 365 * DAY if end is None else end          # a permanent ban travels as a year
        target = ip if aInfo["ip"].isSingle else str(ipaddress.ip_network(ip, strict=False))
        try:
            ev = make_event(kind, target, self.server, self._jail.name, now, max(end, now),
                            proto=data.get("proto"), direction=data.get("dir"), seq=secrets.token_hex(6))
        except EventError as exc:
            self._logSys.warning("fleet: not sent: %s %s: %s", kind, ip, exc)
            return
        with self._lock:
            if self._spool is None:
                self._spool = Spool(self.spool_path)
            self._spool.append(ev.to_json())
            self.published += 1

    def ban(self, aInfo):
        if aInfo["restored"]:
            return
        self._append("ban", aInfo)

    def unban(self, aInfo):
        bantime = aInfo["bantime"]
        if bantime is not None and bantime >= 0 and float(aInfo["time"]) + bantime <= MyTime.time() + 2:
            return                 # it ended on time: every receiver knows the end already
        self._append("unban", aInfo)

    def flush(self):
        """fail2ban stops, or an admin's `unban --all`: nothing to send. Without this,
        fail2ban would unban every ticket through unban() on each stop, and a restart
        would lift this server's reports fleet-wide. (So `unban --all` does not
        propagate; `unbanip` does.)"""
        return True

    # -- the inbox: called by the agent over fail2ban's socket --
    def remotebans(self, bans=()):
        """bans: [[address or prefix, until (epoch), origin], ...]; returns how many were queued."""
        if self.role != "inbox":
            raise ValueError("fleet: remotebans is for role=inbox")
        now = MyTime.time()
        queued = 0
        for item in list(bans)[:MAX_BATCH]:
            target, until, origin = str(item[0]), float(item[1]), str(item[2])
            ipaddress.ip_network(target, strict=True)      # the agent validated it; check again
            seconds = int(until - now)
            if seconds < 1:
                continue
            ticket = FailTicket(target, now)
            ticket.setBanTime(seconds)
            ticket.setData("fleet", origin)
            self._jail.putFailTicket(ticket)
            queued += 1
        self.received += queued
        return queued

    @property
    def status(self) -> str:
        return f"role {self.role}, server {self.server}, published {self.published}, received {self.received}"
