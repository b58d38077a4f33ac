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
overlapping a protected network (the jail's ignoreip, this server's dependencies: its
addresses, gateways, resolvers, NTP servers, peers, see f2b_ext/core/dependencies.py; the
admin's `protect` list) or a bogon range. An unsafe prefix shrinks to the widest
sub-prefix around the newest offender that is safe and still holds enough evidence, or
is dropped. Protected networks sit in a `NetworkIndex`, so thousands of peers cost a
binary search, not a scan.

Evidence has a kind (f2b_ext/core/evidence.py: proven, outbound, forgeable; an inbound LOG
line is forgeable whatever its protocol). Each member counted remembers its kind; a
candidate's evidence is the weakest kind its threshold needed. Forgeable evidence counts
unless `spoofable=ignore`; only kinds at least as strong as `widen` (default: proven)
climb the wide rungs; escalations on evidence whose rule says `breaker` pass the
`Breaker` (at most `maxrate` per period, at most `maxheld` first-rung prefixes' worth of
address space held at once): past a bound, escalation pauses and `paused` says why.
`hold(reason)` pauses everything (the adapter fails closed when it cannot tell what the
server depends on).

`Schedule.ban_time()` gives a prefix's ban length from how often it was escalated
before (the history lives in fail2ban's database; the adapter looks it up): the steps
"1h 6h 1d 1w" repeat the last, are capped by `maxtime`, get up to `rndtime` of jitter;
evidence whose rule says so gets the `forged` steps instead (default one short step that
never grows).

The caller tells the escalator what it banned (`mark_banned`): that suppresses repeats
while the ban lasts, uses up the evidence (escalating the same prefix again takes new
hosts) and feeds the next rung (only evidence allowed to climb). Time is always passed
in; nothing here does I/O.
"""
from __future__ import annotations

import ipaddress
import re
import heapq
import itertools
from bisect import bisect_right
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Iterable, Optional

from f2b_ext.errors import F2bExtError
from f2b_ext.core.evidence import RULES, Evidence, classify, weakest_needed
from f2b_ext.core.evidence import parse as parse_evidence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

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

DEFAULT_BOGON_NETWORKS = tuple(ipaddress.ip_network(n) for n in DEFAULT_BOGONS)

DEFAULT_LADDER = {4: ((24, 5), (16, 3)), 6: ((64, 5), (48, 3))}
DEFAULT_MAXPREFIX = {4: 16, 6: 32}
HOST_PREFIX = {4: 32, 6: 128}

# The action.d file (and so fail2ban's action name) that runs this core.
ACTION_NAME = "subnet-escalate"

# Time units, as fail2ban's durations write them (600, 10m, 1h, 1d, 1w) and, by name, as
# firewall rate limits do (3/hour, 10/minute).
MINUTE, HOUR, DAY, WEEK = 60, 3600, 86400, 7 * 86400
TIME_UNITS = {"s": 1, "m": MINUTE, "h": HOUR, "d": DAY, "w": WEEK}
TIME_UNIT_NAMES = {"second": 1, "sec": 1, "minute": MINUTE, "min": MINUTE, "hour": HOUR, "day": DAY, "week": WEEK}
_DURATION = re.compile(r"(\d+)([smhdw]?)")

# subnet-escalate's default unban schedule, as its parameters write them.
DEFAULT_SCHEDULE, DEFAULT_FORGED_SCHEDULE, DEFAULT_FORGET = "1h 6h 1d 1w", "30m", "30d"


def ban_end(start: float, bantime: Optional[float]) -> Optional[float]:
    """When a fail2ban ban ends; None for a permanent one (fail2ban's bantime -1, any
    negative, or none)."""
    return None if bantime is None or bantime < 0 else start + bantime


def ban_left(start: float, bantime: Optional[float], now: float) -> Optional[float]:
    """Seconds a ban has left at `now` (None: permanent)."""
    end = ban_end(start, bantime)
    return None if end is None else end - now


class ConfigError(F2bExtError, ValueError):
    """A bad parameter; the message names it."""


def parse_duration(text: str, name: str) -> int:
    """'90', '90s', '15m', '1h', '1d', '1w' -> seconds (positive)."""
    m = _DURATION.fullmatch(str(text).strip())
    if not m or int(m.group(1)) <= 0:
        raise ConfigError(f"{name}: {text!r} is not a positive duration like 600, 10m, 1h, 1d, 1w")
    return int(m.group(1)) * TIME_UNITS[m.group(2) or "s"]


def parse_networks(text: str | Iterable[str], name: str) -> tuple[Network, ...]:
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    try:
        return tuple(ipaddress.ip_network(i, strict=False) for i in items)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def parse_bogons(text: str | Iterable[str]) -> tuple[Network, ...]:
    """subnet-escalate's `bogons` parameter: "default" (DEFAULT_BOGONS), "none" (or
    empty), or CIDRs (a string, or any iterable of them)."""
    if not isinstance(text, str):
        return parse_networks(list(text), "bogons")
    text = text.strip()
    if text == "default":
        return DEFAULT_BOGON_NETWORKS
    return () if text in ("", "none") else parse_networks(text, "bogons")


# --- Data --------------------------------------------------------------------------

@dataclass(frozen=True)
class HostBan:
    ip: Address
    time: float
    proto: Optional[str] = None        # the filter's F-PROTO; None when unknown
    direction: Optional[str] = None    # the filter's F-DIR; None when unknown

    @property
    def evidence(self) -> Evidence:
        return classify(self.proto, self.direction)


@dataclass(frozen=True)
class Candidate:
    net: Network
    rung: int                          # 1 = first rung above hosts
    members: int                       # distinct members counted inside, in the window
    evidence: Evidence                 # the weakest kind the threshold needed
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


class NetworkIndex:
    """Networks, for "which one does this prefix overlap?" in O(log n): per family the
    intervals sorted by start, with the running maximum of their ends."""
    __slots__ = ("nets", "_starts", "_reach")

    def __init__(self, nets: Iterable[Network] = ()):
        self.nets = tuple(nets)
        self._starts: dict = {4: [], 6: []}
        self._reach: dict = {4: [], 6: []}           # (max end so far, its network)
        for n in sorted(self.nets, key=lambda n: (n.version, int(n.network_address))):
            reach = self._reach[n.version]
            end = int(n.broadcast_address)
            self._starts[n.version].append(int(n.network_address))
            reach.append(max(reach[-1], (end, n), key=lambda r: r[0]) if reach else (end, n))

    def overlap(self, net: Network) -> Optional[Network]:
        """A network of the index that `net` overlaps, or None."""
        return self.overlap_range(net.version, int(net.network_address), int(net.broadcast_address))

    def overlap_range(self, version: int, first: int, last: int) -> Optional[Network]:
        """A network of the index overlapping the addresses first..last, or None."""
        i = bisect_right(self._starts[version], last) - 1
        if i < 0:
            return None
        end, other = self._reach[version][i]
        return other if end >= first else None

    def covering(self, version: int, first: int, last: int) -> Optional[Network]:
        """A network of the index holding all of first..last, or None."""
        i = bisect_right(self._starts[version], first) - 1     # networks starting at or before first
        if i < 0:
            return None
        end, other = self._reach[version][i]
        return other if end >= last else None

    def __len__(self):
        return len(self.nets)

    def __iter__(self):
        return iter(self.nets)


@dataclass(frozen=True)
class Safety:
    protected: tuple = ()              # networks never to cover (ignoreip, dependencies, protect)
    bogons: tuple = DEFAULT_BOGON_NETWORKS
    maxprefix: dict = field(default_factory=lambda: dict(DEFAULT_MAXPREFIX))
    index: NetworkIndex = field(init=False, repr=False, compare=False)
    bogon_index: NetworkIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "index", NetworkIndex(self.protected))
        object.__setattr__(self, "bogon_index", NetworkIndex(self.bogons))

    def why_unsafe(self, net: Network) -> Optional[str]:
        return self.why_unsafe_range(net.version, net.prefixlen, int(net.network_address))

    def why_unsafe_range(self, version: int, plen: int, first: int) -> Optional[str]:
        """why_unsafe() of the /plen starting at address `first` (ints: no objects made)."""
        if plen < self.maxprefix[version]:
            return f"wider than maxprefix /{self.maxprefix[version]}"
        last = first + (1 << (HOST_PREFIX[version] - plen)) - 1
        if (p := self.index.overlap_range(version, first, last)) is not None:
            return f"covers protected {p}"
        if (b := self.bogon_index.overlap_range(version, first, last)) is not None:
            return f"overlaps bogon {b}"
        return None


def first_overlap(net: Network, others: Iterable[Network]) -> Optional[Network]:
    """The first of `others` (of net's family) that `net` overlaps, or None."""
    return next((o for o in others if o.version == net.version and net.overlaps(o)), None)


def _steps(text: str, name: str) -> tuple:
    parsed = tuple(parse_duration(s, name) for s in text.split())
    if not parsed:
        raise ConfigError(f"{name}: give at least one ban length, e.g. \"1h 6h 1d 1w\"")
    return parsed


@dataclass(frozen=True)
class Schedule:
    steps: tuple = field(default_factory=lambda: _steps(DEFAULT_SCHEDULE, "schedule"))
    maxtime: int = max(_steps(DEFAULT_SCHEDULE, "schedule"))
    rndtime: int = 0
    forget: int = parse_duration(DEFAULT_FORGET, "forget")    # history older than this is forgotten
    # for evidence whose rule says "forged": short, flat
    forged: tuple = field(default_factory=lambda: _steps(DEFAULT_FORGED_SCHEDULE, "forgedschedule"))

    @classmethod
    def parse(cls, steps: str, maxtime: str | None = None, rndtime: str | None = None,
              forget: str | None = None, forged: str | None = None) -> "Schedule":
        parsed = _steps(steps, "schedule")
        flat = _steps(forged or DEFAULT_FORGED_SCHEDULE, "forgedschedule")
        jitter = 0 if rndtime in (None, "", "0") else parse_duration(rndtime, "rndtime")
        cap = parse_duration(maxtime, "maxtime") if maxtime else max(parsed + flat) + jitter
        return cls(parsed, cap, jitter, parse_duration(forget or DEFAULT_FORGET, "forget"), flat)

    def ban_time(self, prior: int, evidence: Evidence = Evidence.PROVEN, rnd: float = 0.0) -> int:
        """Seconds for a prefix escalated `prior` times before (within `forget`) on this
        kind of evidence. `rnd` in [0, 1) picks the jitter. Always finite and positive."""
        steps = self.forged if RULES[evidence].schedule == "forged" else self.steps
        step = steps[min(max(prior, 0), len(steps) - 1)]
        return max(1, min(step + int(rnd * self.rndtime), self.maxtime))


@dataclass(frozen=True)
class Breaker:
    """Bounds on escalations whose evidence rule says `breaker`: at most `maxrate` within
    `period` seconds, and at most `maxheld` first-rung prefixes (/24, /64) worth of
    address space banned at once. 0 turns a bound off."""
    maxrate: int = 10
    period: int = 3600
    maxheld: int = 64

    @classmethod
    def parse(cls, rate: str, held: str) -> "Breaker":
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\S+)\s*", str(rate))
        if not m:
            raise ConfigError(f"maxrate: {rate!r} is not COUNT/DURATION like 10/1h")
        try:
            maxheld = int(held)
        except ValueError:
            raise ConfigError(f"maxheld: {held!r} is not a number") from None
        if maxheld < 0:
            raise ConfigError(f"maxheld: {maxheld} is negative")
        return cls(int(m.group(1)), parse_duration(m.group(2), "maxrate"), maxheld)

    def why_tripped(self, recent: int, held: float, adding: float) -> Optional[str]:
        """Why one more escalation of `adding` units must wait, or None."""
        if self.maxrate and recent >= self.maxrate:
            return f"{recent} escalations on unproven evidence within {self.period}s (maxrate {self.maxrate}/{self.period}s)"
        if self.maxheld and held + adding > self.maxheld:
            return (f"{held:g} /24 (/64) prefixes' worth held on unproven evidence, "
                    f"{adding:g} more would pass maxheld {self.maxheld}")
        return None


# --- The escalator -------------------------------------------------------------------

class _Window:
    """Distinct members per prefix, seen within `window` seconds, with the kind of
    evidence each one rests on.

    `seen` keeps (prefix, member) pairs oldest first, so forgetting is popping from the
    front; `by_prefix` indexes the same pairs by prefix, so counting and escalating never
    walk the whole window."""
    __slots__ = ("seen", "by_prefix")

    def __init__(self):
        self.seen: OrderedDict = OrderedDict()    # (prefix, member) -> time
        self.by_prefix: dict = {}                 # prefix -> {member: Evidence}

    def add(self, prefix, member, when: float, evidence: Evidence):
        self.seen.pop((prefix, member), None)
        self.by_prefix.setdefault(prefix, {})[member] = evidence
        self.seen[(prefix, member)] = when

    def count(self, prefix) -> int:
        return len(self.by_prefix.get(prefix, ()))

    def expire(self, before: float):
        seen = self.seen
        while seen:
            key = next(iter(seen))
            if seen[key] >= before:
                break
            del seen[key]
            prefix, member = key
            members = self.by_prefix[prefix]
            del members[member]
            if not members:
                del self.by_prefix[prefix]

    def drop(self, prefix):
        """Forget every member of `prefix` (its evidence was used up by a ban)."""
        for member in self.by_prefix.pop(prefix, {}):
            del self.seen[(prefix, member)]

    def members(self, prefix) -> list:
        """[(member, evidence)] counted for `prefix`."""
        return list(self.by_prefix.get(prefix, {}).items())

    def __len__(self):
        return len(self.seen)


def _parse_widen(text) -> Evidence:
    if isinstance(text, Evidence):
        return text
    try:
        return parse_evidence(text)
    except ValueError as exc:
        raise ConfigError(f"widen: {exc}") from None


# the weakest kind that climbs the wide rungs unless the admin opts in (evidence.RULES)
DEFAULT_WIDEN = min(kind for kind, rule in RULES.items() if rule.climbs_wide)


class Escalator:
    """Counts bans per prefix and proposes escalations (see the module's docstring)."""

    def __init__(self, ladder: Ladder = Ladder(), window: float = 3600, safety: Safety = Safety(),
                 spoofable: str = "count", widen: Evidence | str = DEFAULT_WIDEN,
                 breaker: Breaker = Breaker()):
        if spoofable not in ("ignore", "count"):
            raise ConfigError(f"spoofable: {spoofable!r} must be 'ignore' or 'count'")
        if window <= 0:
            raise ConfigError("window: must be positive")
        for fam, rungs in ladder.rungs.items():
            for plen, _ in rungs:
                if plen < safety.maxprefix[fam]:
                    raise ConfigError(f"ladder{fam}: /{plen} is wider than maxprefix /{safety.maxprefix[fam]}")
        self.ladder, self.window, self.safety, self.spoofable = ladder, window, safety, spoofable
        self.widen, self.breaker = _parse_widen(widen), breaker
        # one window per (family, rung index); rung 0 counts hosts
        self._windows = {(fam, i): _Window() for fam, rungs in ladder.rungs.items() for i in range(len(rungs))}
        self._banned: dict = {}            # escalated network -> (until, Evidence)
        self._held: list = []              # heap of (until, token, network) the breaker bounds
        self._held_token: dict = {}        # network -> token of its live heap entry
        self._held_units = 0.0             # units of the live entries (kept as they come and go)
        self._tokens = itertools.count()
        self._bounded: deque = deque()     # times of escalations the breaker bounds
        self._now = 0.0
        self.held: Optional[str] = None    # hold(): why nothing is proposed
        self.paused: Optional[str] = None  # the breaker's last refusal, while it lasts

    # -- feeding --
    def observe(self, ban: HostBan) -> list[Candidate]:
        """A host ban happened. Returns prefixes that should now be banned."""
        self._advance(ban.time)
        kind = ban.evidence
        if not self._counts(kind, rung=0):
            return []
        fam = ban.ip.version
        if not self.ladder.rungs.get(fam):
            return []
        host = ipaddress.ip_network(ban.ip)
        return self._count(fam, 0, host, ban.time, kind, around=ban.ip)

    def mark_banned(self, net: Network, until: float, now: float,
                    evidence: Evidence = Evidence.PROVEN, restored: bool = False) -> list[Candidate]:
        """The caller banned `net` until `until` on `evidence` (`restored`: a ban made
        before a restart, already counted then). Suppresses repeats while it lasts,
        counts it on the next rung if that evidence may climb there; returns the wider
        prefixes that now qualify."""
        self._advance(now)
        if RULES[evidence].breaker and not restored and self._banned.get(net, (0,))[0] <= now:
            self._bounded.append(now)
        self._release(net)
        self._banned[net] = (until, evidence)
        if RULES[evidence].breaker and until > now:
            token = next(self._tokens)
            self._held_token[net] = token
            self._held_units += self._units(net)
            heapq.heappush(self._held, (until, token, net))
        fam = net.version
        rungs = self.ladder.rungs.get(fam, ())
        for i, (plen, _) in enumerate(rungs):
            if plen == net.prefixlen:
                # the evidence is used up: the next escalation of this prefix needs new hosts
                self._windows[(fam, i)].drop(int(net.network_address) >> (HOST_PREFIX[fam] - plen))
                if i + 1 < len(rungs) and self._counts(evidence, rung=i + 1):
                    return self._count(fam, i + 1, net, now, evidence, around=net.network_address)
        return []

    def carry_over(self, old: "Escalator"):
        """Take `old`'s bans and breaker, and its counts if the ladder and window are the
        same (a reload with new parameters)."""
        if (self.ladder, self.window) == (old.ladder, old.window):
            self._windows = old._windows
        self._banned, self._bounded = old._banned, old._bounded
        self._held, self._held_token, self._held_units = old._held, old._held_token, old._held_units
        self._tokens = old._tokens
        self._now = old._now

    def forget_ban(self, net: Network):
        """fail2ban lifted the ban of `net` (schedule ended, or an admin unbanned it)."""
        self._release(net)
        self._banned.pop(net, None)

    def hold(self, reason: Optional[str]):
        """Propose nothing while `reason` is set (None releases)."""
        self.held = reason

    def set_safety(self, safety: Safety):
        """New protected networks (dependencies change); counts stay."""
        self.safety = safety

    # -- reading --
    def active(self, now: float) -> dict:
        return {n: u for n, (u, _) in self._banned.items() if u > now}

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

    def bounded_state(self, now: float) -> tuple[int, float]:
        """(escalations the breaker bounds within its period, units they hold now)."""
        self._advance(now)
        return len(self._bounded), self._held_units

    # -- inside --
    def _counts(self, evidence: Evidence, rung: int) -> bool:
        if evidence == Evidence.FORGEABLE and self.spoofable == "ignore":
            return False
        return rung == 0 or evidence >= self.widen

    def _advance(self, now: float):
        if now > self._now:
            self._now = now
        before = self._now - self.window
        for win in self._windows.values():
            win.expire(before)
        while self._bounded and self._bounded[0] <= self._now - self.breaker.period:
            self._bounded.popleft()
        while self._held and self._held[0][0] <= self._now:
            _, token, net = heapq.heappop(self._held)
            if self._held_token.get(net) == token:       # ended, and not released before
                del self._held_token[net]
                self._held_units -= self._units(net)
        if len(self._banned) > 1024:
            self._banned = {n: b for n, b in self._banned.items() if b[0] > self._now}

    def _units(self, net: Network) -> float:
        rungs = self.ladder.rungs.get(net.version)
        first = rungs[0][0] if rungs else HOST_PREFIX[net.version]
        return 2.0 ** (first - net.prefixlen)

    def _release(self, net: Network):
        """`net` stops counting as held before its end (lifted, or banned anew); its
        heap entry is left to lapse."""
        if self._held_token.pop(net, None) is not None:
            self._held_units -= self._units(net)

    def _count(self, fam: int, i: int, member: Network, when: float, evidence: Evidence,
               around: Address) -> list[Candidate]:
        plen, need = self.ladder.rungs[fam][i]
        prefix = int(member.network_address) >> (HOST_PREFIX[fam] - plen)
        win = self._windows[(fam, i)]
        win.add(prefix, int(member.network_address), when, evidence)
        if win.count(prefix) < need or self.held:
            return []
        net = prefix_network(fam, prefix, plen)
        if self._banned.get(net, (0,))[0] > self._now:
            return []
        # members as plain ints, each at member.prefixlen: networks are made only for the
        # answer, so a saturated /24 the breaker holds back costs a pass over ints per ban
        counted = win.by_prefix[prefix]                 # {member address: Evidence}
        target = self._safe_prefix(net, around, counted, member.prefixlen, need)
        if target is None:
            return []
        if target == net:
            inside = list(counted.values())
        else:
            if self._banned.get(target, (0,))[0] > self._now:
                return []
            shift = HOST_PREFIX[fam] - target.prefixlen
            top = int(target.network_address) >> shift
            inside = [ev for m, ev in counted.items() if m >> shift == top]
        kind = weakest_needed(inside, need)
        if RULES[kind].breaker:
            why = self.breaker.why_tripped(len(self._bounded), self._held_units, self._units(target))
            if why:
                self.paused = f"{target} not escalated: {why}"
                return []
        self.paused = None
        what = "hosts" if i == 0 else f"/{member.prefixlen} prefixes"
        reason = (f"{len(inside)} {what} banned within {int(self.window)}s"
                  + ("" if target == net else f" (narrowed from {net}: {self.safety.why_unsafe(net)})"))
        return [Candidate(target, i + 1, len(inside), kind, reason)]

    def _safe_prefix(self, net: Network, around: Address, members: Iterable[int], member_plen: int,
                     need: int) -> Optional[Network]:
        """`net` if safe; else the widest safe sub-prefix containing `around` that still
        holds `need` members (network addresses of /member_plen); else None.
        O(members + prefix length): each member is inside the sub-prefixes around
        `around` up to the bits they share."""
        if self.safety.why_unsafe(net) is None:
            return net
        first, last = int(net.network_address), int(net.broadcast_address)
        if any(i.covering(net.version, first, last) for i in (self.safety.index, self.safety.bogon_index)):
            return None                      # a bogon or protected network holds it all: no sub-prefix is safe
        host = HOST_PREFIX[net.version]
        shared = [0] * (host + 1)            # shared[k]: members inside exactly up to /k
        a = int(around)
        for m in members:
            shared[min(host - (m ^ a).bit_length(), member_plen)] += 1
        inside = sum(shared[net.prefixlen + 1:])
        for plen in range(net.prefixlen + 1, host):
            if inside < need:
                return None
            first = a >> (host - plen) << (host - plen)
            if self.safety.why_unsafe_range(net.version, plen, first) is None:
                return prefix_network(net.version, first, plen, exact=True)
            inside -= shared[plen]
        return None


def prefix_network(fam: int, value: int, plen: int, exact: bool = False) -> Network:
    """The /plen holding `value`: a prefix value (its top plen bits), or with `exact`
    an address that already is the network address."""
    host = HOST_PREFIX[fam]
    addr = value if exact else value << (host - plen)
    return ipaddress.ip_network((addr, plen)) if fam == 4 else ipaddress.IPv6Network((addr, plen))


# --- What reaches a ban action ---------------------------------------------------------

# What a ban reaching `ban()` is, from (single address?, F-* data, restored?), and what
# the escalator makes of it: "observe" (new evidence on the first rung), "mark" (remember
# a prefix; its evidence climbs if it may), "remember" (remember only, nothing new).
#   kind             single  data has                restored  -> escalator
BAN_KINDS = (
    ("host",          True,   None,                   None,       "observe"),
    ("ours-restored", False,  "escalation",           True,       "remember"),
    ("ours",          False,  "escalation",           False,      "remember"),
    ("filter-prefix", False,  "proto",                False,      "mark"),
    ("restored",      False,  None,                   True,       "remember"),
    ("admin-prefix",  False,  None,                   False,      "remember"),
)


def ban_kind(single: bool, data: dict, restored: bool) -> tuple[str, str]:
    """(kind, what the escalator does) for a ban, by the first row of BAN_KINDS that fits."""
    for kind, is_single, needs, was_restored, verb in BAN_KINDS:
        if is_single != single or (needs is not None and needs not in data):
            continue
        if was_restored is not None and was_restored != restored:
            continue
        return kind, verb
    raise AssertionError("BAN_KINDS covers every ban")


def on_ban(escalator: "Escalator", target: str, data: dict, restored: bool, start: float, until: float,
           now: float, last_escalation: float = float("-inf")) -> tuple[str, list[Candidate]]:
    """A ban that reached the action, fed to `escalator` as BAN_KINDS says: (its kind,
    the prefixes to ban now). `target` is the address or prefix fail2ban banned, `data`
    its ticket's F-* data, `start`/`until` its time and end (inf: permanent);
    `last_escalation`, for a restored host, when the first-rung prefix around it was
    last escalated (a host already used up then is not counted again). The caller bans
    each prefix returned (fail2ban's ticket) and tells `mark_banned`, which may return
    more."""
    net = ipaddress.ip_network(target, strict=False)
    kind, verb = ban_kind(net.prefixlen == HOST_PREFIX[net.version], data, restored)
    if verb == "observe":
        if restored and start <= last_escalation:
            return kind, []          # restored after a restart, and already used up by an escalation
        return kind, escalator.observe(HostBan(net.network_address, start, data.get("proto"), data.get("dir")))
    pending = escalator.mark_banned(net, until, now, ticket_evidence(data, Evidence.PROVEN), restored=verb != "mark")
    return kind, pending if verb == "mark" else []      # only a filter's prefix is new evidence


def ticket_evidence(data: dict, default: Evidence) -> Evidence:
    """The evidence a ticket's data records: ours store "evidence" (older versions a
    "forged" flag); a filter's captures classify; otherwise `default`."""
    if "evidence" in data:
        try:
            return parse_evidence(str(data["evidence"]))
        except ValueError:
            return Evidence.FORGEABLE
    if "forged" in data:
        return Evidence.FORGEABLE if data["forged"] else Evidence.PROVEN
    if "proto" in data or "dir" in data:
        return classify(data.get("proto"), data.get("dir"))
    return default
