#!/usr/bin/env python3
"""`f2b-ext synwatch`: CPU per sample and memory with 10,000 and 100,000 half-open
connections, for both readers, against the stock tools an admin would run instead.

    .venv/bin/python bench/synwatch_cost.py [--sizes 10000,100000] [--samples 5]

For each size a lab (f2b_ext.lab, root) gets one listener whose backlog holds them all
(net.core.somaxconn and tcp_synack_retries raised inside the server namespace only,
where the kernel forgets them with the namespace), SYNs from that many distinct
addresses of 198.18.0.0/15 whose SYN-ACKs go unanswered, and then, in the server
namespace, a child process takes `--samples` samples with each reader and runs
  - `ss -Htn state syn-recv` (iproute2, the kernel filters by state too), and
  - `netstat -tan` (net-tools, the seed's cron job; it lists every socket),
which only list entries: counting them per source and /24, as the watcher does, would
cost those pipelines more. CPU is user + system time (getrusage), so the kernel's work
for the dump or the /proc text counts. Memory: the child's peak RSS, and the tally's
keys (bounded by --capacity, 65,536 by default). Prints a Markdown table for
BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu(who=resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def child(samples: int) -> dict:
    """Runs inside the server namespace: the measurements, as JSON on stdout."""
    from f2b_ext import synwatch as sw
    from f2b_ext.synwatcher import NetlinkReader, ProcReader
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    out = {"base_rss_mb": base_rss}
    for reader in (NetlinkReader(), ProcReader()):
        costs = []
        for _ in range(samples):
            start = cpu()
            tally = sw.Tally(sw.Thresholds())
            reader.sample(tally)
            found = sw.offenders(tally)
            sw.summary_line(tally, found)
            costs.append(cpu() - start)
        out[reader.name] = {"cpu": sorted(costs)[len(costs) // 2], "entries": tally.total,
                            "keys": len(tally.hosts.counts) + len(tally.nets.counts)}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    for name, cmd in (("ss", ["ss", "-Htn", "state", "syn-recv"]), ("netstat", ["netstat", "-tan"])):
        if not shutil.which(cmd[0]):
            continue
        costs = []
        for _ in range(samples):
            start = cpu(resource.RUSAGE_CHILDREN)
            listing = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            costs.append(cpu(resource.RUSAGE_CHILDREN) - start)
        rows = sum(1 for line in listing.splitlines() if name == "ss" or "SYN_RECV" in line)
        out[name] = {"cpu": sorted(costs)[len(costs) // 2], "entries": rows}
    return out


def flood(lab, n: int) -> int:
    """n distinct sources of 198.18.0.0/15 in SYN_RECV; returns how many the kernel holds."""
    from f2b_ext.lab import until
    pool = ipaddress.ip_network("198.18.0.0/15")
    sources = [str(pool[i + 1]) for i in range(n)]
    count = lambda: lab.server_sh("ss", "-Htn", "state", "syn-recv").count("\n")
    held = 0
    for _ in range(20):                  # veth drops what overflows its backlog: send again
        for i in range(0, n, 500):
            lab.syn_flood(sources[i:i + 500], 80, sport=20000)     # same 4-tuples: no duplicates
            time.sleep(0.002)
        held = until(lambda: (c := count()) >= n and c, 2) or count()
        if held >= n:
            break
    return held


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.samples)))
        return 0
    from f2b_ext.lab import Lab
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        with Lab() as lab:
            lab.mute_forged_sources()
            lab.server_sh("sysctl", "-qw", f"net.core.somaxconn={4 * n}", "net.ipv4.tcp_synack_retries=8",
                          f"net.ipv4.tcp_max_syn_backlog={4 * n}")
            listener = lab.serve(80, 4 * n)
            held = flood(lab, n)
            out = json.loads(lab.server_sh(sys.executable, str(Path(__file__).resolve()), "--child",
                                           "--samples", str(args.samples)))
            listener.close()
        rows.append((n, held, out))
    print("| half-open | reader | CPU per sample | entries seen | tally keys | vs `ss` | vs `netstat -tan` |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n, held, out in rows:
        for name in ("netlink", "proc"):
            r = out[name]
            ratio = lambda tool: f"{out[tool]['cpu'] / r['cpu']:.2f}x" if tool in out else "n/a"
            print(f"| {n:,} ({held:,} held) | {name} | {r['cpu'] * 1000:.1f} ms | {r['entries']:,} | "
                  f"{r['keys']:,} | {ratio('ss')} | {ratio('netstat')} |")
        for tool in ("ss", "netstat"):
            if tool in out:
                print(f"| {n:,} | `{tool}` (listing only) | {out[tool]['cpu'] * 1000:.1f} ms | "
                      f"{out[tool]['entries']:,} | | | |")
        print(f"| {n:,} | peak RSS of the sampling process | {out['peak_rss_mb']} MB "
              f"(of which {out['base_rss_mb']} MB before the first sample) | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
