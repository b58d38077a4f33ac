"""Pure core of the fleet: what servers tell each other about bans, and what a receiver
does with it. No I/O; time is always passed in.

How it works
------------
Each server publishes `Event`s (ban or unban of an address or prefix, with the evidence
kind, protocol, direction, jail, origin server and absolute end time) under its own
subject `f2bx.bans.<server>`. `parse_event()` reads one strictly: exact keys, types,
sizes and ranges; anything else is a `EventError` whose message is the reason.

A receiver runs every event through `Receiver.decide()`: a table of refusal rules
(`RULES`, checked in order, first match wins) and then the length rule: a host ban
reported by one server alone is capped at `single_cap`, forgeable evidence at
`forged_cap`, anything at `max_ban`. `Ledger` remembers which origins reported what until
when, so delivery may be at least once (a repeat is a `duplicate`), an unban only lifts
the reports of the server that sent it, and the kernel ban lasts as long as the longest
report still standing.

Fleet escalation: `FleetEscalator` feeds every accepted host ban (from any server, the
local one included) into escalation.Escalator, which counts *distinct hosts* per prefix
wherever they were seen, and keeps, per prefix, which servers reported them. A candidate
prefix is a fleet candidate only once `min_servers` distinct servers reported hosts
inside it. The decision itself is written once to a key-value bucket with
compare-and-set by the adapter (`next_decision()`: a prefix escalated again after its
previous fleet ban ended gets the next step of an escalation.Schedule, within its
`forget`); every receiver checks a decision against its own view
(`FleetEscalator.supports()`) before applying it, so a server that writes a decision
alone cannot make the fleet ban a prefix.

`RateLimit` is a token bucket per sender; a sender that empties it is quarantined for
`quarantine` seconds, and everything it sends meanwhile is refused.
"""
from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

from f2b_ext.core.escalation import DAY, DEFAULT_BOGON_NETWORKS, HOST_PREFIX, HOUR, WEEK, Candidate, Escalator, HostBan, Ladder, Network, NetworkIndex, Safety, Schedule, first_overlap, parse_bogons, parse_networks
from f2b_ext.errors import F2bExtError
from f2b_ext.core.evidence import parse as parse_evidence
from f2b_ext.core.schedule import duration

SCHEMA = 1
SUBJECT_PREFIX = "f2bx.bans."
STREAM = "F2BX_BANS"
PROTECTED_BUCKET = "f2bx-protected"
DECISIONS_BUCKET = "f2bx-decisions"
MAX_EVENT_BYTES = 1024
MAX_BAN = 366 * DAY              # no event may announce a ban longer than a year
CLOCK_SKEW = 300                 # seconds an event's time may be ahead of ours

KINDS = ("ban", "unban")
EVIDENCE = ("proven", "outbound", "forgeable")      # f2b_ext/core/evidence.py's kinds
DIRECTIONS = ("in", "out")
SERVER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")     # one NATS subject token
JAIL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
PROTO_RE = re.compile(r"[A-Za-z0-9]{1,16}")
ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,96}")
FIELDS = {"v": int, "kind": str, "target": str, "evidence": str, "proto": (str, type(None)),
          "dir": (str, type(None)), "jail": str, "origin": str, "at": (int, float),
          "end": (int, float), "id": str}


class EventError(F2bExtError, ValueError):
    """A malformed or hostile event; the message is the reason it was refused."""


# What `f2b-ext fleet create` makes on the bus: the stream and the two key-value buckets
# (JetStream streams KV_<bucket>), with the settings it gives each. A second create finds
# them and checks these settings; one that differs is an error, never a silent change.
DUPLICATE_WINDOW = 120                   # seconds the stream drops a re-sent event id
SETTING_NAMES = {"subjects": "subjects", "max_age": "ttl", "replicas": "replicas",
                 "duplicate_window": "duplicate window", "history": "history"}


def bus_layout(replicas: int, max_ban: float, forget: float) -> dict:
    """{JetStream stream: {setting: value}}: max_age in seconds, 0 for none; the decisions
    keep an ended decision as long as the schedule may still grow it (forget)."""
    return {STREAM: {"subjects": (SUBJECT_PREFIX + ">",), "max_age": max_ban, "replicas": replicas,
                     "duplicate_window": DUPLICATE_WINDOW},
            "KV_" + PROTECTED_BUCKET: {"history": 1, "replicas": replicas, "max_age": 0},
            "KV_" + DECISIONS_BUCKET: {"history": 1, "replicas": replicas, "max_age": max(max_ban, forget)}}


def layout_conflicts(stream: str, wanted: dict, found: dict) -> list:
    """How an existing stream's settings (`found`, as the server reports them) differ from
    what `wanted` (bus_layout's) asks, one phrase each; [] when they agree."""
    def shown(key, value):
        if key in ("max_age", "duplicate_window"):
            return "none" if not value else duration(value)
        return " ".join(value) if key == "subjects" else str(value)
    name = stream.removeprefix("KV_")
    what = f"bucket {name}" if name != stream else f"stream {stream}"
    return [f"{what} has {SETTING_NAMES[key]} {shown(key, found.get(key))}, this configuration asks "
            f"{shown(key, value)}" for key, value in wanted.items()
            if (tuple(found.get(key) or ()) if key == "subjects" else (found.get(key) or 0)) != value]


def subject_for(server: str) -> str:
    if not SERVER_RE.fullmatch(server):
        raise EventError(f"server name {server!r}: letters, digits, '-' and '_' only, at most 63")
    return SUBJECT_PREFIX + server


def subject_owner(subject: str) -> Optional[str]:
    """The server a subject belongs to, or None if it is not a fleet ban subject."""
    if not subject.startswith(SUBJECT_PREFIX):
        return None
    name = subject[len(SUBJECT_PREFIX):]
    return name if SERVER_RE.fullmatch(name) else None


@dataclass(frozen=True)
class Event:
    kind: str                    # ban | unban
    target: Network              # a host is a /32 (/128)
    evidence: str                # proven | outbound | forgeable
    proto: Optional[str]
    direction: Optional[str]
    jail: str
    origin: str
    at: float                    # when the origin banned/unbanned
    end: float                   # absolute end of the ban (an unban: the end it lifts)
    id: str                      # unique per event: also the bus's de-duplication id

    @property
    def is_host(self) -> bool:
        return self.target.prefixlen == HOST_PREFIX[self.target.version]

    @property
    def address(self) -> str:
        """The target as fail2ban writes it: a bare address for a host."""
        return str(self.target.network_address) if self.is_host else str(self.target)

    def to_json(self) -> bytes:
        return json.dumps({"v": SCHEMA, "kind": self.kind, "target": self.address,
                           "evidence": self.evidence, "proto": self.proto, "dir": self.direction,
                           "jail": self.jail, "origin": self.origin, "at": self.at, "end": self.end,
                           "id": self.id}, sort_keys=True, separators=(",", ":")).encode()


def make_event(kind: str, target: str, origin: str, jail: str, at: float, end: float,
               proto: Optional[str] = None, direction: Optional[str] = None,
               evidence: Optional[str] = None, seq: int = 0) -> Event:
    """An event for the local server to publish; validated like a received one.
    `evidence` defaults from the protocol and direction (evidence.classify)."""
    from f2b_ext.core.evidence import classify
    if evidence is None:
        evidence = classify(proto, direction).label
    d = (direction or "").lower() or None
    ev_id = f"{origin}:{seq}:{int(at * 1000)}"
    raw = json.dumps({"v": SCHEMA, "kind": kind, "target": target, "evidence": evidence,
                      "proto": proto, "dir": d, "jail": jail, "origin": origin, "at": at,
                      "end": end, "id": ev_id}).encode()
    return parse_event(raw, subject_for(origin), now=at)


def parse_event(data: bytes, subject: str, now: float) -> Event:
    """Read one event strictly. Raises EventError(reason)."""
    if len(data) > MAX_EVENT_BYTES:
        raise EventError(f"event of {len(data)} bytes (at most {MAX_EVENT_BYTES})")
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise EventError(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise EventError("not a JSON object")
    if obj.get("v") != SCHEMA or type(obj.get("v")) is not int:
        raise EventError(f"schema version {obj.get('v')!r} (this agent reads {SCHEMA})")
    if set(obj) != set(FIELDS):
        missing, extra = set(FIELDS) - set(obj), set(obj) - set(FIELDS)
        raise EventError("fields: " + ", ".join([f"missing {k}" for k in sorted(missing)]
                                                + [f"unknown {k[:20]!r}" for k in sorted(extra)]))
    for key, types in FIELDS.items():
        value = obj[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise EventError(f"{key}: {type(value).__name__} is not allowed")
    if obj["kind"] not in KINDS:
        raise EventError(f"kind {obj['kind'][:20]!r}: not ban or unban")
    if obj["evidence"] not in EVIDENCE:
        raise EventError(f"evidence {obj['evidence'][:20]!r}: not proven, outbound or forgeable")
    if obj["dir"] is not None and obj["dir"] not in DIRECTIONS:
        raise EventError(f"dir {obj['dir'][:20]!r}: not in or out")
    if obj["proto"] is not None and not PROTO_RE.fullmatch(obj["proto"]):
        raise EventError(f"proto {obj['proto'][:20]!r}: letters and digits only")
    for key, rx in (("jail", JAIL_RE), ("origin", SERVER_RE), ("id", ID_RE)):
        if not rx.fullmatch(obj[key]):
            raise EventError(f"{key} {obj[key][:40]!r}: not a valid name")
    owner = subject_owner(subject)
    if owner is None:
        raise EventError(f"subject {subject[:80]!r} is not a fleet ban subject")
    if obj["origin"] != owner:
        raise EventError(f"origin {obj['origin']!r} published under {owner!r}'s subject")
    target = _target(obj["target"])
    at, end = float(obj["at"]), float(obj["end"])
    if not (math.isfinite(at) and math.isfinite(end)) or at <= 0:
        raise EventError("times must be finite and positive")
    if at > now + CLOCK_SKEW:
        raise EventError(f"event time {int(at - now)}s in the future")
    if end < at or end > at + MAX_BAN:
        raise EventError(f"end {end:.0f} is not within a year after {at:.0f}")
    return Event(obj["kind"], target, obj["evidence"], obj["proto"], obj["dir"], obj["jail"],
                 obj["origin"], at, end, obj["id"])


def _no_constant(name):
    raise ValueError(f"{name} is not a number")


def _target(text: str) -> Network:
    if len(text) > 49 or not re.fullmatch(r"[0-9A-Fa-f.:/]+", text):
        raise EventError(f"target {text[:50]!r}: not an address or prefix")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise EventError(f"target {text[:50]!r}: not an address or prefix (host bits set?)") from None
    if net.version == 6 and net.network_address.ipv4_mapped is not None:
        raise EventError(f"target {text}: IPv4-mapped; send the IPv4 address")
    return net


# --- The receiver ----------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    verdict: str                 # apply | unban | refuse | duplicate | expired
    reason: str
    until: float = 0.0           # apply: when the local ban ends


@dataclass(frozen=True)
class Policy:
    """A receiver's own rules for remote bans."""
    local: str                                   # this server's name
    protected: tuple = ()                        # local: own addresses, dependencies, ignoreip
    bogons: tuple = DEFAULT_BOGON_NETWORKS
    maxprefix: dict = field(default_factory=lambda: {4: 24, 6: 64})   # widest remote prefix
    single_cap: float = HOUR                     # a host ban only one server reported
    forged_cap: float = 600                      # forgeable evidence
    max_ban: float = WEEK
    min_servers: int = 2                         # for a host ban beyond single_cap, and prefixes
    min_remaining: float = 5                     # shorter than this is not worth applying

    @classmethod
    def parse(cls, local: str, protected: Iterable[str] = (), bogons: str | Iterable[str] = "default",
              **kw) -> "Policy":
        return cls(local=local, protected=parse_networks(list(protected), "protected"),
                   bogons=parse_bogons(bogons), **kw)


class Ledger:
    """What this receiver holds because of whom: target -> {origin: end}. The local ban
    lasts as long as the longest standing report (after caps). `about` keeps where each
    report came from (jail, evidence kind, when), for `fleet status --bans`. At most
    `limit` targets are held: past it, new targets are refused (a full ledger never
    lists a ban it does not hold). `touched` collects the targets changed since the
    adapter last saved them (f2b_ext/system/fleet_ledger.py)."""

    def __init__(self, limit: int = 1_000_000):
        self.reports: dict = {}                  # target -> {origin: capped end}
        self.applied: dict = {}                  # target -> until (what we gave fail2ban or the kernel)
        self.about: dict = {}                    # target -> {origin: (jail, evidence, at)}
        self.limit = limit
        self.touched: set = set()
        self._expired_at = float("-inf")

    def standing(self, target: Network, now: float) -> dict:
        return {o: e for o, e in self.reports.get(target, {}).items() if e > now}

    def listed(self, now: float) -> dict:
        """{target: seconds left} of every ban held now (setsync's map)."""
        return {t: u - now for t, u in self.applied.items() if u > now}

    def expire(self, now: float):
        self._expired_at = now
        for target in [t for t, u in self.applied.items() if u <= now]:
            self.forget(target)

    def forget(self, target: Network):
        self.applied.pop(target, None)
        self.reports.pop(target, None)
        self.about.pop(target, None)
        self.touched.add(target)

    def full(self, target: Network, now: float) -> bool:
        """No room for a new `target` (expired entries are dropped first, at most once a second)."""
        if target in self.applied or len(self.applied) < self.limit:
            return False
        if now - self._expired_at >= 1:
            self.expire(now)
        return len(self.applied) >= self.limit


class Receiver:
    """Decides about events from the bus (see the module's docstring)."""

    def __init__(self, policy: Policy, ratelimit: Optional["RateLimit"] = None, limit: int = 1_000_000):
        self.policy = policy
        self.fleet_protected: dict = {}          # server -> tuple of networks it published
        self.ledger = Ledger(limit)
        self.ratelimit = ratelimit or RateLimit()
        self.local: tuple = ()                   # this server's dependencies now (set_local)
        self._local_index = NetworkIndex(policy.protected)
        self._fleet_index = NetworkIndex()       # every server's published networks ...
        self._owners: dict = {}                  # ... and who published each

    def set_local(self, networks: Iterable[str]):
        """This server's own dependencies as gathered now (they change: peers come and
        go); protected here like `policy.protected`."""
        self.local = parse_networks(list(networks), "dependencies")
        self._local_index = NetworkIndex(tuple(self.policy.protected) + self.local)

    def set_protected(self, server: str, networks: Iterable[str]) -> list[str]:
        """A server's published own addresses and dependencies. Entries wider than
        /16 (/32) are dropped (a server must not shield the whole Internet); returns
        the reasons for what was dropped."""
        kept, dropped = [], []
        for text in networks:
            try:
                net = ipaddress.ip_network(str(text), strict=False)
            except ValueError:
                dropped.append(f"{str(text)[:50]!r} is not an address")
                continue
            if net.prefixlen < {4: 16, 6: 32}[net.version]:
                dropped.append(f"{net} is wider than /{ {4: 16, 6: 32}[net.version]}")
                continue
            kept.append(net)
        self.fleet_protected[server] = tuple(kept)
        self._owners = {}
        for name, nets in sorted(self.fleet_protected.items()):
            for net in nets:
                self._owners.setdefault(net, name)
        self._fleet_index = NetworkIndex(self._owners)
        return dropped

    def protected(self) -> tuple:
        return tuple(self.policy.protected) + self.local + tuple(n for nets in self.fleet_protected.values()
                                                                 for n in nets)

    def decide(self, ev: Event, now: float) -> Decision:
        for name, rule in RULES:
            reason = rule(self, ev, now)
            if reason:
                return Decision("expired" if name == "expired" else "refuse", reason)
        if ev.kind == "unban":
            return self._unban(ev, now)
        return self._ban(ev, now)

    def _ban(self, ev: Event, now: float) -> Decision:
        p = self.policy
        standing = self.ledger.standing(ev.target, now)
        reporters = set(standing) | {ev.origin}
        cap, why = p.max_ban, "max_ban"
        if ev.evidence == "forgeable" and p.forged_cap < cap:
            cap, why = p.forged_cap, "forgeable evidence"
        elif len(reporters) < p.min_servers and p.single_cap < cap:
            cap, why = p.single_cap, f"reported by {len(reporters)} server(s) only"
        # the cap runs from when the origin banned (not from when the event arrived): a
        # redelivery or a replay after an outage ends at the same time, so it is a duplicate
        end = min(ev.end, min(ev.at, now) + cap)
        if end - now < p.min_remaining:
            return Decision("expired", f"less than {p.min_remaining:.0f}s left after the cap ({why})")
        if self.ledger.full(ev.target, now):
            return Decision("refuse", f"the ledger holds {self.ledger.limit} bans, its limit")
        old = standing.get(ev.origin, 0.0)
        self.ledger.reports.setdefault(ev.target, {})[ev.origin] = max(old, end)
        self.ledger.about.setdefault(ev.target, {})[ev.origin] = (ev.jail, ev.evidence, ev.at)
        self.ledger.touched.add(ev.target)
        until = max(self.ledger.reports[ev.target].values())
        if until <= self.ledger.applied.get(ev.target, 0.0) + 1:
            return Decision("duplicate", f"already held until {self.ledger.applied[ev.target]:.0f}")
        self.ledger.applied[ev.target] = until
        capped = "" if end == ev.end else f", capped: {why}"
        return Decision("apply", f"{len(reporters)} reporter(s){capped}", until)

    def _unban(self, ev: Event, now: float) -> Decision:
        reports = self.ledger.reports.get(ev.target, {})
        if ev.origin not in reports:
            return Decision("duplicate", f"nothing held from {ev.origin}")
        del reports[ev.origin]
        self.ledger.about.get(ev.target, {}).pop(ev.origin, None)
        self.ledger.touched.add(ev.target)
        rest = {o: e for o, e in reports.items() if e > now}
        if rest:
            until = max(rest.values())
            self.ledger.applied[ev.target] = until
            return Decision("duplicate", f"still reported by {', '.join(sorted(rest))}", until)
        self.ledger.forget(ev.target)
        return Decision("unban", f"{ev.origin} lifted its ban")


# Refusal rules, in order; each returns a reason or None. (The event was already parsed
# strictly: the origin is the subject's owner.)
def _r_own(r: Receiver, ev: Event, now: float):
    return "our own event" if ev.origin == r.policy.local else None


def _r_quarantined(r: Receiver, ev: Event, now: float):
    if not r.ratelimit.allow(ev.origin, now):
        return f"{ev.origin} is quarantined until {r.ratelimit.until(ev.origin):.0f} (flooding)"
    return None


def _r_expired(r: Receiver, ev: Event, now: float):
    return f"ended {int(now - ev.end)}s ago" if ev.kind == "ban" and ev.end <= now else None


def _r_prefix(r: Receiver, ev: Event, now: float):
    if ev.kind == "ban" and not ev.is_host:
        return "a prefix is banned fleet-wide only by a fleet decision, not by one server's event"
    return None


def _r_wide(r: Receiver, ev: Event, now: float):
    limit = r.policy.maxprefix[ev.target.version]
    return f"wider than /{limit}" if ev.target.prefixlen < limit else None


def _r_protected(r: Receiver, ev: Event, now: float):
    if ev.kind != "ban":
        return None
    if (p := r._local_index.overlap(ev.target)) is not None:
        return f"covers {p}, protected here"
    if (p := r._fleet_index.overlap(ev.target)) is not None:            # binary search: peers are many
        return f"covers {p}, protected by fleet server {r._owners[p]}"
    if (b := first_overlap(ev.target, r.policy.bogons)) is not None:
        return f"overlaps bogon {b}"
    return None


RULES = (("own", _r_own), ("quarantined", _r_quarantined), ("expired", _r_expired),
         ("too wide", _r_wide), ("prefix", _r_prefix), ("protected", _r_protected))


# --- Rate limit and quarantine ----------------------------------------------------------

class RateLimit:
    """Token bucket per sender: `rate` events/s on average, bursts of `burst`. A sender
    that runs dry is quarantined for `quarantine` seconds (everything refused)."""

    def __init__(self, rate: float = 200.0, burst: float = 2000.0, quarantine: float = 600.0):
        self.rate, self.burst, self.quarantine = rate, burst, quarantine
        self._tokens: dict = {}                  # sender -> (tokens, last time)
        self._quarantined: dict = {}             # sender -> until
        self.newly_quarantined: list = []        # senders quarantined since last read

    def allow(self, sender: str, now: float) -> bool:
        if self._quarantined.get(sender, 0.0) > now:
            return False
        tokens, last = self._tokens.get(sender, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        if tokens < 1.0:
            self._quarantined[sender] = now + self.quarantine
            self._tokens[sender] = (self.burst, now + self.quarantine)
            self.newly_quarantined.append(sender)
            return False
        self._tokens[sender] = (tokens - 1.0, now)
        return True

    def until(self, sender: str) -> float:
        return self._quarantined.get(sender, 0.0)

    def quarantined(self, now: float) -> dict:
        return {s: u for s, u in self._quarantined.items() if u > now}


# --- Fleet escalation --------------------------------------------------------------------

@dataclass(frozen=True)
class FleetCandidate:
    net: Network
    reporters: tuple             # distinct servers that reported hosts inside
    candidate: Candidate


class FleetEscalator:
    """escalation.Escalator over every server's host bans, plus who reported them."""

    def __init__(self, escalator: Escalator, min_servers: int = 2):
        if min_servers < 1:
            raise ValueError("min_servers: at least 1")
        self.escalator, self.min_servers = escalator, min_servers
        self._hosts: dict = {}                   # (family, first-rung prefix) -> {address: {origin: time}}
        self._observed = 0

    def observe(self, ev: Event) -> list[FleetCandidate]:
        """An accepted host ban (remote, or our own). Returns fleet candidates: prefixes
        the escalator proposes that `min_servers` servers reported hosts inside."""
        if ev.kind != "ban" or not ev.is_host:
            return []
        fam, addr = ev.target.version, int(ev.target.network_address)
        self._bucket(fam, addr).setdefault(addr, {})[ev.origin] = ev.at
        self._observed += 1
        if self._observed % 4096 == 0:
            self._prune(ev.at)
        out = []
        for cand in self.escalator.observe(HostBan(ev.target.network_address, ev.at, ev.proto, ev.direction)):
            reporters = self.reporters(cand.net, ev.at)
            if len(reporters) >= self.min_servers:
                out.append(FleetCandidate(cand.net, reporters, cand))
        return out

    def _shift(self, fam: int) -> int:
        rungs = self.escalator.ladder.rungs.get(fam) or ((HOST_PREFIX[fam],),)
        return HOST_PREFIX[fam] - rungs[0][0]

    def _bucket(self, fam: int, addr: int) -> dict:
        """Hosts reported inside the first rung's prefix (/24, /64) holding addr."""
        return self._hosts.setdefault((fam, addr >> self._shift(fam)), {})

    def reporters(self, net: Network, now: float) -> tuple:
        """Servers that reported hosts inside `net` within the window."""
        since = now - self.escalator.window
        fam, shift = net.version, self._shift(net.version)
        lo, hi = int(net.network_address), int(net.broadcast_address)
        keys = [(fam, lo >> shift)] if HOST_PREFIX[fam] - net.prefixlen <= shift else \
            [k for k in self._hosts if k[0] == fam and lo >> shift <= k[1] <= hi >> shift]
        found = set()
        for key in keys:
            for addr, origins in self._hosts.get(key, {}).items():
                if lo <= addr <= hi:
                    found |= {o for o, t in origins.items() if t >= since}
        return tuple(sorted(found))

    def _prune(self, now: float):
        since = now - self.escalator.window
        for key in list(self._hosts):
            bucket = self._hosts[key]
            for addr in [a for a, o in bucket.items() if max(o.values()) < since]:
                del bucket[addr]
            if not bucket:
                del self._hosts[key]

    def supports(self, net: Network, now: float) -> Optional[str]:
        """None if our own view backs a fleet ban of `net`, else why not."""
        if (why := self.escalator.safety.why_unsafe(net)) is not None:
            return why
        reporters = self.reporters(net, now)
        if len(reporters) < self.min_servers:
            return f"{len(reporters)} server(s) reported hosts inside {net} here, {self.min_servers} needed"
        counted = self.escalator.counting().get(net, 0)
        need = next((n for p, n in self.escalator.ladder.rungs.get(net.version, ()) if p == net.prefixlen), None)
        if need is None:
            return f"/{net.prefixlen} is not a rung of the fleet ladder"
        if counted < need and net not in self.escalator.active(now):
            return f"{counted} hosts counted inside {net} here, {need} needed"
        return None

    def mark_banned(self, net: Network, until: float, now: float) -> list:
        return self.escalator.mark_banned(net, until, now)


@dataclass(frozen=True)
class FleetDecision:
    """What the key-value bucket holds for a prefix: decided once, by `decided_by`;
    `count` is the prefix's fleet escalation number (1 the first time, growing while
    the previous one is within the schedule's `forget`), `evidence` the weakest kind
    its threshold needed (it picks the schedule's steps)."""
    net: Network
    until: float
    decided_by: str
    reporters: tuple
    at: float
    count: int = 1
    evidence: str = "proven"

    def to_json(self) -> bytes:
        return json.dumps({"v": SCHEMA, "net": str(self.net), "until": self.until, "by": self.decided_by,
                           "reporters": list(self.reporters), "at": self.at, "count": self.count,
                           "evidence": self.evidence}, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, data: bytes) -> "FleetDecision":
        try:
            obj = json.loads(data.decode())
            # count and evidence came with growing schedules; a decision without them is a first, proven one
            if not isinstance(obj, dict) or obj.get("v") != SCHEMA or \
                    not {"v", "net", "until", "by", "reporters", "at"} <= set(obj) <= {
                        "v", "net", "until", "by", "reporters", "at", "count", "evidence"}:
                raise ValueError("fields")
            count, evidence = obj.get("count", 1), obj.get("evidence", "proven")
            if type(count) is not int or not 1 <= count <= 1000 or evidence not in EVIDENCE:
                raise ValueError("count or evidence")
            net = ipaddress.ip_network(obj["net"], strict=True)
            if not SERVER_RE.fullmatch(obj["by"]) or not all(isinstance(r, str) and SERVER_RE.fullmatch(r) for r in obj["reporters"]):
                raise ValueError("names")
            until, at = float(obj["until"]), float(obj["at"])
            if not (math.isfinite(until) and math.isfinite(at)) or until - at > MAX_BAN:
                raise ValueError("times")
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, AttributeError) as exc:
            raise EventError(f"decision: {exc}") from None
        return cls(net, until, obj["by"], tuple(obj["reporters"]), at, count, evidence)


def next_decision(previous: Optional[FleetDecision], cand: FleetCandidate, server: str, now: float,
                  schedule: Schedule, rnd: float = 0.0) -> Optional[FleetDecision]:
    """The decision to write for a fleet candidate, given what the bucket holds for its
    prefix: None while `previous` still holds (the fleet decided already). Otherwise
    the next escalation number if `previous` is within the schedule's `forget`, else
    the first; its length from escalation.Schedule, as subnet-escalate's are."""
    if previous is not None and previous.until > now:
        return None
    prior = previous.count if previous is not None and now - previous.at <= schedule.forget else 0
    seconds = schedule.ban_time(prior, cand.candidate.evidence, rnd)
    return FleetDecision(cand.net, now + seconds, server, cand.reporters, now, prior + 1,
                         cand.candidate.evidence.label)


def decision_until(d: FleetDecision, schedule: Schedule) -> float:
    """Until when this receiver bans a decision: never longer than its own schedule
    gives the decision's escalation number and evidence (a decider cannot stretch it)."""
    return min(d.until, d.at + schedule.ban_time(d.count - 1, parse_evidence(d.evidence)))


def decision_key(net: Network) -> str:
    """A key-value key for a prefix (keys allow letters, digits, '-', '_', '=' and '.')."""
    return str(net).replace(":", "-").replace("/", "_")
