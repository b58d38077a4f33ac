#!/usr/bin/env python3
"""The escalation core under a forged-source flood: one million distinct banned hosts.

    .venv/bin/python bench/escalation_core.py [--hosts 1000000]

Two shapes: addresses random over the whole IPv4 space, and concentrated in 200 /24s.
The flood runs over simulated time (window 1 h, one ban every 36 ms: ~100,000 bans live
in the window at any moment, ten windows in all), so a structure that forgets what left
the window stays flat while one that does not grows tenfold. Reports decisions (bans
judged) per second without tracing, then, in a second pass under tracemalloc, the
memory held at each tenth of the run and its peak.
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

from f2b_ext.escalation import Escalator, HostBan, Safety  # noqa: E402

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
        for cand in esc.observe(HostBan(addr, now, "TCP")):
            escalations += 1
            esc.mark_banned(cand.net, until=now + 3600, now=now)
        decisions += 1
        if trace and (i + 1) % (n // 10) == 0:
            samples.append((i + 1, esc.tracked(), tracemalloc.get_traced_memory()[0]))
    secs = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    if trace:
        tracemalloc.stop()
    return decisions / secs, escalations, samples, peak


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
