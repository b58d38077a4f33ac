"""Subnet escalation and unban schedules: which prefix to ban, and for how long.

How it works
------------
`Escalator` is fed the host bans a jail makes (`HostBan`: address, time, protocol of the
evidence) and answers with `Candidate` prefixes to ban. A `Ladder` (data) says how:
rung 1 counts distinct *hosts* inside each /24 (/64 for IPv6); when `count` of them were
banned within `window`, the /24 is a candidate. Rung 2 counts distinct *escalated /24s*
inside each /16 (/48), and so on. Every count forgets what left the window, so memory
follows the window, not the length of the attack.

Before a prefix is proposed, `Safety` checks it: never wider than `maxprefix`, never
overlapping a protected network (the jail's ignoreip, the machine's own addresses, the
admin's `protect` list) or a bogon range. An unsafe prefix shrinks to the widest
sub-prefix around the newest offender that is safe and still holds enough evidence, or
is dropped.

`Schedule.ban_time()` gives a prefix's ban length from how often it was escalated
before (the history lives in fail2ban's database; the adapter looks it up): the steps
"1h 6h 1d 1w" repeat the last, are capped by `maxtime`, get up to `rndtime` of jitter,
and evidence that is trivial to forge always gets the first (shortest) step.

The caller tells the escalator what it banned (`mark_banned`): that suppresses repeats
while the ban lasts, uses up the evidence (escalating the same prefix again takes new
hosts) and feeds the next rung (not when its evidence was forgeable and ignored). Time is always passed in; nothing
here does I/O.
"""
from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Optional

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Protocols (the filter's F-PROTO capture) whose source address proves nothing: no
# handshake binds the sender to it. TCP is the only one that does not count as forged.
UNFORGEABLE_PROTOCOLS = frozenset({"TCP"})
# Directions (the filter's F-DIR: netfilter's IN/OUT, ipfw's in/out) whose remote this
# host chose itself: on a packet it sent, the remote is the destination, whatever the
# protocol, and nobody else can put it there.
UNFORGEABLE_DIRECTIONS = frozenset({"out"})

# Address space that is never a real remote on the Internet (RFC 6890 and friends).
# A prefix overlapping any of these is never escalated. Tests on documentation ranges
# pass a narrower list.
DEFAULT_BOGONS = (
    "0.0.0.0/8",        # "this network" (RFC 791)
    "10.0.0.0/8",       # private (RFC 1918)
    "100.64.0.0/10",    # shared CGN space (RFC 6598)
    "127.0.0.0/8",      # loopback (RFC 1122)
    "169.254.0.0/16",   # link local (RFC 3927)
    "172.16.0.0/12",    # private (RFC 1918)
    "192.0.0.0/24",     # IETF protocol assignments (RFC 6890)
    "192.0.2.0/24",     # TEST-NET-1 (RFC 5737)
    "192.168.0.0/16",   # private (RFC 1918)
    "198.18.0.0/15",    # benchmarking (RFC 2544)
    "198.51.100.0/24",  # TEST-NET-2 (RFC 5737)
    "203.0.113.0/24",   # TEST-NET-3 (RFC 5737)
    "224.0.0.0/4",      # multicast (RFC 5771)
    "240.0.0.0/4",      # reserved, and limited broadcast (RFC 1112, RFC 919)
    "::/8",             # loopback, unspecified, IPv4-mapped (RFC 4291)
    "100::/64",         # discard-only (RFC 6666)
    "2001:db8::/32",    # documentation (RFC 3849)
    "fc00::/7",         # unique local (RFC 4193)
    "fe80::/10",        # link local (RFC 4291)
    "ff00::/8",         # multicast (RFC 4291)
)

DEFAULT_LADDER = {4: ((24, 5), (16, 3)), 6: ((64, 5), (48, 3))}
DEFAULT_MAXPREFIX = {4: 16, 6: 32}
HOST_PREFIX = {4: 32, 6: 128}

# The action.d file (and so fail2ban's action name) that runs this core.
ACTION_NAME = "subnet-escalate"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+)([smhdw]?)")


class ConfigError(ValueError):
    """A bad parameter; the message names it."""


def parse_duration(text: str, name: str) -> int:
    """'90', '90s', '15m', '1h', '1d', '1w' -> seconds (positive)."""
    m = _DURATION.fullmatch(str(text).strip())
    if not m or int(m.group(1)) <= 0:
        raise ConfigError(f"{name}: {text!r} is not a positive duration like 600, 10m, 1h, 1d, 1w")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_networks(text: str | Iterable[str], name: str) -> tuple[Network, ...]:
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    try:
        return tuple(ipaddress.ip_network(i, strict=False) for i in items)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


# --- Data --------------------------------------------------------------------------

@dataclass(frozen=True)
class HostBan:
    ip: Address
    time: float
    proto: Optional[str] = None        # the filter's F-PROTO; None when unknown
    direction: Optional[str] = None    # the filter's F-DIR; None when unknown

    @property
    def forgeable(self) -> bool:
        return forgeable(self.proto, self.direction)


def forgeable(proto: Optional[str], direction: Optional[str] = None) -> bool:
    """Is evidence captured with this F-PROTO and F-DIR trivial to forge? Unknown (None)
    is not; an outbound packet never is."""
    if direction is not None and direction.lower() in UNFORGEABLE_DIRECTIONS:
        return False
    return proto is not None and proto not in UNFORGEABLE_PROTOCOLS


@dataclass(frozen=True)
class Candidate:
    net: Network
    rung: int                          # 1 = first rung above hosts
    members: int                       # distinct members counted inside, in the window
    forged: bool                       # needs evidence that is trivial to forge
    reason: str


@dataclass(frozen=True)
class Ladder:
    """Per family: rungs of (prefix length, distinct members needed), narrowest first."""
    rungs: dict = field(default_factory=lambda: dict(DEFAULT_LADDER))

    @classmethod
    def parse(cls, v4: str, v6: str) -> "Ladder":
        """'24:5 16:3' -> ((24, 5), (16, 3))."""
        rungs = {}
        for fam, text, name in ((4, v4, "ladder4"), (6, v6, "ladder6")):
            steps = []
            for item in text.split():
                m = re.fullmatch(r"/?(\d+):(\d+)", item)
                if not m:
                    raise ConfigError(f"{name}: {item!r} is not PREFIXLEN:COUNT (e.g. 24:5)")
                plen, count = int(m.group(1)), int(m.group(2))
                if not 0 < plen < HOST_PREFIX[fam] or count < 2:
                    raise ConfigError(f"{name}: {item!r}: prefix length must be 1..{HOST_PREFIX[fam] - 1}, count at least 2")
                if steps and plen >= steps[-1][0]:
                    raise ConfigError(f"{name}: rungs must widen: /{plen} after /{steps[-1][0]}")
                steps.append((plen, count))
            rungs[fam] = tuple(steps)
        return cls(rungs)


@dataclass(frozen=True)
class Safety:
    protected: tuple = ()              # networks never to cover (ignoreip, own, protect)
    bogons: tuple = tuple(ipaddress.ip_network(n) for n in DEFAULT_BOGONS)
    maxprefix: dict = field(default_factory=lambda: dict(DEFAULT_MAXPREFIX))

    def why_unsafe(self, net: Network) -> Optional[str]:
        if net.prefixlen < self.maxprefix[net.version]:
            return f"wider than maxprefix /{self.maxprefix[net.version]}"
        if (p := first_overlap(net, self.protected)) is not None:
            return f"covers protected {p}"
        if (b := first_overlap(net, self.bogons)) is not None:
            return f"overlaps bogon {b}"
        return None


def first_overlap(net: Network, others: Iterable[Network]) -> Optional[Network]:
    """The first of `others` (of net's family) that `net` overlaps, or None."""
    return next((o for o in others if o.version == net.version and net.overlaps(o)), None)


@dataclass(frozen=True)
class Schedule:
    steps: tuple = (3600, 6 * 3600, 86400, 7 * 86400)
    maxtime: int = 7 * 86400
    rndtime: int = 0
    forget: int = 30 * 86400           # history older than this is forgotten

    @classmethod
    def parse(cls, steps: str, maxtime: str | None = None, rndtime: str | None = None,
              forget: str | None = None) -> "Schedule":
        parsed = tuple(parse_duration(s, "schedule") for s in steps.split())
        if not parsed:
            raise ConfigError("schedule: give at least one ban length, e.g. \"1h 6h 1d 1w\"")
        jitter = 0 if rndtime in (None, "", "0") else parse_duration(rndtime, "rndtime")
        cap = parse_duration(maxtime, "maxtime") if maxtime else max(parsed) + jitter
        return cls(parsed, cap, jitter, parse_duration(forget, "forget") if forget else 30 * 86400)

    def ban_time(self, prior: int, forged: bool = False, rnd: float = 0.0) -> int:
        """Seconds for a prefix escalated `prior` times before (within `forget`).
        `rnd` in [0, 1) picks the jitter. Always finite and positive."""
        step = self.steps[0] if forged else self.steps[min(max(prior, 0), len(self.steps) - 1)]
        return max(1, min(step + int(rnd * self.rndtime), self.maxtime))


# --- The escalator -------------------------------------------------------------------

class _Window:
    """Distinct members per prefix, seen within `window` seconds.

    `seen` keeps (prefix, member) pairs oldest first, so forgetting is popping from the
    front; `by_prefix` indexes the same pairs by prefix, so counting and escalating never
    walk the whole window."""
    __slots__ = ("seen", "by_prefix", "forged")

    def __init__(self):
        self.seen: OrderedDict = OrderedDict()    # (prefix, member) -> time
        self.by_prefix: dict = {}                 # prefix -> {member: forged}
        self.forged: dict = {}                    # prefix -> members with forgeable evidence

    def add(self, prefix, member, when: float, forged: bool):
        key = (prefix, member)
        members = self.by_prefix.setdefault(prefix, {})
        if self.seen.pop(key, None) is not None and members[member]:
            self.forged[prefix] -= 1
        members[member] = forged
        if forged:
            self.forged[prefix] = self.forged.get(prefix, 0) + 1
        self.seen[key] = when

    def count(self, prefix) -> int:
        return len(self.by_prefix.get(prefix, ()))

    def _remove(self, prefix, member):
        members = self.by_prefix[prefix]
        if members.pop(member):
            n = self.forged[prefix] - 1
            if n:
                self.forged[prefix] = n
            else:
                del self.forged[prefix]
        if not members:
            del self.by_prefix[prefix]

    def expire(self, before: float):
        seen = self.seen
        while seen:
            key = next(iter(seen))
            if seen[key] >= before:
                break
            del seen[key]
            self._remove(*key)

    def drop(self, prefix):
        """Forget every member of `prefix` (its evidence was used up by a ban)."""
        for member in self.by_prefix.pop(prefix, {}):
            del self.seen[(prefix, member)]
        self.forged.pop(prefix, None)

    def members(self, prefix) -> list:
        """[(member, forged)] counted for `prefix`."""
        return list(self.by_prefix.get(prefix, {}).items())

    def __len__(self):
        return len(self.seen)


class Escalator:
    """Counts bans per prefix and proposes escalations (see the module's docstring)."""

    def __init__(self, ladder: Ladder = Ladder(), window: float = 3600, safety: Safety = Safety(),
                 spoofable: str = "ignore"):
        if spoofable not in ("ignore", "count"):
            raise ConfigError(f"spoofable: {spoofable!r} must be 'ignore' or 'count'")
        if window <= 0:
            raise ConfigError("window: must be positive")
        for fam, rungs in ladder.rungs.items():
            for plen, _ in rungs:
                if plen < safety.maxprefix[fam]:
                    raise ConfigError(f"ladder{fam}: /{plen} is wider than maxprefix /{safety.maxprefix[fam]}")
        self.ladder, self.window, self.safety, self.spoofable = ladder, window, safety, spoofable
        # one window per (family, rung index); rung 0 counts hosts
        self._windows = {(fam, i): _Window() for fam, rungs in ladder.rungs.items() for i in range(len(rungs))}
        self._banned: dict = {}            # escalated network -> until (epoch seconds)
        self._now = 0.0

    # -- feeding --
    def observe(self, ban: HostBan) -> list[Candidate]:
        """A host ban happened. Returns prefixes that should now be banned."""
        self._advance(ban.time)
        if ban.forgeable and self.spoofable == "ignore":
            return []
        fam = ban.ip.version
        if not self.ladder.rungs.get(fam):
            return []
        host = ipaddress.ip_network(ban.ip)
        return self._count(fam, 0, host, ban.time, ban.forgeable, around=ban.ip)

    def mark_banned(self, net: Network, until: float, now: float, forged: bool = False) -> list[Candidate]:
        """The caller banned `net` until `until`. Suppresses repeats while it lasts and
        counts it on the next rung; returns the wider prefixes that now qualify."""
        self._advance(now)
        self._banned[net] = until
        if forged and self.spoofable == "ignore":
            return []              # remembered, but forgeable evidence climbs no rung
        fam = net.version
        rungs = self.ladder.rungs.get(fam, ())
        for i, (plen, _) in enumerate(rungs):
            if plen == net.prefixlen:
                # the evidence is used up: the next escalation of this prefix needs new hosts
                self._windows[(fam, i)].drop(int(net.network_address) >> (HOST_PREFIX[fam] - plen))
                if i + 1 < len(rungs):
                    return self._count(fam, i + 1, net, now, forged, around=net.network_address)
        return []

    def carry_over(self, old: "Escalator"):
        """Take `old`'s bans, and its counts if the ladder and window are the same
        (a reload with new parameters)."""
        if (self.ladder, self.window) == (old.ladder, old.window):
            self._windows = old._windows
        self._banned = old._banned
        self._now = old._now

    def forget_ban(self, net: Network):
        """fail2ban lifted the ban of `net` (schedule ended, or an admin unbanned it)."""
        self._banned.pop(net, None)

    # -- reading --
    def active(self, now: float) -> dict:
        return {n: u for n, u in self._banned.items() if u > now}

    def counting(self) -> dict:
        """{prefix: distinct members counted in the window} for every rung."""
        out = {}
        for (fam, i), win in self._windows.items():
            plen = self.ladder.rungs[fam][i][0]
            for prefix, members in win.by_prefix.items():
                out[prefix_network(fam, prefix, plen)] = len(members)
        return out

    def tracked(self) -> int:
        """How many (prefix, member) pairs are held: the memory the windows use."""
        return sum(len(w) for w in self._windows.values())

    # -- inside --
    def _advance(self, now: float):
        if now > self._now:
            self._now = now
        before = self._now - self.window
        for win in self._windows.values():
            win.expire(before)
        if len(self._banned) > 1024:
            self._banned = {n: u for n, u in self._banned.items() if u > self._now}

    def _count(self, fam: int, i: int, member: Network, when: float, forged: bool,
               around: Address) -> list[Candidate]:
        plen, need = self.ladder.rungs[fam][i]
        prefix = int(member.network_address) >> (HOST_PREFIX[fam] - plen)
        win = self._windows[(fam, i)]
        win.add(prefix, int(member.network_address), when, forged)
        if win.count(prefix) < need:
            return []
        net = prefix_network(fam, prefix, plen)
        if self._banned.get(net, 0) > self._now:
            return []
        counted = [(prefix_network(fam, m, member.prefixlen, exact=True), f) for m, f in win.members(prefix)]
        target = self._safe_prefix(net, around, [m for m, _ in counted], need)
        if target is None:
            return []
        if target != net and self._banned.get(target, 0) > self._now:
            return []
        inside = [(m, f) for m, f in counted if m.subnet_of(target)]
        # forged: unforgeable evidence alone would not have reached the threshold
        was_forged = sum(1 for _, f in inside if not f) < need
        what = "hosts" if i == 0 else f"/{member.prefixlen} prefixes"
        reason = (f"{len(inside)} {what} banned within {int(self.window)}s"
                  + ("" if target == net else f" (narrowed from {net}: {self.safety.why_unsafe(net)})"))
        return [Candidate(target, i + 1, len(inside), was_forged, reason)]

    def _safe_prefix(self, net: Network, around: Address, members: list, need: int) -> Optional[Network]:
        """`net` if safe; else the widest safe sub-prefix containing `around` that still
        holds `need` members; else None."""
        if self.safety.why_unsafe(net) is None:
            return net
        host = HOST_PREFIX[net.version]
        for plen in range(net.prefixlen + 1, host):
            sub = ipaddress.ip_network((int(around) >> (host - plen) << (host - plen), plen))
            if sum(1 for m in members if m.subnet_of(sub)) < need:
                return None
            if self.safety.why_unsafe(sub) is None:
                return sub
        return None


def prefix_network(fam: int, value: int, plen: int, exact: bool = False) -> Network:
    """The /plen holding `value`: a prefix value (its top plen bits), or with `exact`
    an address that already is the network address."""
    host = HOST_PREFIX[fam]
    addr = value if exact else value << (host - plen)
    return ipaddress.ip_network((addr, plen)) if fam == 4 else ipaddress.IPv6Network((addr, plen))
