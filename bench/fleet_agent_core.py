"""The fleet agent's remote-ban path without the bus: how many remote bans/s one agent
decides (parse, refusal table, caps, ledger, fleet escalator), writes to its kernel sets
(one nft transaction per batch, in a network namespace made here) and saves to its
ledger (SQLite, synchronous=FULL, one transaction per batch). The same events through
the real NATS consumer are measured by bench/fleet_propagation.py (`drain`); the gap
between the two is the bus. Root.

    python bench/fleet_agent_core.py [--bans 50000] [--batch 256]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from f2b_ext.core.fleet import RateLimit, make_event, subject_for  # noqa: E402
from f2b_ext.system.fleet_agent import Agent, AgentConfig  # noqa: E402
from f2b_ext.system.fleet_sets import AgentSets  # noqa: E402
from f2b_ext.lab.netns import in_netns  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bans", type=int, default=50000)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    ns = f"f2bx-core-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with tempfile.TemporaryDirectory() as tmp, in_netns(ns):
            cfg = AgentConfig(server="b", nats=["tls://198.18.0.2:4222"], spool=f"{tmp}/spool.sqlite3",
                              status=f"{tmp}/status.json", bogons="none", hosts=1000)
            agent = Agent(cfg, inbox=SimpleNamespace(ban=None, unban=None), sets=AgentSets())
            agent.receiver.ratelimit = RateLimit(1e9, 1e9, 1)          # no quarantine here
            agent.sets.setup()
            now = time.time()
            hosts = [f"198.{18 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}" for i in range(256, 256 + args.bans)]
            msgs = [SimpleNamespace(data=make_event("ban", h, f"sim{i % 100:03d}", "bench", now, now + 3600,
                                                    proto="TCP", seq=f"c{i}").to_json(),
                                    subject=subject_for(f"sim{i % 100:03d}")) for i, h in enumerate(hosts)]
            cpu0, t0 = time.process_time(), time.perf_counter()

            async def run():
                for i in range(0, len(msgs), args.batch):
                    await agent._handle(msgs[i:i + args.batch], [])
            asyncio.run(run())
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            held = agent.sets.held()
            t1 = time.perf_counter()
            asyncio.run(agent.check())
            check = time.perf_counter() - t1
            print(f"{len(msgs)} remote bans in batches of {args.batch}: {wall:.2f} s, {len(msgs) / wall:,.0f} bans/s, "
                  f"CPU {cpu:.2f} s ({cpu / len(msgs) * 1e6:.0f} us/ban); kernel holds {len(held)}; "
                  f"one full check of the sets against the ledger {check:.2f} s; "
                  f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    finally:
        subprocess.run(["ip", "netns", "del", ns])


if __name__ == "__main__":
    main()
