"""`f2b-ext report`: what a firewall log says, summed up as psad's status page does.

How it works: `Report.feed()` takes one log line at a time (so a log of any size streams
through in bounded memory), judges it with the same core as the filter (netfilter.py,
direction "any", so both directions are read) and adds it to a few tables:
  - counts per verdict kind, per LOG prefix and direction, per protocol;
  - top remote sources of inbound attempts, top targeted ports, remotes this host called;
  - backscatter: hosts that answered packets forged with this server's address, and the
    service port they answered from;
  - candidate subnets: /24 (/64) prefixes with at least `hosts` distinct attacking hosts,
    the first rung of subnet-escalate's default ladder, with the reason escalation would
    refuse one (bogon, too wide, covers a dependency ...), judged with the `bogons` the
    jail uses;
  - framing: inbound records claiming the address of something this server depends on
    (`dependencies`, {address: source}, gathered by the adapter): its resolver, gateway,
    a peer. Such a line is almost certainly forged, and subnet-escalate never bans it;
  - attempts and records per minute.
The key-per-address tables are `Bounded` counters: exact until they hold `capacity` keys,
then Space-Saving counters (the least counted half is dropped); the report then says its
counts are approximate and by how much at most. `summary()` returns plain data (the --json output);
`render()` turns it into text lines. Nothing here does I/O.
"""
from __future__ import annotations

import functools
import ipaddress
import math
import re
import time
from collections import Counter
from datetime import datetime, timezone

from f2b_ext.core import netfilter as nf
from f2b_ext.core.escalation import DAY, DEFAULT_BOGON_NETWORKS, DEFAULT_LADDER, Safety, parse_duration, parse_networks

PREFIX = {4: DEFAULT_LADDER[4][0][0], 6: DEFAULT_LADDER[6][0][0]}       # /24, /64
HOSTS = DEFAULT_LADDER[4][0][1]                                          # 5 hosts
MAX_HOSTS_PER_PREFIX = 4096          # distinct hosts remembered per prefix (a /24 has 256)
MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                                      "Sep", "Oct", "Nov", "Dec"), 1)}


class Bounded:
    """A counter with at most `capacity` keys (Space-Saving, evicting half at a time), each
    with an optional payload. Exact until full. Then the least counted half is dropped,
    `error` becomes the largest count dropped so far, and a key seen anew starts at
    `error`: every count is then at most `error` too high, never too low, and every key
    counted more than `error` times is still there."""

    def __init__(self, capacity: int, payload=None):
        self.capacity, self.payload = capacity, payload
        self.counts: dict = {}
        self.extra: dict = {}
        self.error = 0

    def add(self, key, n: int = 1):
        """Count `key`; returns its payload (made by `payload()` on first sight) or None."""
        if key in self.counts:
            self.counts[key] += n
        else:
            if len(self.counts) >= self.capacity:
                self._shrink()
            self.counts[key] = self.error + n
            if self.payload:
                self.extra[key] = self.payload()
        return self.extra.get(key)

    def _shrink(self):
        ranked = sorted(self.counts.items(), key=lambda kv: kv[1], reverse=True)
        keep, drop = ranked[: self.capacity // 2], ranked[self.capacity // 2:]
        self.error = max([self.error] + [n for _, n in drop])
        self.counts = dict(keep)
        self.extra = {k: v for k, v in self.extra.items() if k in self.counts}

    def top(self, n: int) -> list:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:n]


class StampReader:
    """Syslog time stamps to epoch seconds. Classic stamps carry no year: the year is the
    one that puts the stamp not after `now` (+1 day of clock skew), as fail2ban does;
    their time is local (`tz`), RFC 3339 / journal stamps carry their own offset."""

    def __init__(self, now: float, tz=None):
        self.now = now
        self.tz = tz or datetime.now().astimezone().tzinfo
        self._last = (None, None)

    def __call__(self, stamp: str) -> float | None:
        stamp = stamp.strip()
        if not stamp:
            return None
        key = stamp[:19] if stamp[4:5] == "-" else stamp[:15]
        if key == self._last[0] and "." not in stamp[15:]:
            return self._last[1]
        try:
            if stamp[4:5] == "-":
                value = datetime.fromisoformat(stamp).timestamp()
            else:
                value = self._classic(stamp)
        except (ValueError, KeyError, OverflowError):
            return None
        if "." not in stamp[15:]:
            self._last = (key, value)
        return value

    def _classic(self, stamp: str) -> float:
        month, day, clock = stamp.split()[:3]
        hh, mm, ss = clock.split(":")
        year = datetime.fromtimestamp(self.now, self.tz).year
        for y in (year, year - 1):
            when = datetime(y, MONTHS[month], int(day), int(hh), int(mm), int(float(ss)), tzinfo=self.tz).timestamp()
            if when <= self.now + DAY:
                return when
        return when


def parse_since(text: str, now: float) -> float:
    """'30m', '2h', '1d', '1w' ago, or an ISO date/time ('2026-11-21', '2026-11-21T08:00')."""
    text = text.strip()
    if re.fullmatch(r"\d+[smhdw]", text):
        return now - parse_duration(text, "--since")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: give an age (30m, 2h, 1d, 1w) or a date (2026-11-21T08:00)") from None
    if when.tzinfo is None:
        when = when.astimezone()
    return when.timestamp()


@functools.lru_cache(maxsize=65536)
def _prefix_of(address) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The /24 (/64) an attacking address falls in."""
    return ipaddress.ip_network((address, PREFIX[address.version]), strict=False)


class Report:
    def __init__(self, now: float | None = None, since: float | None = None, tz=None,
                 policy: nf.Policy = nf.Policy(direction="any"), hosts: int = HOSTS,
                 capacity: int = 100_000, dependencies: dict | None = None,
                 bogons: tuple = DEFAULT_BOGON_NETWORKS):
        self.now = time.time() if now is None else now
        self.since, self.policy, self.hosts = since, policy, hosts
        self.dependencies = {ipaddress.ip_address(a): src for a, src in (dependencies or {}).items()}
        self.bogons = bogons
        self.framed = Counter()                       # dependency address -> inbound records claiming it
        self.stamp = StampReader(self.now, tz)
        self.lines = self.before_since = 0
        self.kinds = Counter()
        self.prefixes = Counter()                    # (prefix, direction)
        self.protocols = Counter()
        self.first = self.last = None
        self.sources = Bounded(capacity)              # inbound attempts by remote
        self.ports = Counter()                        # (dpt, proto) of inbound attempts
        self.outbound = Bounded(capacity)             # (remote, dpt, proto) this host called
        self.victims = Bounded(capacity, Counter)     # backscatter: answering host -> its ports
        self.subnets = Bounded(capacity, set)         # prefix -> distinct attacking hosts
        self.minutes = {}                             # minute epoch -> [records, attempts]

    def feed(self, line: str):
        self.lines += 1
        split = nf.kernel_message(line)
        if split is None:
            self.kinds[nf.NOT_NETFILTER] += 1
            return
        rec = nf.parse_message(split[1], self.policy.logprefix)
        if rec is None:
            self.kinds[nf.NOT_NETFILTER] += 1
            return
        when = self.stamp(split[0])
        if self.since is not None and when is not None and when < self.since:
            self.before_since += 1
            return
        verdict = nf.classify(rec, self.policy)
        self.kinds[verdict.kind] += 1
        self.prefixes[(rec.prefix, rec.direction)] += 1
        self.protocols[nf.protocol_name(rec.proto)] += 1
        if when is not None:
            self.first = when if self.first is None else min(self.first, when)
            self.last = when if self.last is None else max(self.last, when)
            bucket = self.minutes.setdefault(int(when // 60) * 60, [0, 0])
            bucket[0] += 1
            bucket[1] += verdict.attempt
        remote = rec.remote
        if rec.direction == "in" and rec.src in self.dependencies:
            self.framed[rec.src] += 1
        if verdict.attempt and rec.direction == "in":
            self.sources.add(remote)
            self.ports[(rec.dpt, nf.protocol_name(rec.proto))] += 1
            net = _prefix_of(remote)
            members = self.subnets.add(net)
            if len(members) < MAX_HOSTS_PER_PREFIX:
                members.add(remote)
        elif verdict.attempt:
            self.outbound.add((remote, rec.dpt, nf.protocol_name(rec.proto)))
        elif verdict.kind in (nf.BACKSCATTER, nf.ICMP_ANSWER) and rec.direction == "in":
            services = self.victims.add(rec.src)
            label = f"{rec.spt}/{rec.proto}" if rec.spt is not None else nf.protocol_name(rec.proto)
            if len(services) < 16 or label in services:
                services[label] += 1

    # --- results ---------------------------------------------------------------------

    def summary(self, top: int = 10) -> dict:
        safety = Safety(protected=parse_networks([str(a) for a in self.dependencies], "dependencies"),
                        bogons=self.bogons)
        candidates = []
        for net, attempts in self.subnets.top(len(self.subnets.counts)):
            hosts = len(self.subnets.extra[net])
            if hosts >= self.hosts:
                candidates.append({"subnet": str(net), "hosts": hosts, "attempts": attempts,
                                   "refused": safety.why_unsafe(net)})
        candidates.sort(key=lambda c: (-c["hosts"], -c["attempts"], c["subnet"]))
        stamp = lambda t: None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()
        error = max(self.sources.error, self.outbound.error, self.victims.error, self.subnets.error)
        return {
            "lines": self.lines,
            "records": sum(v for k, v in self.kinds.items() if k != nf.NOT_NETFILTER),
            "other_lines": self.kinds[nf.NOT_NETFILTER],
            "before_since": self.before_since,
            "first": stamp(self.first), "last": stamp(self.last),
            "kinds": {k: v for k, v in self.kinds.most_common() if k != nf.NOT_NETFILTER},
            "prefixes": [{"prefix": p, "direction": d, "records": n} for (p, d), n in self.prefixes.most_common()],
            "protocols": dict(self.protocols.most_common()),
            "hosts": self.hosts,
            "top_sources": [{"address": str(a), "attempts": n, "dependency": self.dependencies.get(a)}
                            for a, n in self.sources.top(top)],
            "framing": [{"address": str(a), "dependency": self.dependencies[a], "records": n}
                        for a, n in self.framed.most_common(top)],
            "top_ports": [{"port": p, "protocol": proto, "attempts": n}
                          for (p, proto), n in sorted(self.ports.items(), key=lambda kv: (-kv[1], str(kv[0])))[:top]],
            "outbound": [{"address": str(a), "port": p, "protocol": proto, "attempts": n}
                         for (a, p, proto), n in self.outbound.top(top)],
            "backscatter": {
                "records": self.kinds[nf.BACKSCATTER] + self.kinds[nf.ICMP_ANSWER],
                "victims": [{"address": str(a), "records": n,
                             "answered_from": dict(self.victims.extra[a].most_common(3))}
                            for a, n in self.victims.top(top)]},
            "candidate_subnets": candidates[:top],
            "per_minute": [{"minute": stamp(m), "records": r, "attempts": a}
                           for m, (r, a) in sorted(self.minutes.items())],
            "approximate": error > 0, "max_overcount": error,
        }


# --- text ---------------------------------------------------------------------------

def _n(value: int) -> str:
    return f"{value:,}"


def bar(value: int, peak: int, width: int, char: str) -> str:
    return char * (max(1, round(width * value / peak)) if value and peak else 0)


def chart_rows(per_minute: list[dict], max_rows: int) -> tuple[int, list[tuple[str, int, int]]]:
    """Group minutes into at most `max_rows` rows: (minutes per row, [(label, records, attempts)])."""
    if not per_minute:
        return 1, []
    first = datetime.fromisoformat(per_minute[0]["minute"]).timestamp()
    last = datetime.fromisoformat(per_minute[-1]["minute"]).timestamp()
    span = int((last - first) // 60) + 1
    step = max(1, math.ceil(span / max_rows))
    rows: dict[int, list[int]] = {}
    for item in per_minute:
        t = datetime.fromisoformat(item["minute"]).timestamp()
        row = rows.setdefault(int((t - first) // 60) // step, [0, 0])
        row[0] += item["records"]
        row[1] += item["attempts"]
    out = []
    for i in range(max(rows) + 1):
        label = datetime.fromtimestamp(first + i * step * 60, timezone.utc).strftime("%m-%d %H:%M")
        out.append((label, *rows.get(i, (0, 0))))
    return step, out


def render(s: dict, title: str, style=None, width: int = 80, chart: int = 24) -> list[str]:
    b = style.bold if style else (lambda t: t)
    full, half = ("█", "░") if style and style.on else ("#", ".")
    lines = [b(f"f2b-ext report: {title}")]
    lines.append(f"  {_n(s['lines'])} lines: {_n(s['records'])} netfilter records, {_n(s['other_lines'])} other"
                 + (f", {_n(s['before_since'])} before --since" if s["before_since"] else ""))
    if s["first"]:
        lines.append(f"  from {s['first'][:19].replace('T', ' ')} to {s['last'][:19].replace('T', ' ')} UTC")
    if s["kinds"]:
        lines.append("  " + ", ".join(f"{k} {_n(v)}" for k, v in s["kinds"].items()))
    if s["approximate"]:
        lines.append(f"  (more distinct addresses than the report keeps: counts may be high by up to "
                     f"{_n(s['max_overcount'])})")

    def table(head: str, rows: list[str]):
        if rows:
            lines.extend(["", b(head), *rows])

    table("Records per LOG prefix and direction",
          [f"  {(r['prefix'] or '(no prefix)')[:40]:<40} {r['direction']:<4} {_n(r['records']):>12}" for r in s["prefixes"]])
    peak = max(s["protocols"].values(), default=0)
    table("Protocols", [f"  {p:<22} {_n(n):>12}  {bar(n, peak, 30, full)}" for p, n in s["protocols"].items()])
    table("Top sources (inbound attempts)",
          [f"  {r['address']:<40} {_n(r['attempts']):>12}" + (f"  (forged from your {r['dependency']}?)"
                                                               if r["dependency"] else "") for r in s["top_sources"]])
    table("Framing: inbound records claiming an address this server depends on (forged?; never banned)",
          [f"  {r['address']:<40} {r['dependency']:<10} {_n(r['records']):>10}" for r in s["framing"]])
    port = lambda r: f"{r['port']}/{r['protocol']}" if r["port"] is not None else r["protocol"]
    table("Top targeted ports", [f"  {port(r):<22} {_n(r['attempts']):>12}" for r in s["top_ports"]])
    table("Outbound attempts (this host called out)",
          [f"  {r['address']:<40} {port(r):<16} {_n(r['attempts']):>8}" for r in s["outbound"]])
    back = s["backscatter"]
    table(f"Backscatter: {_n(back['records'])} answers to packets forged with this server's address",
          [f"  {r['address']:<40} {_n(r['records']):>10}  from {', '.join(r['answered_from'])}" for r in back["victims"]])
    table(f"Candidate subnets ({s['hosts']}+ attacking hosts: what subnet-escalate counts)",
          [f"  {c['subnet']:<24} {c['hosts']:>5} hosts {_n(c['attempts']):>10} attempts"
           + (f"  (not escalated: {c['refused']})" if c["refused"] else "") for c in s["candidate_subnets"]])
    step, rows = chart_rows(s["per_minute"], chart)
    if rows:
        peak = max(r[1] for r in rows)
        room = max(10, width - 32)
        chart_lines = [f"  {label}  {bar(a, peak, room, full)}{bar(r - a, peak, room, half) if r > a else ''}"
                       .ljust(16 + room) + f" {_n(r):>9}" for label, r, a in rows]
        per = "minute" if step == 1 else f"{step} minutes"
        table(f"Activity per {per} (UTC; {full} attempts, {half} other records)", chart_lines)
    return lines
