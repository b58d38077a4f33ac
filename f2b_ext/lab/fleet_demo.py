"""Adapter: `f2b-ext demo --fleet`, the fleet on this machine's kernel.

How it works: builds the fleet lab (f2b_ext.lab.fleet: three servers a, b, c in network
namespaces, each with a clustered nats-server, a real fail2ban-server with nftset and
the fleet agent), then plays three acts:
1. a port scan on server A: the kernel's LOG lines of the scan go into A's log, A's
   fail2ban bans the scanner, and the fleet drops it on B and C; the latency is from
   A's ban (its fleet action's spool row) to the element in B's and C's kernels, which a
   SetWatch (libnftables in each namespace, every 5 ms) sees appear;
2. server C, compromised, bans A's resolver: C's credential may publish on its own
   subject, so the bus carries it, and every receiver refuses it;
3. C forges a ban in A's name: nats-server refuses it (C may publish only as C).
It ends with `f2b-ext fleet status` of B and removes every namespace and process, also
on failure, Ctrl-C or SIGTERM. Nothing leaves the namespaces; only documentation and
benchmark ranges are used.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import time

from f2b_ext.core.fleet import make_event
from f2b_ext.lab.fleet import LOCAL_JAIL, FleetLab, SetWatch, publish_as
from f2b_ext.lab.netns import until

SCANNER = "203.0.113.10"
RESOLVER_OF_A = "192.0.2.53"           # A's resolver: A publishes it as protected
FORGED_IN_A_NAME = "203.0.113.66"
SCAN_PORTS = (22, 23, 80, 3389)
FORGED_CAP = "10m"                     # the agents' forged_cap (their default, said aloud)


def environment_problems() -> list[str]:
    """What keeps the fleet demo from running here, one line each."""
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root (network namespaces, netfilter)")
    for tool in ("nats-server", "fail2ban-server", "nft", "ip"):
        if not shutil.which(tool):
            problems.append(f"needs {tool}, which is not installed")
    try:
        import nats  # noqa: F401
    except ImportError:
        problems.append("needs nats-py, which is not installed (pip install 'f2b-ext[fleet]')")
    return problems


def scan_lines(src: str, dst: str, ports=SCAN_PORTS) -> list[str]:
    """The kernel's LOG lines of a SYN scan from `src` (as rsyslog writes them on Debian 12)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    return [f"{stamp} server-a kernel: [ 4242.{i:06d}] FINAL_REJECT: IN=eth0 OUT= "
            f"MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC={src} DST={dst} LEN=60 TOS=0x00 PREC=0x00 "
            f"TTL=51 ID={54321 + i} DF PROTO=TCP SPT={40000 + i} DPT={port} WINDOW=1024 RES=0x00 SYN URGP=0"
            for i, port in enumerate(ports)]


class FleetDemo:
    def __init__(self, lab: FleetLab, out):
        self.lab, self.out = lab, out
        self.surprises = 0

    def say(self, text: str = ""):
        print(text, flush=True)

    def check(self, ok: bool, good: str, bad: str):
        if not ok:
            self.surprises += 1
        self.say(f"    {good}" if ok else "    " + self.out.red(f"UNEXPECTED: {bad}"))

    def listed_left(self, n: str, target: str):
        return self.lab.listed(n).get(ipaddress.ip_network(target), "absent")

    def scan(self):
        lab = self.lab
        with SetWatch(lab, "abc") as watch:
            written = time.time()
            lines = scan_lines(SCANNER, lab.addr["a"])
            lab.f2b["a"].append(*lines)
            from f2b_ext.lab.demo import condensed
            for line in lines[:2]:
                self.say("    A's log   " + condensed(line))
            self.say(self.out.dim(f"    A's log   ... and {len(lines) - 2} more lines like these"))
            on_a = watch.when("a", SCANNER, 30)
            on = {n: watch.when(n, SCANNER, 30) for n in "bc"}
        banned = self.spooled(SCANNER)
        if on_a is None or banned is None:
            self.check(False, "", f"A did not ban {SCANNER} in 30 s (kernel {on_a}, fleet event {banned})")
            return
        self.say(f"    server A  fail2ban ({LOCAL_JAIL} jail) banned {SCANNER} {banned - written:.2f} s after "
                 f"the lines were written (it polls the log), in A's kernel after {on_a - written:.2f} s")
        for n in "bc":
            self.check(on[n] is not None,
                       f"server {n.upper()}  drops {SCANNER}: in its kernel " + self.out.green(
                           f"{(on[n] or 0) - banned:.3f} s after A's ban") + " (the fleet's latency)",
                       f"{SCANNER} is not in {n.upper()}'s kernel 30 s after A's ban")
        mine, left = self.listed_left("a", SCANNER), self.listed_left("b", SCANNER)
        self.check(left not in ("absent", None) and mine not in ("absent", None),
                   f"server B  lists {SCANNER} as banned for {left:.0f} s more, A for {mine:.0f} s: one server's "
                   f"report of forgeable evidence (SYNs) lasts at most {FORGED_CAP} elsewhere"
                   if left not in ("absent", None) and mine not in ("absent", None) else "",
                   f"listed by A: {mine}, by B: {left}")

    def spooled(self, target: str):
        """When A's fleet action spooled its ban of `target` (in fail2ban's ban thread: the
        moment of A's ban as the fleet knows it), or None."""
        import sqlite3
        with sqlite3.connect(f"file:{self.lab.dir / 'spool-a.sqlite3'}?mode=ro", uri=True) as db:
            row = db.execute("SELECT min(added) FROM spool WHERE CAST(data AS TEXT) LIKE ?",
                             (f'%"target":"{target}"%',)).fetchone()
        return row[0] if row else None

    def forged_resolver_ban(self):
        lab = self.lab
        now = time.time()
        ev = make_event("ban", RESOLVER_OF_A, "c", "local", now, now + 3600, proto="TCP", seq=f"demo{os.getpid()}")
        r = publish_as(lab, "c", "f2bx.bans.c", [ev.to_json()])
        self.say(f"    server C  publishes a ban of {RESOLVER_OF_A} on its own subject f2bx.bans.c: "
                 f"{'the bus carries it' if r['acked'] else 'not carried: ' + '; '.join(r['errors'])}")
        for n in "ab":
            needle = f"refused ban {RESOLVER_OF_A} from c: "
            seen = until(lambda: needle in lab.agent_log(n), 15)
            reason = lab.agent_log(n).split(needle)[-1].splitlines()[0] if seen else ""
            self.check(bool(seen), f"server {n.upper()}  refuses it: {reason}",
                       f"server {n.upper()}'s agent did not refuse it")
        time.sleep(1)
        held = [n for n in "abc" if ipaddress.ip_network(RESOLVER_OF_A) in lab.held(n)]
        self.check(not held, f"no kernel holds {RESOLVER_OF_A}", f"{', '.join(held)} hold(s) {RESOLVER_OF_A}")

    def forged_in_a_name(self):
        now = time.time()
        ev = make_event("ban", FORGED_IN_A_NAME, "a", "local", now, now + 3600, proto="TCP", seq=f"forged{os.getpid()}")
        r = publish_as(self.lab, "c", "f2bx.bans.a", [ev.to_json()])
        refusal = next((e for e in r["errors"] if "permissions violation" in e.lower()), "")
        self.check(r["acked"] == 0 and bool(refusal), f"nats-server refuses it: {refusal.strip()[:100]}",
                   f"published: {r}")


def run(out) -> int:
    """Play the fleet demo; 0 if every outcome was as expected."""
    signal.signal(signal.SIGTERM, _interrupt)
    print(out.bold("f2b-ext fleet demo") + ": three servers (a, b, c) in network namespaces on this kernel, each "
          "with\n  its own nats-server (one cluster, TLS, a credential per server from `f2b-ext fleet init`), "
          "fail2ban-server\n  (jails local and f2b-ext-fleet, nftset) and fleet agent. Building it takes "
          "10-20 s...", flush=True)
    started = time.monotonic()
    with FleetLab(agent_settings={"forged_cap": FORGED_CAP}, per_server={"a": {"protect": RESOLVER_OF_A}}) as lab:
        # every agent has read the others' protected addresses
        until(lambda: all(len(lab.status(n).get("protected_by", {})) == 2 for n in "abc"), 60)
        demo = FleetDemo(lab, out)
        demo.say(f"  up in {time.monotonic() - started:.0f} s: servers " +
                 ", ".join(f"{n.upper()} {a}" for n, a in lab.addr.items()) +
                 f"; A's resolver {RESOLVER_OF_A} is in what A publishes as never to be banned.")
        acts = ((f"A port scan on server A, from {SCANNER}", demo.scan),
                (f"Server C, compromised, bans A's resolver {RESOLVER_OF_A}", demo.forged_resolver_ban),
                (f"Server C forges a ban of {FORGED_IN_A_NAME} in A's name (subject f2bx.bans.a)",
                 demo.forged_in_a_name))
        for n, (title, play) in enumerate(acts, 1):
            demo.say()
            demo.say(out.bold(f"{n}. {title}"))
            play()
        demo.say()
        demo.say(out.bold("$ f2b-ext fleet status") + out.dim("   (on server B)"))
        demo.say(lab.fleet_cli("status", "--status", str(lab.dir / "status-b.json"), ns=lab.ns["b"]).rstrip())
        demo.say("\nCleaning up: the agents, fail2ban-servers, nats-servers and namespaces go away now.")
    if demo.surprises:
        print(out.red(f"{demo.surprises} outcome(s) were not as expected"))
    return 1 if demo.surprises else 0


def _interrupt(*_):
    raise KeyboardInterrupt
