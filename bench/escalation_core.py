#!/usr/bin/env python3
"""The escalation core under a forged-source flood: one million distinct banned hosts.

    .venv/bin/python bench/escalation_core.py [--hosts 1000000]

Two shapes: addresses random over the whole IPv4 space, and concentrated in 200 /24s.
The flood runs over simulated time (window 1 h, one ban every 36 ms: ~100,000 bans live
in the window at any moment, ten windows in all), so a structure that forgets what left
the window stays flat while one that does not grows tenfold. Reports decisions (bans
judged) per second without tracing, then, in a second pass under tracemalloc, the
memory held at each tenth of the run and its peak. The lines are inbound LOG lines, so
their evidence is forgeable and the shipped breaker (10 escalations an hour) bounds
what the concentrated shape escalates.

Then the two costs the dependency guard adds, each against the plain way in the same run:
  - narrowing: 600 distinct hosts banned in one /64 that is never escalated (a bogon;
    or the server's own /64 while the breaker holds escalation back), where every ban
    past the fifth searches for a safe sub-prefix: the one-pass search vs checking every
    sub-prefix against every member (the O(64 N) per ban this replaced);
  - protected networks: Safety.why_unsafe with 10,000 protected networks (peers) in the
    NetworkIndex vs a scan of the list; and fail2ban's own ignore check
    (Filter.inIgnoreIPList) per line with 0, 1,000 and 10,000 guarded addresses.
"""
from __future__ import annotations

import argparse
import ipaddress
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from f2b_ext.core.escalation import Breaker, Escalator, HostBan, Safety, first_overlap  # noqa: E402
from f2b_ext.core.evidence import Evidence  # noqa: E402

WINDOW = 3600.0
STEP = 0.036                # seconds between bans: 100,000 per window


def addresses(shape: str, n: int, seed: int = 1):
    rng = random.Random(seed)
    if shape == "random":
        for _ in range(n):
            yield ipaddress.IPv4Address(rng.getrandbits(32))
    else:
        nets = [rng.getrandbits(24) << 8 for _ in range(200)]
        for _ in range(n):
            yield ipaddress.IPv4Address(rng.choice(nets) | rng.getrandbits(8))


def run(shape: str, n: int, trace: bool):
    esc = Escalator(window=WINDOW, safety=Safety(bogons=()))
    decisions = escalations = 0
    samples = []
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    for i, addr in enumerate(addresses(shape, n)):
        now = i * STEP
        for cand in esc.observe(HostBan(addr, now, "TCP", "IN")):
            escalations += 1
            esc.mark_banned(cand.net, until=now + 1800, now=now, evidence=cand.evidence)
        decisions += 1
        if trace and (i + 1) % (n // 10) == 0:
            samples.append((i + 1, esc.tracked(), tracemalloc.get_traced_memory()[0]))
    secs = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    if trace:
        tracemalloc.stop()
    return decisions / secs, escalations, samples, peak


def plain_narrowing(esc: Escalator, net, around, members, need):
    """The search _safe_prefix replaced: every sub-prefix against every member."""
    if esc.safety.why_unsafe(net) is None:
        return net
    host = 128 if net.version == 6 else 32
    for plen in range(net.prefixlen + 1, host):
        sub = ipaddress.ip_network((int(around) >> (host - plen) << (host - plen), plen))
        if sum(1 for m in members if m.subnet_of(sub)) < need:
            return None
        if esc.safety.why_unsafe(sub) is None:
            return sub
    return None


def narrowing(own: bool, bans: int = 600) -> tuple[float, float]:
    """Seconds per ban, one-pass vs plain, for `bans` hosts of one /64: a bogon, or (own)
    the /64 holding the server's ::1 with hosts spread over it and the breaker already
    spent, so every ban searches again for a safe sub-prefix and is refused."""
    rng = random.Random(3)
    base = int(ipaddress.IPv6Address("2001:db8:7::"))
    hosts = [ipaddress.IPv6Address(base + (rng.getrandbits(64) if own else i + 1)) for i in range(bans)]
    if own:
        esc = Escalator(window=WINDOW, breaker=Breaker(maxrate=1),
                        safety=Safety(protected=(ipaddress.ip_network("2001:db8:7::1"),), bogons=()))
        esc.mark_banned(ipaddress.ip_network("198.51.100.0/24"), until=1e9, now=0.0, evidence=Evidence.FORGEABLE)
    else:
        esc = Escalator(window=WINDOW)             # default bogons: 2001:db8::/32 is one
    start = time.perf_counter()
    for i, addr in enumerate(hosts):
        assert esc.observe(HostBan(addr, float(i), "TCP", "IN")) == []
    ours = (time.perf_counter() - start) / bans
    net = ipaddress.ip_network("2001:db8:7::/64")
    members, start = [], time.perf_counter()
    for addr in hosts:
        members.append(ipaddress.ip_network(addr))
        if len(members) >= 5:
            plain_narrowing(esc, net, addr, members, 5)
    return ours, (time.perf_counter() - start) / bans


def protected_lookup(n: int = 10_000, probes: int = 20_000) -> tuple[float, float]:
    """Seconds per why_unsafe with `n` protected peers: NetworkIndex vs a list scan."""
    rng = random.Random(2)
    peers = [ipaddress.ip_network(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(n)]
    safety = Safety(protected=tuple(peers), bogons=())
    nets = [ipaddress.ip_network((rng.getrandbits(24) << 8, 24)) for _ in range(probes)]
    start = time.perf_counter()
    indexed = [safety.why_unsafe(x) is None for x in nets]
    ours = (time.perf_counter() - start) / probes
    start = time.perf_counter()
    scanned = [first_overlap(x, peers) is None for x in nets]
    plain = (time.perf_counter() - start) / probes
    assert indexed == scanned
    return ours, plain


def ignore_lookup(guarded: int, lookups: int = 100_000) -> float:
    """Seconds per fail2ban ignore check (a real Filter) with `guarded` addresses added."""
    from fail2ban.server.filter import Filter
    from fail2ban.server.ipdns import IPAddr
    flt = Filter(None)
    flt.ignoreSelf = False
    base = ipaddress.IPv4Address("198.18.0.0")
    for i in range(guarded):
        flt.addIgnoreIP(str(base + i))
    ips = [IPAddr(f"203.0.113.{i % 250}") for i in range(lookups)]
    start = time.perf_counter()
    for ip in ips:
        flt.inIgnoreIPList(ip, log_ignore=False)
    return (time.perf_counter() - start) / lookups


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1_000_000)
    args = ap.parse_args()
    print(f"{args.hosts:,} distinct host bans, window {WINDOW:.0f}s, one ban every {STEP * 1000:.0f} ms "
          f"(Python {sys.version.split()[0]})\n")
    print("| shape | decisions/s | escalations | held at 10% / 50% / 100% | memory at 10% / 50% / 100% | peak |")
    print("|---|---:|---:|---:|---:|---:|")
    for shape in ("random", "200 /24s"):
        rate, escalations, _, _ = run(shape, args.hosts, trace=False)
        _, _, samples, peak = run(shape, args.hosts, trace=True)
        picks = (samples[0], samples[4], samples[-1])
        held = " / ".join(f"{s[1]:,}" for s in picks)
        mem = " / ".join(f"{s[2] / 2**20:.0f}" for s in picks)
        print(f"| {shape} | {rate:,.0f} | {escalations:,} | {held} | {mem} MiB | {peak / 2**20:.0f} MiB |")
    print("\n| dependency guard cost | f2b-ext | plain | ratio |\n|---|---:|---:|---:|")
    for own, what in ((False, "a bogon /64"), (True, "the server's own /64")):
        ours, plain = narrowing(own)
        print(f"| a ban in {what} holding 600 banned hosts (never escalated) | {ours * 1e6:,.0f} µs "
              f"| {plain * 1e6:,.0f} µs | {plain / ours:,.0f}x |")
    ours, plain = protected_lookup()
    print(f"| is a /24 safe, 10,000 protected peers | {ours * 1e6:,.1f} µs | {plain * 1e6:,.0f} µs "
          f"| {plain / ours:,.0f}x |")
    base = ignore_lookup(0)
    for n in (1_000, 10_000):
        cost = ignore_lookup(n)
        print(f"| fail2ban's ignore check per line, {n:,} guarded addresses (vs none) | {cost * 1e6:.2f} µs "
              f"| {base * 1e6:.2f} µs | {cost / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
