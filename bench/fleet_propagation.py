"""Fleet benchmarks on the lab (f2b_ext/lab/fleet.py: three namespaces, each a clustered
nats-server with TLS, a real fail2ban-server with nftset, and the fleet agent). Root.

1. latency: one ban at a time on A (a kernel line into A's fail2ban); from the moment
   A's fleet action wrote it (the spool row's time) to the element in B's kernel set
   (the fleet jail's nftables set, polled every 2 ms through libnftables inside B's
   namespace). p50/p99 over --bans bans. The anchor: CrowdSec's bouncers poll every 10 s.
2. fleet: --publishers simulated servers (distinct subjects, one connection each,
   published with the administrator's credential) send --per bans each as fast as the
   bus takes them; time until B's kernel set holds every one: bans/s one server applies,
   and B's agent and fail2ban-server CPU seconds and peak memory. --kill also kill -9s
   one nats-server one second into the burst and checks nothing is lost.
3. drain: the same simulated servers publish while B's agent is stopped; then B's agent
   starts and the clock runs from its start to the last element in B's kernel set: the
   remote ban rate one server sustains, without the publishers' own pace in the way.

Each of --paths runs on its own lab, in this one command: `kernel` (remote host bans
written by the agent into its own set, the default) and `fail2ban` (through the fleet
jail: fail2ban's ban path and its nftset action), the naive equivalent.

    python bench/fleet_propagation.py [--bans 200] [--publishers 100] [--per 100] [--kill]
                                      [--drain 200] [--paths kernel,fail2ban]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent.parent / "tests")]

from conftest import kernel_line  # noqa: E402
from f2b_ext.core import nftset  # noqa: E402
from f2b_ext.core.fleet import make_event  # noqa: E402
from f2b_ext.lab.fleet import FLEET_JAIL, REMOTE_SETS, FleetLab, publish_as  # noqa: E402
from f2b_ext.lab.netns import in_netns  # noqa: E402

SETTINGS = dict(rate=1_000_000, burst=10_000_000, hosts=1000)   # no quarantine, no escalation here


class SetWatcher(threading.Thread):
    """Polls B's fleet host set from inside B's namespace; records when each element
    first appeared."""

    def __init__(self, ns: str, every: float, jail: str):
        super().__init__(daemon=True)
        self.ns, self.every, self.seen, self.stop, self.jail = ns, every, {}, False, jail

    def run(self):
        from nftables import Nftables
        with in_netns(self.ns):
            nft = Nftables()
            nft.set_json_output(True)
            name = f"{nftset.jail_key(self.jail)}_h4"
            while not self.stop:
                rc, out, _ = nft.cmd(f"list set {nftset.TABLE} {name}")
                now = time.time()
                if rc == 0:
                    for item in json.loads(out)["nftables"]:
                        for elem in item.get("set", {}).get("elem", []):
                            val = elem["elem"]["val"] if isinstance(elem, dict) else elem
                            self.seen.setdefault(val, now)
                time.sleep(self.every)


def cpu_mem(pid: int) -> tuple[float, int]:
    """(CPU seconds so far, peak RSS in KiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmHWM"))
    return cpu, hwm


def latency(lab: FleetLab, bans: int, jail: str) -> list[float]:
    watcher = SetWatcher(lab.ns["b"], 0.002, jail)
    watcher.start()
    spool = sqlite3.connect(str(lab.dir / "spool-a.sqlite3"))
    out = []
    for i in range(bans):
        host = f"203.0.113.{1 + i % 250}" if i < 250 else f"198.51.100.{1 + i % 250}"
        lab.f2b["a"].append(kernel_line(host))
        end = time.monotonic() + 30
        while host not in watcher.seen and time.monotonic() < end:
            time.sleep(0.005)
        row = spool.execute("SELECT added FROM spool WHERE CAST(data AS TEXT) LIKE ? ORDER BY seq DESC LIMIT 1",
                            (f'%"target":"{host}"%',)).fetchone()
        if host in watcher.seen and row:
            out.append(watcher.seen[host] - row[0])
        time.sleep(0.05)
    watcher.stop = True
    return out


def simulated(publishers: int, per: int, seed: int) -> tuple[list[str], list[bytes]]:
    """publishers * per distinct addresses of 198.18.0.0/15 (not the lab's 198.18.0.0/24),
    each banned by one simulated server sim000..simNNN."""
    rnd = random.Random(seed)
    hosts = rnd.sample(range(1 << 17), publishers * per + 1000)
    hosts = [f"198.{18 + (h >> 16)}.{(h >> 8) & 255}.{h & 255}" for h in hosts
             if (h >> 8) >= 1 and h & 255 not in (0, 255)][:publishers * per]
    now = time.time()
    payloads = [make_event("ban", h, f"sim{i % publishers:03d}", "bench", now, now + 3600, proto="TCP",
                           seq=f"s{seed}b{i}").to_json() for i, h in enumerate(hosts)]
    return hosts, payloads


def publish(lab: FleetLab, payloads: list[bytes], publishers: int) -> dict:
    return publish_as(lab, "a", None, payloads, timeout=10, conf=lab.dir / "init" / "admin" / "fleet.conf",
                      connections=publishers)


def drain(lab: FleetLab, publishers: int, per: int, jail: str) -> dict:
    hosts, payloads = simulated(publishers, per, seed=11)
    lab.stop_agent("b")
    pub = publish(lab, payloads, publishers)
    watcher = SetWatcher(lab.ns["b"], 0.5, jail)
    watcher.start()
    t0 = time.time()
    lab.start_agent("b")
    agent_pid, f2b_pid = lab.agents["b"].pid, lab.f2b["b"].proc.pid
    f2b0 = cpu_mem(f2b_pid)[0]
    want = set(hosts)
    end = time.monotonic() + 900
    cpu = hwm = 0
    while not want <= set(watcher.seen) and time.monotonic() < end:
        cpu, hwm = cpu_mem(agent_pid)
        time.sleep(0.25)
    t1 = max(watcher.seen.get(h, time.time()) for h in hosts)
    cpu, hwm = cpu_mem(agent_pid)
    watcher.stop = True
    f2b1, f2bhwm = cpu_mem(f2b_pid)
    return dict(bans=len(hosts), acked=pub["acked"], missing=len(want - set(watcher.seen)),
                seconds_from_agent_start=round(t1 - t0, 2), bans_per_s=round(len(hosts) / (t1 - t0)),
                agent_cpu_s=round(cpu, 2), agent_peak_rss_mib=round(hwm / 1024, 1),
                f2b_cpu_s=round(f2b1 - f2b0, 2), f2b_peak_rss_mib=round(f2bhwm / 1024, 1))


def fleet_load(lab: FleetLab, publishers: int, per: int, kill: bool, jail: str) -> dict:
    hosts, payloads = simulated(publishers, per, seed=7)
    watcher = SetWatcher(lab.ns["b"], 0.25, jail)
    watcher.start()
    agent_pid, f2b_pid = lab.agents["b"].pid, lab.f2b["b"].proc.pid
    cpu0, f2b0 = cpu_mem(agent_pid)[0], cpu_mem(f2b_pid)[0]
    result = {}

    def killer():
        time.sleep(1)
        lab.kill_nats("c", signal.SIGKILL)
    if kill:
        threading.Thread(target=killer, daemon=True).start()
    t0 = time.time()
    pub = publish(lab, payloads, publishers)
    want = set(hosts)
    end = time.monotonic() + 600
    while not want <= set(watcher.seen) and time.monotonic() < end:
        time.sleep(0.25)
    t1 = max(watcher.seen.get(h, time.time()) for h in hosts)
    watcher.stop = True
    cpu1, hwm = cpu_mem(agent_pid)
    f2b1, f2bhwm = cpu_mem(f2b_pid)
    result.update(bans=len(hosts), acked=pub["acked"], publish_seconds=round(pub["seconds"], 2),
                  errors=pub["errors"], missing=len(want - set(watcher.seen)), seconds=round(t1 - t0, 2),
                  bans_per_s=round(len(hosts) / (t1 - t0)), agent_cpu_s=round(cpu1 - cpu0, 2),
                  agent_peak_rss_mib=round(hwm / 1024, 1), f2b_cpu_s=round(f2b1 - f2b0, 2),
                  f2b_peak_rss_mib=round(f2bhwm / 1024, 1), killed_nats_server=kill)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bans", type=int, default=200)
    ap.add_argument("--publishers", type=int, default=100)
    ap.add_argument("--per", type=int, default=100)
    ap.add_argument("--kill", action="store_true")
    ap.add_argument("--drain", type=int, default=0, metavar="PER",
                    help="bans per simulated server published while B's agent is down")
    ap.add_argument("--paths", default="kernel,fail2ban")
    ap.add_argument("--batch", type=int, default=None, help="the agent's batch (default: the agent's own)")
    args = ap.parse_args()
    for path in args.paths.split(","):
        jail = {"kernel": REMOTE_SETS, "fail2ban": FLEET_JAIL}[path]
        settings = dict(SETTINGS, remote=path, **({"batch": args.batch} if args.batch else {}))
        with FleetLab(agent_settings=settings) as lab:
            time.sleep(3)
            if args.bans:
                lat = sorted(latency(lab, args.bans, jail))
                q = statistics.quantiles(lat, n=100)
                print(f"[{path}] latency ban on A -> element in B's kernel set, {len(lat)} bans: "
                      f"p50 {statistics.median(lat) * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, "
                      f"max {lat[-1] * 1000:.0f} ms", flush=True)
            if args.publishers:
                r = fleet_load(lab, args.publishers, args.per, args.kill, jail)
                print(f"[{path}] {args.publishers} publishers x {args.per} bans: " + json.dumps(r), flush=True)
            if args.drain:
                r = drain(lab, args.publishers or 100, args.drain, jail)
                print(f"[{path}] drain {args.publishers or 100} x {args.drain} bans: " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
