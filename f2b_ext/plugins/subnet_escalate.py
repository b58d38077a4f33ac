"""Adapter: the `subnet-escalate` fail2ban action around f2b_ext.core.escalation.

How it works: fail2ban calls `ban()` for every ban of the jail. A host ban is handed to
the pure `Escalator`; each prefix it proposes is banned *through fail2ban itself*: a
ticket with the prefix, an explicit ban time from the `Schedule` and the next ban count
is queued with `jail.putFailTicket()`, so the jail's own actions thread bans it with
every action of the jail, stores it in fail2ban's database, shows it in
`fail2ban-client status`, restores it after a restart and lifts it on schedule.
The schedule's history is the prefix's ban count in that database (within `forget`).
Which kind of ban reached `ban()` decides what it means (`BAN_KINDS`, a table): a host
is new evidence; our own prefix coming back or restored is only remembered; an admin's
prefix is remembered as proven; a prefix a filter matched (synrecv's /24 lines) is new
evidence of the kind its captures say. The evidence kind travels in the ticket's data,
so a restart restores it.

Dependencies (f2b_ext/core/dependencies.py, read by f2b_ext/system/host.py) are guarded from the
moment the action is created, before the jail starts or restores a ban: every address
the server depends on is put into the jail's own ignore list (fail2ban's machinery:
`fail2ban-client get <jail> ignoreip` lists them, and an ignored address is never
banned, stored or sent to the kernel), and into the escalator's protected networks. A
thread refreshes them every `refresh` seconds (new peers, changed routes, resolved
names) and keeps the remembered peers in `statedir`. When a source cannot be read or a
name does not resolve, escalation is held (fail closed) and the log says why.

Parameters arrive as strings (fail2ban passes them so); a bad one raises ValueError
naming it when the jail starts, never later at ban time.
"""
from __future__ import annotations

import ipaddress
import os
import random
import tempfile
import threading
import time
from pathlib import Path

from fail2ban.server.action import ActionBase
from fail2ban.server.mytime import MyTime
from fail2ban.server.ticket import FailTicket, Ticket

from f2b_ext.core import dependencies as deps
from f2b_ext.system import host
from f2b_ext.core.escalation import DEFAULT_FORGED_SCHEDULE, DEFAULT_FORGET, DEFAULT_LADDER, DEFAULT_MAXPREFIX, DEFAULT_SCHEDULE, Breaker, ConfigError, Escalator, Ladder, Safety, Schedule, ban_end, on_ban, parse_bogons, parse_duration, parse_networks

# The action's parameters as a jail writes them; the ladder's, the schedule's and the
# widest prefixes' defaults are the core's (escalation.DEFAULT_*).
(_PREFIX4, _HOSTS), (_WIDE4, _NETS) = DEFAULT_LADDER[4]
(_PREFIX6, _), (_WIDE6, _) = DEFAULT_LADDER[6]
DEFAULTS = dict(hosts=str(_HOSTS), nets=str(_NETS), prefix4=str(_PREFIX4), prefix6=str(_PREFIX6),
                wide4=str(_WIDE4), wide6=str(_WIDE6),
                ladder4="", ladder6="", window="1h", schedule=DEFAULT_SCHEDULE, maxtime="",
                rndtime="", forget=DEFAULT_FORGET, maxprefix4=str(DEFAULT_MAXPREFIX[4]),
                maxprefix6=str(DEFAULT_MAXPREFIX[6]), protect="",
                bogons="default", spoofable="count", widen="proven", forgedschedule=DEFAULT_FORGED_SCHEDULE,
                maxrate="10/1h", maxheld="64", peers="protect", retention="7d", refresh="30s",
                statedir="")


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
    safety = Safety(protected=parse_networks(list(protected), "ignoreip") + parse_networks(p["protect"], "protect"),
                    bogons=parse_bogons(p["bogons"]),
                    maxprefix={4: _int(p, "maxprefix4", 1, 31), 6: _int(p, "maxprefix6", 1, 127)})
    escalator = Escalator(ladder=ladder, window=parse_duration(p["window"], "window"),
                          safety=safety, spoofable=p["spoofable"], widen=p["widen"],
                          breaker=Breaker.parse(p["maxrate"], p["maxheld"]))
    schedule = Schedule.parse(p["schedule"], p["maxtime"] or None, p["rndtime"] or None, p["forget"],
                              p["forgedschedule"])
    return escalator, schedule


def guard_params(params: dict) -> dict:
    """The dependency guard's parameters, validated: peers, retention, refresh, statedir."""
    p = dict(DEFAULTS, **params)
    if p["peers"] not in ("protect", "allow"):
        raise ConfigError(f"peers: {p['peers']!r} must be 'protect' or 'allow'")
    return dict(peers=p["peers"] == "protect", retention=parse_duration(p["retention"], "retention"),
                refresh=parse_duration(p["refresh"], "refresh"), statedir=p["statedir"])


def _ignoreip(jail) -> tuple[list[str], list[str]]:
    """The jail's ignoreip: (networks as CIDR strings, host names)."""
    nets, names = [], []
    try:
        entries = jail.filter.getIgnoreIP()
    except Exception:
        return nets, names
    for entry in entries:
        text = str(entry)
        try:
            nets.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            names.append(text)
    return nets, names


class SubnetEscalateAction(ActionBase):
    """fail2ban action `subnet-escalate.py` (see the module docstring)."""

    banEpoch = 0

    def __init__(self, jail, name, **params):
        super().__init__(jail, name)
        self._params = params
        self._lock = threading.Lock()             # the escalator and what it decides
        self._refresh_lock = threading.Lock()     # the guard's state: ignore list, peers, names
        self._rng = random.Random()
        self._escalated = 0
        self._stop = threading.Event()
        self._thread = None
        self._ours: set[str] = set()           # ignore entries this action added
        self._deps: list = []                  # [Dependency] in force
        self._resolved: dict = {}              # name -> [addresses]
        self._unresolved: dict = {}            # name -> error
        self._problems: list = []
        self._saved_at = 0.0
        try:
            self.escalator, self.schedule = build(params, [])   # validate now: fail the jail start
            self._guard = guard_params(params)
        except ConfigError as exc:
            raise ValueError(f"{name}: {exc}") from None
        self._memory = self._load_peers()
        # guard before the jail starts: no line read and no ban restored before this
        self._refresh(resolve_names=False)

    # -- lifecycle --
    def start(self):
        # __init__ guarded already; the thread's first round refreshes at once, names too
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"f2b-ext-guard-{self._jail.name}", daemon=True)
        self._thread.start()
        self._logSys.info("subnet-escalate: ladder %s, window %ss, schedule %s, forged %s, %d dependencies guarded",
                          self.escalator.ladder.rungs, int(self.escalator.window),
                          self.schedule.steps, self.schedule.forged, len(self._deps))

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._save_peers()

    def reload(self, **params):
        """fail2ban-client reload: new parameters, same counting state and bans; the
        ignore list fail2ban just rebuilt gets the dependencies back at once."""
        with self._lock:
            old = self.escalator
            try:
                self.escalator, self.schedule = build(params, [])
                self._guard = guard_params(params)
            except ConfigError as exc:
                raise ValueError(f"{self._name}: {exc}") from None
            self.escalator.carry_over(old)
            self._params = params
        self._ours.clear()          # fail2ban cleared the ignore list before reloading
        self._refresh(resolve_names=False)

    def clearAllParams(self):
        """Called by reload before the new parameters arrive; the state stays."""

    # -- dependencies --
    def _loop(self):
        names_due = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            resolve_names = now >= names_due or bool(self._unresolved)
            try:
                self._refresh(resolve_names=resolve_names)
            except Exception as exc:          # never let the guard thread die silently
                self._logSys.error("subnet-escalate: dependency refresh failed: %s", exc)
                with self._lock:
                    self.escalator.hold(f"dependency refresh failed: {exc}")
            if resolve_names:
                names_due = now + 600
            self._stop.wait(self._guard["refresh"])

    def _refresh(self, resolve_names: bool):
        """Gather dependencies, remember peers, update the ignore list and the
        escalator's protected networks; hold escalation while anything is unknown.
        One refresh at a time (the guard thread, start and reload all call it). Names
        are resolved before the lock is taken: a resolver that does not answer delays
        the guard thread alone, never a reload that refreshes meanwhile."""
        if resolve_names:
            self._resolve_names()
        with self._refresh_lock:
            self._refresh_locked()

    def _resolve_names(self):
        names = set(host.gather().names) | set(_ignoreip(self._jail)[1])
        resolved, unresolved = {}, {}
        for name in sorted(names):
            try:
                resolved[name] = host.resolve(name)
            except OSError as exc:
                unresolved[name] = exc.strerror or str(exc)
        with self._refresh_lock:
            for name, addresses in resolved.items():
                self._resolved[name] = addresses
                self._unresolved.pop(name, None)
            self._unresolved.update(unresolved)

    def _refresh_locked(self):
        gathered = host.gather()
        now = time.time()
        if self._guard["peers"]:
            changed = self._memory.observe(gathered.peers, now) + len(self._memory.expire(now))
            if changed or now - self._saved_at > 300:
                self._save_peers()      # a new peer is kept at once: a kill -9 loses none
                self._saved_at = now
        ign_nets, ign_names = _ignoreip(self._jail)
        names = dict(gathered.names, **{n: "ignoreip" for n in ign_names})
        found = list(gathered.found)
        for name, source in names.items():
            found += deps.dependencies(source, self._resolved.get(name, ()), name)
        found += deps.dependencies("ignoreip", ign_nets) + deps.dependencies("protect", self._params.get("protect", "").replace(",", " ").split())
        if self._guard["peers"]:
            found += deps.dependencies("peer", self._memory.seen)
        pending = [n for n in names if n not in self._resolved and n not in self._unresolved]
        problems = list(gathered.problems) + [f"{n} does not resolve ({e})" for n, e in self._unresolved.items() if n in names]
        problems += [f"{n} not resolved yet" for n in pending]
        self._sync_ignore(found)
        with self._lock:
            self._deps = sorted(set(found), key=lambda d: (d.net.version, d.net, d.source))
            nets = [str(d.net) for d in self._deps]
            esc = self.escalator
            esc.set_safety(Safety(protected=tuple(ipaddress.ip_network(n) for n in dict.fromkeys(nets)),
                                  bogons=esc.safety.bogons, maxprefix=esc.safety.maxprefix))
            reason = "; ".join(problems) or None
            if reason != esc.held:
                if reason:
                    self._logSys.warning("[%s] subnet-escalate: escalation held (fail closed): %s", self._jail.name, reason)
                elif esc.held:
                    self._logSys.notice("[%s] subnet-escalate: escalation resumed, %d dependencies guarded",
                                        self._jail.name, len(self._deps))
                esc.hold(reason)
            self._problems = problems

    def _sync_ignore(self, found: list):
        """Make the jail's ignore list hold every dependency (never removing an entry
        that is not ours)."""
        flt = self._jail.filter
        want = {str(d.net.network_address) if d.net.prefixlen == d.net.max_prefixlen else str(d.net) for d in found}
        have = {str(e) for e in flt.getIgnoreIP()}
        for entry in sorted(want - have):
            flt.addIgnoreIP(entry)
            self._ours.add(entry)
        for entry in sorted(self._ours - want):
            self._ours.discard(entry)
            for e in flt.getIgnoreIP():
                if str(e) == entry:
                    flt.delIgnoreIP(e)

    def _peers_file(self) -> Path | None:
        """`statedir`, or beside fail2ban's own database (Debian: /var/lib/fail2ban);
        None when fail2ban keeps no database (then peers live in memory only)."""
        name = f"f2b-ext-peers-{self._jail.name}.json"
        if self._guard["statedir"]:
            return Path(self._guard["statedir"]) / name
        db = getattr(self._jail, "database", None)
        filename = getattr(db, "filename", None)
        if not filename or filename == ":memory:":
            return None
        return Path(filename).parent / name

    def _load_peers(self) -> deps.PeerMemory:
        path = self._peers_file()
        try:
            text = path.read_text() if path else ""
        except OSError:
            text = ""
        return deps.PeerMemory.loads(text, self._guard["retention"])

    def _save_peers(self):
        """Write the remembered peers atomically (0600); a failure is logged, once."""
        path = self._peers_file()
        if not self._guard["peers"] or path is None:
            return
        try:
            path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".peers-")
            with os.fdopen(fd, "w") as f:
                f.write(self._memory.dumps())
            os.replace(tmp, path)
        except OSError as exc:
            if not getattr(self, "_save_warned", False):
                self._logSys.warning("subnet-escalate: cannot keep peers in %s: %s", path, exc)
                self._save_warned = True

    # -- bans --
    def ban(self, aInfo):
        ip, data, restored = aInfo["ip"], aInfo["F-*"] or {}, bool(aInfo["restored"])
        now = MyTime.time()
        bantime = aInfo["bantime"]
        start = float(aInfo["time"] or now)
        end = ban_end(start, bantime)
        until = float("inf") if end is None else end
        with self._lock:
            last = self._last_escalation(ipaddress.ip_address(str(ip))) if restored and ip.isSingle else float("-inf")
            _, pending = on_ban(self.escalator, str(ip), data, restored, start, until, now, last)
            while pending:
                pending += self._escalate(pending.pop(0), now)

    def unban(self, aInfo):
        ip = aInfo["ip"]
        if not ip.isSingle:
            with self._lock:
                self.escalator.forget_ban(ipaddress.ip_network(str(ip), strict=False))

    def _escalate(self, cand, now: float) -> list:
        prior = self._history(cand.net)
        seconds = self.schedule.ban_time(prior, cand.evidence, self._rng.random())
        ticket = FailTicket(str(cand.net), now)
        ticket.setBanTime(seconds)
        ticket.setBanCount(prior + 1, always=True)
        ticket.setData("escalation", cand.reason, "evidence", cand.evidence.label)
        self._jail.putFailTicket(ticket)
        self._escalated += 1
        self._logSys.notice("[%s] Escalate %s for %ss (%s; escalation #%d; %s evidence)", self._jail.name, cand.net,
                            seconds, cand.reason, prior + 1, cand.evidence.label)
        return self.escalator.mark_banned(cand.net, now + seconds, now, cand.evidence)

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
    def dependencies(self) -> str:
        """What is never banned here, and where each entry came from."""
        with self._lock:
            rows = [str(d) for d in self._deps]
            problems = list(self._problems)
        return "\n".join(rows + [f"problem: {p}" for p in problems]) or "none"

    @property
    def status(self) -> str:
        now = MyTime.time()
        with self._lock:
            esc = self.escalator
            recent, held = esc.bounded_state(now)
            state = (f"held: {esc.held}" if esc.held else
                     f"paused: {esc.paused}" if esc.paused else "running")
            return (f"escalated {self._escalated}, active {len(esc.active(now))}, "
                    f"counting {esc.tracked()} members, ladder {esc.ladder.rungs}, "
                    f"schedule {list(self.schedule.steps)}, forged schedule {list(self.schedule.forged)}, "
                    f"unproven {recent}/{esc.breaker.maxrate} in {esc.breaker.period}s holding {held:g}/{esc.breaker.maxheld}, "
                    f"{len(self._deps)} dependencies guarded, {state}")


def _when(epoch: float) -> str:
    if epoch == float("inf") or epoch < 0 or epoch >= Ticket.MAX_TIME:
        return "never"      # a permanent ban
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
