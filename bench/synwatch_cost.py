#!/usr/bin/env python3
"""`f2b-ext synwatch`: CPU per sample and memory with 10,000 and 100,000 half-open
connections, for both readers, against the stock tools an admin would run instead.

    .venv/bin/python bench/synwatch_cost.py [--sizes 10000,100000] [--samples 5]

For each size a lab (f2b_ext.lab.netns, root) gets one listener whose backlog holds them all
(net.core.somaxconn and tcp_synack_retries raised inside the server namespace only,
where the kernel forgets them with the namespace), SYNs from that many distinct
addresses of 198.18.0.0/15 whose SYN-ACKs go unanswered, and then, in the server
namespace, a child process takes `--samples` samples with each reader and runs
  - `ss -Htn state syn-recv` (iproute2, the kernel filters by state too), and
  - `netstat -tan` (net-tools, the seed's cron job; it lists every socket),
which only list entries: counting them per source and /24, as the watcher does, would
cost those pipelines more. The four take turns in every round (entries age out while
they run), and the median round is shown, also per 1,000 entries seen; a ratio above 1
means the stock tool costs more. CPU is user + system time (getrusage), so the
kernel's work for the dump or the /proc text counts, and so does starting ss/netstat. Memory: the child's peak RSS, and the tally's
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
    """Runs inside the server namespace: the measurements, as JSON on stdout. The methods
    take turns in every round, so each sees the same table (entries age out meanwhile)."""
    from f2b_ext.core import synwatch as sw
    from f2b_ext.system.synwatch import NetlinkReader, ProcReader
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    runs: dict = {}

    def ours(reader):
        start = cpu()
        tally = sw.Tally(sw.Thresholds())
        reader.sample(tally)
        sw.summary_line(tally, sw.offenders(tally))
        return cpu() - start, tally.total, len(tally.hosts.counts) + len(tally.nets.counts)

    def stock(cmd, counted):
        start = cpu(resource.RUSAGE_CHILDREN)
        listing = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return cpu(resource.RUSAGE_CHILDREN) - start, sum(1 for line in listing.splitlines() if counted(line)), None

    methods = {"netlink": lambda: ours(NetlinkReader()), "proc": lambda: ours(ProcReader()),
               "ss": lambda: stock(["ss", "-Htn", "state", "syn-recv"], lambda line: True)}
    if shutil.which("netstat"):
        methods["netstat"] = lambda: stock(["netstat", "-tan"], lambda line: "SYN_RECV" in line)
    for _ in range(samples):
        for name, run in methods.items():
            runs.setdefault(name, []).append(run())
    out = {"base_rss_mb": base_rss, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    for name, results in runs.items():
        results.sort()
        secs, entries, keys = results[len(results) // 2]          # the median sample
        out[name] = {"cpu": secs, "entries": entries, "keys": keys}
    return out


def flood(lab, n: int) -> int:
    """n distinct sources of 198.18.0.0/15 in SYN_RECV; returns how many the kernel holds."""
    from f2b_ext.lab.netns import until
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
    from f2b_ext.lab.netns import Lab
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
    print("| half-open | method | CPU per sample | per 1,000 entries | entries seen | tally keys | vs `ss` | vs `netstat -tan` |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    per_k = lambda r: r["cpu"] * 1000 / max(r["entries"], 1) * 1000          # ms per 1,000 entries
    for n, held, out in rows:
        for name in ("netlink", "proc", "ss", "netstat"):
            if name not in out:
                continue
            r = out[name]
            ratio = lambda tool: f"{per_k(out[tool]) / per_k(r):.2f}x" if tool in out and tool != name else ""
            label = {"ss": "`ss -Htn state syn-recv` (lists only)", "netstat": "`netstat -tan` (lists only)"}.get(name, f"synwatch, {name}")
            keys = f"{r['keys']:,}" if r["keys"] else ""
            print(f"| {n:,} ({held:,} held) | {label} | {r['cpu'] * 1000:.1f} ms | {per_k(r):.2f} ms | "
                  f"{r['entries']:,} | {keys} | {ratio('ss')} | {ratio('netstat')} |")
        print(f"| {n:,} | peak RSS of the sampling process | {out['peak_rss_mb']} MB (of which "
              f"{out['base_rss_mb']} MB before the first sample) | | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
