#!/usr/bin/env python3
"""How soon a flushed set is enforced again: nftset with the nf_tables event listener
against the interval watchdog alone (the behaviour before it), in one run (root).

    .venv/bin/python bench/nft_event_repair.py [--flushes 20] [--hosts 1000] [--interval 10]

One network namespace (f2b_ext.lab.netns.Lab). Per mode, one NftSetAction in-process in
the namespace (as fail2ban-server runs it) holding --hosts host bans and one /24, each for
an hour; then --flushes times, at a random moment (0.5 s plus up to one watchdog interval
after the last repair, so flushes fall at random points of the watchdog's round; up to
1 s with the listener), `nft flush set` of the jail's host set.
- repair: from the flush's DELSETELEM to the repair's NEWSETELEM, both timed by a
  notification socket of the bench's own in the namespace (the kernel's own clock of
  the gap, not a poll);
- answered: a prober sends a SYN every 5 ms from a banned host (f2b_ext.lab.live.Prober)
  and records every answer; the window is the last answer after the flush minus the
  flush's start.
Modes: `events` (checkinterval 600: only the listener can repair in time) and
`interval` (checkinterval --interval, the listener kept out: the watchdog alone).
Also: what one compare of the jail costs (consistencyCheck on an intact jail), the
figure that bounds the listener's cost (at most 2 compares a second).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import FakeJail  # noqa: E402
from f2b_ext.core import nftevents, nftset  # noqa: E402
from f2b_ext.lab.live import Prober  # noqa: E402
from f2b_ext.lab.netns import Lab, in_netns  # noqa: E402
from f2b_ext.system import nftevents as system_nftevents  # noqa: E402

BANNED = "198.18.0.1"


class Monitor:
    """(monotonic time, NFT_MSG type) of every element message on one set."""

    def __init__(self, lab: Lab, set_name: str):
        with in_netns(lab.server):
            self.sock = system_nftevents.open_socket()
        self.set_name, self.seen, self.stop, self.overruns = set_name, [], False, 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import select
        while not self.stop:
            if not select.select([self.sock], [], [], 0.1)[0]:
                continue
            try:
                data = self.sock.recv(1 << 20)
            except OSError:              # ENOBUFS: a flush of thousands overran the buffer
                self.overruns += 1
                continue
            now = time.monotonic()
            for e in nftevents.parse(data):
                if e.type in (nftevents.NFT_MSG["DELSETELEM"], nftevents.NFT_MSG["NEWSETELEM"]) and \
                        e.name in (self.set_name, None):
                    self.seen.append((now, e.type))

    def after(self, start: float, kind: str):
        return next((t for t, k in list(self.seen) if t >= start and k == nftevents.NFT_MSG[kind]), None)

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


def run_mode(lab: Lab, mode: str, args) -> dict:
    name = f"bench-{mode}"
    jail = FakeJail(name)
    for i in range(args.hosts):
        jail.add_ban(f"198.18.{i // 250}.{i % 250 + 1}", bantime=3600)
    jail.add_ban("203.0.113.0/24", bantime=3600)
    from f2b_ext.plugins.nftset import NftSetAction
    real_open = system_nftevents.open_socket
    if mode == "interval":
        def refused():
            raise OSError("kept out by the bench")
        system_nftevents.open_socket = refused
    try:
        with in_netns(lab.server):
            act = NftSetAction(jail, "nftset", batch="0.02",
                               checkinterval="600" if mode == "events" else str(args.interval))
            act.start()
    finally:
        system_nftevents.open_socket = real_open
    host_set = nftset.set_name(name, BANNED)
    monitor = Monitor(lab, host_set)
    repairs, windows, answers = [], [], 0
    try:
        with in_netns(lab.server):
            compares = []
            for _ in range(20):
                began = time.perf_counter()
                act.consistencyCheck()
                compares.append(time.perf_counter() - began)
        with Prober(lab, [BANNED]) as prober:
            spread = args.interval if mode == "interval" else 1.0
            for _ in range(args.flushes):
                time.sleep(random.uniform(0.5, 0.5 + spread))        # a random point of the watchdog's round
                start = time.monotonic()
                lab.server_sh("nft", "flush", "set", "inet", "f2b_ext", host_set)
                deadline = start + 3 * args.interval + 30
                while monitor.after(start, "NEWSETELEM") is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                # the flush's first message, or its start when the bench's own socket overran
                gone, back = monitor.after(start, "DELSETELEM") or start, monitor.after(start, "NEWSETELEM")
                if back is None:
                    raise SystemExit(f"{mode}: no repair seen within {deadline - start:.0f} s")
                repairs.append(back - gone)
                time.sleep(0.1)                  # answers in flight
                late = [t for t, _ in prober.answered_at if t >= start]
                answers += len(late)
                windows.append(max(late) - start if late else 0.0)
        checks = act._events.checks if act._events else 0
    finally:
        monitor.close()
        with in_netns(lab.server):
            act.stop()
    return dict(mode=mode, repairs=repairs, windows=windows, answers=answers, checks=checks,
                compare_ms=statistics.median(compares) * 1000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flushes", type=int, default=20)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=10.0, help="checkinterval of the interval-only mode")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (a network namespace)")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"{args.flushes} flushes of a set of {args.hosts} hosts (plus one /24 in its own set)")
    results = []
    with Lab() as lab:
        for mode in ("events", "interval"):
            results.append(run_mode(lab, mode, args))
    print("| mode | repair median | repair max | answered window median | max | SYNs answered | "
          "compares by the listener | one compare |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        label = "listener (checkinterval 600)" if r["mode"] == "events" else f"watchdog alone (checkinterval {args.interval:g})"
        print(f"| {label} | {statistics.median(r['repairs']):.3f} s | {max(r['repairs']):.3f} s | "
              f"{statistics.median(r['windows']):.3f} s | {max(r['windows']):.3f} s | {r['answers']} | "
              f"{r['checks']} | {r['compare_ms']:.1f} ms |")
    events, interval = results
    print(f"median repair, watchdog alone / listener: "
          f"{statistics.median(interval['repairs']) / statistics.median(events['repairs']):.0f}x")


if __name__ == "__main__":
    main()
