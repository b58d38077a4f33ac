#!/usr/bin/env python3
"""Bans per second through a real fail2ban-server into the kernel: f2b-ext's `nftset`
against fail2ban's stock `nftables` action, in one run (root).

    .venv/bin/python bench/ban_throughput.py [--hosts 20000] [--subnets 200] [--chunk 1000]

One network namespace (f2b_ext.lab.netns.Lab; no packet is sent), one Debian fail2ban-server
running as root inside it with its own config, socket and on-disk database (as in
production), and two jails that differ only in their action. Each jail is handed the
same bans with `fail2ban-client set JAIL banip ...` in chunks: 20,000 distinct hosts
(198.18.0.0/16) then 200 subnets (198.19.0.0/24 ... 198.19.199.0/24). banip goes through
the same actions code as a filter's ban (Actions.__checkBan: ban list, database, every
action of the jail). The clock runs from the first banip until the kernel's set holds
every element (polled with `nft list set`); bans per second = elements / that time.
The stock action forks `nft` per ban, and its set (ipv4_addr, no interval flag) cannot
hold a subnet, so it is timed for what it can hold and its subnet failures are counted.
A third jail with a no-op action measures fail2ban's own cost per ban: the ceiling. A
fourth, `bench-guarded`, is nftset.py plus subnet-escalate.py as the shipped jails use it:
the dependency guard on (this namespace's addresses and gateway in the ignore list, a
refresh thread), every host ban counted by the escalator, and the hosts in 198.18.0.0/16,
a bogon, so every ban past the fifth of a /24 runs the narrowing search (the flood case
that once cost O(64 N) per ban). Its rate next to bench-nftset's is the guard's and the
escalator's cost, in the same run.
"""
from __future__ import annotations

import argparse
import ipaddress
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from f2b_ext.core import nftset  # noqa: E402
from f2b_ext.lab.fail2ban_server import Fail2banServer  # noqa: E402
from f2b_ext.lab.netns import Lab  # noqa: E402

JAILS = """[DEFAULT]
ignoreself = false
usedns = no
backend = polling
filter = netfilter
logpath = {log}
bantime = 1h

[bench-nftset]
enabled = true
action = nftset.py

[bench-stock]
enabled = true
action = nftables[type=allports]

[bench-null]
enabled = true
action = bench-null.py

[bench-guarded]
enabled = true
action = nftset.py
         subnet-escalate.py[hosts=5, nets=3, window=1h, forgedschedule=30m]
"""

# fail2ban's own cost per ban, measured with an action that does nothing: the ceiling
# any action can reach through fail2ban's banning path.
NULL_ACTION = """from fail2ban.server.action import ActionBase


class Action(ActionBase):
    def ban(self, aInfo):
        pass

    def unban(self, aInfo):
        pass
"""

# (jail, nft set(s) holding its bans)
SETS = {**{jail: tuple(f"inet f2b_ext {nftset.set_name(jail, net)}" for net in ("198.18.0.1", "198.19.0.0/24"))
           for jail in ("bench-nftset", "bench-guarded")},
        "bench-stock": ("inet f2b-table addr-set-bench-stock",),
        "bench-null": ()}
ELEMENT = re.compile(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b")


def workload(hosts: int, subnets: int) -> list[str]:
    base = int(ipaddress.IPv4Address("198.18.0.1"))
    return ([str(ipaddress.IPv4Address(base + i)) for i in range(hosts)] +
            [f"198.19.{i}.0/24" for i in range(subnets)])


def held(lab: Lab, jail: str) -> int:
    return sum(len(ELEMENT.findall(lab.server_sh("nft", "list", "set", *name.split(), check=False)))
               for name in SETS[jail])


def run_jail(lab: Lab, f2b: Fail2banServer, jail: str, bans: list[str], chunk: int, expect: int) -> dict:
    start = time.monotonic()
    for i in range(0, len(bans), chunk):
        f2b.client("set", jail, "banip", *bans[i:i + chunk])
    accepted = time.monotonic() - start
    if not SETS[jail]:
        return {"jail": jail, "accepted_s": accepted, "kernel_s": accepted, "held": len(bans),
                "rate": len(bans) / accepted}
    count, last_change, last = 0, time.monotonic(), -1
    while count < expect and time.monotonic() - last_change < 10:
        count = held(lab, jail)
        if count != last:
            last, last_change = count, time.monotonic()
        if count < expect:
            time.sleep(0.1)
    done = (last_change if count < expect else time.monotonic()) - start
    return {"jail": jail, "accepted_s": accepted, "kernel_s": done, "held": count,
            "rate": count / done if done else float("inf")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=20000)
    ap.add_argument("--subnets", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=1000, help="addresses per fail2ban-client banip call")
    args = ap.parse_args(argv)
    bans = workload(args.hosts, args.subnets)
    with Lab() as lab:
        f2b = Fail2banServer(JAILS, netns=lab.server)
        (f2b.conf / "action.d" / "bench-null.py").write_text(NULL_ACTION)
        try:
            f2b.start(jail="bench-null")
            results = [run_jail(lab, f2b, "bench-null", bans, args.chunk, len(bans)),
                       run_jail(lab, f2b, "bench-nftset", bans, args.chunk, len(bans)),
                       run_jail(lab, f2b, "bench-stock", bans, args.chunk, args.hosts),
                       run_jail(lab, f2b, "bench-guarded", bans, args.chunk, len(bans))]
            stock_errors = sum(1 for line in f2b.server_log().splitlines()
                               if "ERROR" in line and "bench-stock" in line and "Failed to execute ban" in line)
        finally:
            f2b.close()
    null, nft, stock, guarded = results
    print(f"{args.hosts:,} hosts + {args.subnets} /24 subnets per jail, banip in chunks of {args.chunk}\n")
    print("| action | bans accepted by fail2ban | kernel set holds all | elements held | bans/s |")
    print("|---|---:|---:|---:|---:|")
    for r, name in ((null, "no-op action (fail2ban's own cost)"), (nft, "f2b-ext nftset.py"),
                    (stock, "stock nftables (allports)"),
                    (guarded, "f2b-ext nftset.py + subnet-escalate.py (dependency guard)")):
        print(f"| {name} | {r['accepted_s']:.2f} s | {r['kernel_s']:.2f} s | {r['held']:,} / {len(bans):,} "
              f"| {r['rate']:,.0f} |")
    print(f"\nratio nftset / stock: {nft['rate'] / stock['rate']:.0f}x "
          f"(stock held {max(stock['held'] - args.hosts, 0)} of the {args.subnets} subnets; "
          f"fail2ban logged {stock_errors} failed bans for it)")
    print(f"nftset + subnet-escalate (guarded) / nftset alone: {guarded['rate'] / nft['rate']:.0%}")
    print(f"nftset reaches {nft['rate'] / null['rate']:.0%} of what fail2ban itself allows "
          f"(no-op action / stock: {null['rate'] / stock['rate']:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
