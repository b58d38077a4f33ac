"""Adapter: the `subnet-escalate` fail2ban action around f2b_ext.escalation.

How it works: fail2ban calls `ban()` for every ban of the jail. A host ban is handed to
the pure `Escalator`; each prefix it proposes is banned *through fail2ban itself*: a
ticket with the prefix, an explicit ban time from the `Schedule` and the next ban count
is queued with `jail.putFailTicket()`, so the jail's own actions thread bans it with
every action of the jail, stores it in fail2ban's database, shows it in
`fail2ban-client status`, restores it after a restart and lifts it on schedule.
The schedule's history is the prefix's ban count in that database (within `forget`).
Prefix bans reaching `ban()` (ours, an admin's `banip 203.0.113.0/24`, restored ones)
are only remembered, so they are never proposed twice; after a restart the restored
host bans rebuild the counting windows. A prefix a filter matched (synrecv's /24 lines)
is new evidence: it counts on the next rung like an escalated one. No state file of our own.

Parameters arrive as strings (fail2ban passes them so); a bad one raises ValueError
naming it when the jail starts, never later at ban time.
"""
from __future__ import annotations

import ipaddress
import random
import threading
import time

from fail2ban.server.action import ActionBase
from fail2ban.server.mytime import MyTime
from fail2ban.server.ticket import FailTicket, Ticket

from .escalation import (DEFAULT_BOGONS, ConfigError, Escalator, HostBan, Ladder, Safety,
                         Schedule, forgeable, parse_duration, parse_networks)
from .host import own_addresses

DEFAULTS = dict(hosts="5", nets="3", prefix4="24", prefix6="64", wide4="16", wide6="48",
                ladder4="", ladder6="", window="1h", schedule="1h 6h 1d 1w", maxtime="",
                rndtime="", forget="30d", maxprefix4="16", maxprefix6="32", protect="",
                bogons="default", spoofable="ignore")


def _int(params: dict, name: str, low: int, high: int) -> int:
    try:
        value = int(params[name])
    except ValueError:
        raise ConfigError(f"{name}: {params[name]!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value} is outside {low}..{high}")
    return value


def build(params: dict, protected: list[str]):
    """(Escalator, Schedule) from the action's string parameters and the addresses it
    must never cover. Raises ConfigError naming the bad parameter."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    p = dict(DEFAULTS, **params)
    hosts, nets = _int(p, "hosts", 2, 1 << 16), _int(p, "nets", 2, 1 << 16)
    ladder4 = p["ladder4"] or f"{_int(p, 'prefix4', 1, 31)}:{hosts} {_int(p, 'wide4', 1, 31)}:{nets}"
    ladder6 = p["ladder6"] or f"{_int(p, 'prefix6', 1, 127)}:{hosts} {_int(p, 'wide6', 1, 127)}:{nets}"
    ladder = Ladder.parse(ladder4, ladder6)
    bogons = DEFAULT_BOGONS if p["bogons"] == "default" else \
        (() if p["bogons"] in ("", "none") else p["bogons"])
    safety = Safety(protected=parse_networks(list(protected), "ignoreip") + parse_networks(p["protect"], "protect"),
                    bogons=parse_networks(bogons, "bogons"),
                    maxprefix={4: _int(p, "maxprefix4", 1, 31), 6: _int(p, "maxprefix6", 1, 127)})
    escalator = Escalator(ladder=ladder, window=parse_duration(p["window"], "window"),
                          safety=safety, spoofable=p["spoofable"])
    schedule = Schedule.parse(p["schedule"], p["maxtime"] or None, p["rndtime"] or None, p["forget"])
    return escalator, schedule


def _ignoreip_networks(jail) -> list[str]:
    """The jail's ignoreip as CIDR strings (names that are not addresses are skipped:
    fail2ban resolves them itself; we cannot cover what we cannot name)."""
    out = []
    try:
        entries = jail.filter.getIgnoreIP()
    except Exception:
        return out
    for entry in entries:
        text = str(entry)
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            continue
    return out


class SubnetEscalateAction(ActionBase):
    """fail2ban action `subnet-escalate.py` (see the module docstring)."""

    banEpoch = 0

    def __init__(self, jail, name, **params):
        super().__init__(jail, name)
        self._params = params
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._escalated = 0
        try:
            self.escalator, self.schedule = build(params, [])   # validate now: fail the jail start
        except ConfigError as exc:
            raise ValueError(f"{name}: {exc}") from None

    # -- lifecycle --
    def _protected(self) -> list[str]:
        """Never to be covered: the jail's ignoreip and this machine's addresses."""
        return _ignoreip_networks(self._jail) + own_addresses()

    def start(self):
        with self._lock:
            self.escalator, self.schedule = build(self._params, self._protected())
        self._logSys.info("subnet-escalate: ladder %s, window %ss, schedule %s, %d protected",
                          self.escalator.ladder.rungs, int(self.escalator.window),
                          self.schedule.steps, len(self.escalator.safety.protected))

    def stop(self):
        pass

    def reload(self, **params):
        """fail2ban-client reload: new parameters, same counting state and bans."""
        with self._lock:
            old = self.escalator
            try:
                self.escalator, self.schedule = build(params, self._protected())
            except ConfigError as exc:
                raise ValueError(f"{self._name}: {exc}") from None
            self.escalator.carry_over(old)
            self._params = params

    def clearAllParams(self):
        """Called by reload before the new parameters arrive; the state stays."""

    # -- bans --
    def ban(self, aInfo):
        ip = aInfo["ip"]
        now = MyTime.time()
        data = aInfo["F-*"] or {}
        if not ip.isSingle:
            # a prefix: ours (re-entering through the jail), an admin's, restored, or the
            # filter's own (synrecv bans the /24 the watcher names; its evidence is forgeable)
            net = ipaddress.ip_network(str(ip), strict=False)
            bantime = aInfo["bantime"]
            until = float("inf") if bantime is None or bantime < 0 else aInfo["time"] + bantime
            from_filter = "proto" in data and "escalation" not in data and not aInfo["restored"]
            forged = from_filter and forgeable(data["proto"], data.get("dir"))
            with self._lock:
                pending = self.escalator.mark_banned(net, until, now, forged)
                while from_filter and pending:      # only a filter's prefix is new evidence
                    pending += self._escalate(pending.pop(0), now)
            return
        ban = HostBan(ipaddress.ip_address(str(ip)), float(aInfo["time"] or now), data.get("proto"), data.get("dir"))
        with self._lock:
            if aInfo["restored"] and ban.time <= self._last_escalation(ban.ip):
                return           # restored after a restart, and already used up by an escalation
            pending = self.escalator.observe(ban)
            while pending:
                pending += self._escalate(pending.pop(0), now)

    def unban(self, aInfo):
        ip = aInfo["ip"]
        if not ip.isSingle:
            with self._lock:
                self.escalator.forget_ban(ipaddress.ip_network(str(ip), strict=False))

    def _escalate(self, cand, now: float) -> list:
        prior = self._history(cand.net)
        seconds = self.schedule.ban_time(prior, cand.forged, self._rng.random())
        ticket = FailTicket(str(cand.net), now)
        ticket.setBanTime(seconds)
        ticket.setBanCount(prior + 1, always=True)
        ticket.setData("escalation", cand.reason, "forged", cand.forged)
        self._jail.putFailTicket(ticket)
        self._escalated += 1
        self._logSys.notice("[%s] Escalate %s for %ss (%s; escalation #%d%s)", self._jail.name, cand.net,
                            seconds, cand.reason, prior + 1, ", forgeable evidence" if cand.forged else "")
        return self.escalator.mark_banned(cand.net, now + seconds, now, cand.forged)

    def _last_escalation(self, addr) -> float:
        """When the first-rung prefix around `addr` was last escalated (fail2ban's db)."""
        rungs = self.escalator.ladder.rungs.get(addr.version)
        db = self._jail.database
        if not rungs or db is None:
            return float("-inf")
        net = ipaddress.ip_network((addr, rungs[0][0]), strict=False)
        rows = db.getBan(str(net), self._jail)
        return float(rows[0][1]) if rows else float("-inf")

    def _history(self, net) -> int:
        """How often this prefix was banned in this jail within `forget` (fail2ban's db)."""
        db = self._jail.database
        if db is None:
            return 0
        rows = db.getBan(str(net), self._jail, forbantime=self.schedule.forget)
        return int(rows[0][0]) if rows else 0

    # -- what fail2ban-client get <jail> action <name> <property> shows --
    @property
    def escalations(self) -> str:
        now = MyTime.time()
        with self._lock:
            active = sorted(self.escalator.active(now).items(), key=lambda kv: kv[1])
        return "\n".join(f"{net} until {_when(until)}" for net, until in active) or "none"

    @property
    def counting(self) -> str:
        with self._lock:
            rows = sorted(self.escalator.counting().items(), key=lambda kv: (-kv[1], str(kv[0])))
        return "\n".join(f"{net} {n}" for net, n in rows[:50]) or "none"

    @property
    def unbans(self) -> str:
        """Every ban of the jail and when it ends, soonest first."""
        manager = self._jail.actions.banManager
        rows = sorted((ticket.getEndOfBanTime(manager.getBanTime()), str(ticket.getID()))
                      for ticket in manager)          # iterating takes a snapshot
        return "\n".join(f"{_when(end)} {ip}" for end, ip in rows) or "none"

    @property
    def status(self) -> str:
        now = MyTime.time()
        with self._lock:
            return (f"escalated {self._escalated}, active {len(self.escalator.active(now))}, "
                    f"counting {self.escalator.tracked()} members, ladder {self.escalator.ladder.rungs}, "
                    f"schedule {list(self.schedule.steps)}")


def _when(epoch: float) -> str:
    if epoch == float("inf") or epoch < 0 or epoch >= Ticket.MAX_TIME:
        return "never"      # a permanent ban
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
