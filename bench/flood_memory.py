#!/usr/bin/env python3
"""fail2ban-server's memory under a sustained random-source flood, and a real scanner's
log-to-drop latency during it: the shipped [f2b-ext-inbound] jail against the same jail
with fail2ban's defaults for the memory settings (findtime 10m, maxmatches = maxretry),
in one run (root).

    .venv/bin/python bench/flood_memory.py [--minutes 10] [--rate 3000] [--scan-every 5]

Two labs (f2b_ext.lab.netns.Lab: a server and a remote namespace joined by a veth), each with
the seeds' nftables firewall (f2b_ext.lab.live.NFT_RULES: LOG then REJECT) and its own real
fail2ban-server running as root in the server namespace with the shipped
jail.d/f2b-ext.conf and `nftset` (jail.local enables [f2b-ext-inbound] and points it at
this run's log; ignoreself/usedns off, as the lab has no resolver). Only the memory
setting differs: `shipped` runs the jail as shipped, `naive` sets findtime = 10m back
(fail2ban's default, and the jail's before; maxmatches is fail2ban's default in both:
it does not bound a one-line ticket). Not run by default: `--only before` is the shipped
jail without found-limit.py (as shipped before it: a "Found" log line per flood line),
to compare latency and CPU with `--only shipped --only before` in one run.

Which lines are real: the flood's lines are written to each jail's log by this script,
`--rate` lines a second in batches every 0.1 s, in the kernel's format (nf_log_syslog's
fields for a TCP SYN, rsyslog's RFC 3339 prefix), each from a random source in
2001:db8::/32 (a fresh address each line: the documentation prefix is large enough that
10 minutes never repeat one, so no flood source is ever banned, as with forged sources).
The scanner is real packets: every `--scan-every` seconds a new host (198.18.N.7, a new
/24 each, so subnet-escalate never widens) sends SYNs to ports 23, 25 and 80 50 ms apart,
which the kernel rejects with a RST; the line each SYN makes is written by this script at
the moment the SYN leaves (the kernel would print it then; the lab does not turn on the
host-global nf_log_all_netns, so it needs no kernel lock and disturbs nobody). Then the
scanner knocks on port 22 every 20 ms (accepted by the firewall, nothing listens: a RST
while not banned, no line) until it has had no answer for 1 s; the latency is from its
first line in the log to the first knock the kernel dropped for good (the knock after the
last answered one), resolution 20 ms; a scanner still answered 15 s after its first line
counts as not dropped.

Every `--sample` seconds: the fail2ban-server's VmRSS (/proc/PID/status), its CPU time
(/proc/PID/stat: the summary's CPU share is CPU seconds per second of the run, 1.0 = one
core) and the jail's "Currently failed" (`fail2ban-client status`). A server whose RSS passes --max-rss-mb is
stopped (the run goes on with the other). Writes a JSON of all samples and latencies
(--json) and prints the summary table of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import select
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from f2b_ext.lab.fail2ban_server import Fail2banServer  # noqa: E402
from f2b_ext.lab.netns import NF_LOG_ALL_NETNS, SERVER_V4, SERVER_V6, Lab, Sysctls, in_netns, syn_frame  # noqa: E402
from f2b_ext.lab.live import apply_firewall  # noqa: E402

JAIL = "f2b-ext-inbound"
LOCAL = """[DEFAULT]
ignoreself = false
usedns = no

[f2b-ext-inbound]
enabled = true
backend = {backend}
logpath = {{log}}
ignoreip = 127.0.0.1/8 ::1 {server_v4} {server_v6}
{extra}"""
CONFIGS = {
    "shipped": "",
    # fail2ban's own default findtime (jail.conf), as the jail shipped before; maxmatches
    # is fail2ban's default (= maxretry) in both
    "naive": "findtime = 10m\n",
    # not run by default (--only before): the jail as shipped before found-limit.py, with
    # a "Found" line in fail2ban's log for every flood line
    "before": ("action = %(banaction_f2b_ext)s[direction=in]\n"
               "    subnet-escalate.py[hosts=5, nets=3, window=1h, forgedschedule=30m, maxrate=10/1h, maxheld=64]\n"),
}
DEFAULT_CONFIGS = ("shipped", "naive")
SCAN_PORTS = (23, 25, 80)
KNOCK_PORT = 22
NOT_DROPPED_AFTER = 15.0


class NoLogAllNetns(Sysctls):
    """The lab's sysctls, except the host-global nf_log_all_netns: this benchmark writes
    the lines itself, so the kernel need not print any (and other sessions' labs are
    not disturbed)."""

    def set(self, path, value):
        if Path(path) != NF_LOG_ALL_NETNS:
            super().set(path, value)


def stamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}+00:00"


def uptime() -> str:
    return f"[{time.monotonic():12.6f}]"


class Run:
    """One lab, one fail2ban-server, its log, its scanner."""

    def __init__(self, name: str, extra: str, work: Path, backend: str = "pyinotify"):
        self.name = name
        self.lab = Lab(sysctls=NoLogAllNetns()).__enter__()
        self.f2b = None
        try:
            apply_firewall(self.lab, "nft")
            local = LOCAL.format(server_v4=SERVER_V4, server_v6=SERVER_V6, extra=extra, backend=backend)
            self.f2b = Fail2banServer(local, netns=self.lab.server, workdir=work / name)
            self.f2b.start(jail=JAIL, timeout=60)
        except BaseException:
            self.close()
            raise
        self.pid = self.f2b.proc.pid
        self.log = open(self.f2b.log, "a", buffering=1 << 20)
        self.lock = threading.Lock()
        mac = (self.lab.server_mac + ":" + self.lab.remote_mac).split(":")
        self.mac4 = ":".join(mac + ["08", "00"])
        self.mac6 = ":".join(mac + ["86", "dd"])
        self.samples: list[dict] = []
        self.latencies: list[float | None] = []
        self.scanned_at: list[float] = []      # when each scanner's first line was written (monotonic)
        self.stopped_at: float | None = None
        self.scanned = 0
        self.started = 0.0
        self.scan_lines = 0                     # the scanners' lines written (they count as failures too)

    def write(self, lines: list[str]):
        with self.lock:
            self.log.write("".join(lines))
            self.log.flush()

    def flood_line(self, rnd: random.Random, ident: int) -> str:
        src = ipaddress.IPv6Address((0x20010db8 << 96) | rnd.getrandbits(96)).exploded
        dst = ipaddress.IPv6Address(SERVER_V6).exploded
        return (f"{stamp()} lab kernel: {uptime()} FINAL_REJECT: IN={self.lab.server_if} OUT= MAC={self.mac6} "
                f"SRC={src} DST={dst} LEN=60 TC=0 HOPLIMIT=64 FLOWLBL={ident & 0xFFFFF} PROTO=TCP "
                f"SPT={1024 + ident % 60000} DPT={rnd.choice((22, 23, 80, 443, 3389, 8080))} WINDOW=64240 RES=0x00 SYN URGP=0 \n")

    def scan_line(self, src: str, sport: int, dport: int, ident: int) -> str:
        return (f"{stamp()} lab kernel: {uptime()} FINAL_REJECT: IN={self.lab.server_if} OUT= MAC={self.mac4} "
                f"SRC={src} DST={SERVER_V4} LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID={ident} DF PROTO=TCP "
                f"SPT={sport} DPT={dport} WINDOW=64240 RES=0x00 SYN URGP=0 \n")

    def cpu_s(self) -> float | None:
        """The server's CPU seconds so far (user + system, /proc/PID/stat)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kb(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def failed(self) -> tuple[int | None, int | None]:
        """(currently failed, total failed) of `fail2ban-client status`: the addresses
        held, and how many lines the jail has counted (the flood's lines written minus
        this is how far fail2ban reads behind)."""
        out = self.f2b.client("status", JAIL, check=False).stdout
        found = {}
        for line in out.splitlines():
            for what in ("Currently failed", "Total failed"):
                if f"{what}:" in line:
                    found[what] = int(line.split(":")[1])
        return found.get("Currently failed"), found.get("Total failed")

    def stop_server(self):
        if self.f2b and self.f2b.proc:
            self.f2b.stop(kill=True)

    def close(self):
        if getattr(self, "log", None):
            self.log.close()
        if self.f2b:
            self.f2b.close()
        self.lab.close()


def flood(runs: list[Run], rate: int, stop: threading.Event, counts: dict):
    rnd = random.Random(20261130)
    ident, batch_every = 0, 0.1
    start = time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - start) * rate)
        n = due - counts["flood"]
        if n > 0:
            for run in runs:
                if run.stopped_at is None:
                    lines = [run.flood_line(rnd, ident + i) for i in range(n)]
                    run.write(lines)
            ident += n
            counts["flood"] += n
        time.sleep(batch_every)


def scanner(run: Run, every: float, stop: threading.Event):
    """A new scanning host every `every` seconds; its latency from first line to drop."""
    with in_netns(run.lab.remote):
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    tx.bind((run.lab.remote_if, 0))
    rx.bind((run.lab.remote_if, 0))
    answered: dict[tuple[bytes, int], float] = {}

    def receive():
        while not stop.is_set():
            if not select.select([rx], [], [], 0.1)[0]:
                continue
            frame = rx.recv(2048)
            if len(frame) >= 54 and frame[12:14] == b"\x08\x00" and frame[23] == 6:
                ihl = (frame[14] & 0x0F) * 4
                dport = int.from_bytes(frame[14 + ihl + 2:14 + ihl + 4], "big")
                answered[(frame[30:34], dport)] = time.monotonic()

    threading.Thread(target=receive, daemon=True).start()
    n = 0
    next_at = time.monotonic()
    try:
        while not stop.is_set() and run.stopped_at is None:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += every
            src = ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.18.0.7")) + (n % 512) * 256)
            n += 1
            first = None
            for k, port in enumerate(SCAN_PORTS):
                sport = 40000 + k
                tx.send(syn_frame(run.lab.remote_mac, run.lab.server_mac, src, port, sport, seq=n * 100 + k))
                run.write([run.scan_line(str(src), sport, port, n * 100 + k)])
                run.scan_lines += 1
                first = first or time.monotonic()
                time.sleep(0.05)
            knocks: list[tuple[int, float]] = []
            sport = 41000
            while time.monotonic() - first < NOT_DROPPED_AFTER and not stop.is_set():
                sport += 1
                tx.send(syn_frame(run.lab.remote_mac, run.lab.server_mac, src, KNOCK_PORT, sport, seq=sport))
                knocks.append((sport, time.monotonic()))
                time.sleep(0.02)
                last_answer = max((answered.get((src.packed, s), 0.0) for s, _ in knocks), default=0.0)
                if time.monotonic() - max(last_answer, first) > 1.0 and len(knocks) > 10:
                    break
            time.sleep(0.3)             # late answers
            if stop.is_set():
                break                   # cut short by the end of the run: not counted
            last = max((i for i, (s, _) in enumerate(knocks) if (src.packed, s) in answered), default=-1)
            run.scanned_at.append(first)
            if last == len(knocks) - 1:
                run.latencies.append(None)
            else:
                run.latencies.append(knocks[last + 1][1] - first)
            run.scanned = n
    finally:
        tx.close()
        rx.close()


def sampler(runs: list[Run], every: float, stop: threading.Event, start: float, max_rss_kb: int, counts: dict):
    while not stop.is_set():
        t = time.monotonic() - start
        for run in runs:
            if run.stopped_at is not None:
                continue
            rss = run.rss_kb()
            held, total = run.failed()
            run.samples.append({"t": round(t, 1), "rss_kb": rss, "failed": held, "total_failed": total,
                                "lines": counts["flood"] + run.scan_lines, "load1": os.getloadavg()[0], "cpu_s": run.cpu_s()})
            if rss is not None and rss > max_rss_kb:
                run.stopped_at = t
                run.stop_server()
        stop.wait(every)


def rss_at(run: Run, minute: float) -> str:
    before = [s for s in run.samples if s["t"] <= minute * 60 + 1e-9 and s["rss_kb"]]
    if not before or (minute * 60 - before[-1]["t"]) > 30:
        return "-"
    return f"{before[-1]['rss_kb'] / 1024:.0f}"


def summary(runs: list[Run], minutes: float, rate: int) -> str:
    marks = [m for m in (0, 1, 5, 10) if m <= minutes] + ([minutes] if minutes not in (0, 1, 5, 10) else [])
    head = "| jail | " + " | ".join(f"RSS MB at {m:g} min" for m in marks) + \
        " | max RSS MB | failing addresses held at end | most lines read behind | scanners | dropped" \
        " | latency p50 s | p99 s | max s | CPU share |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    loads = [s["load1"] for run in runs for s in run.samples if "load1" in s]
    for run in runs:
        got = [x for x in run.latencies if x is not None]
        q = sorted(got)
        p = (lambda f: f"{q[min(len(q) - 1, int(f * len(q)))]:.2f}") if q else (lambda f: "-")
        top = max((s["rss_kb"] or 0) for s in run.samples) / 1024 if run.samples else 0
        held = next((s["failed"] for s in reversed(run.samples) if s["failed"] is not None), "-")
        stopped = f" (stopped at {run.stopped_at / 60:.1f} min)" if run.stopped_at else ""
        behind = max((s["lines"] - s["total_failed"] for s in run.samples if s.get("total_failed") is not None),
                     default=0)
        cpu = [(s["t"], s["cpu_s"]) for s in run.samples if s.get("cpu_s") is not None]
        share = f"{(cpu[-1][1] - cpu[0][1]) / (cpu[-1][0] - cpu[0][0]):.2f}" if len(cpu) > 1 and cpu[-1][0] > cpu[0][0] else "-"
        lines.append(f"| {run.name}{stopped} | " + " | ".join(rss_at(run, m) for m in marks) +
                     f" | {top:.0f} | {held:,} | {behind:,} | {len(run.latencies)} | {len(got)} | "
                     f"{statistics.median(got) if got else float('nan'):.2f} | {p(0.99)} | {max(got) if got else float('nan'):.2f} | "
                     f"{share} |")
    for run in runs:        # each half of the run on its own: how latency followed the load
        for name, lo, hi in (("first half", 0, minutes * 30), ("second half", minutes * 30, minutes * 60)):
            got = [x for x, t in zip(run.latencies, run.scanned_at) if lo <= t - run.started < hi]
            ok = sorted(x for x in got if x is not None)
            ss = [s for s in run.samples if lo <= s["t"] < hi]
            load = [s["load1"] for s in ss]
            behind = max((s["lines"] - s["total_failed"] for s in ss if s.get("total_failed") is not None), default=0)
            if got:
                lines.append(f"{run.name}, {name}: {len(ok)} of {len(got)} dropped within {NOT_DROPPED_AFTER:g} s, "
                             f"p50 {statistics.median(ok) if ok else float('nan'):.2f} s, "
                             f"p99 {ok[min(len(ok) - 1, int(0.99 * len(ok)))] if ok else float('nan'):.2f} s, "
                             f"max {max(ok) if ok else float('nan'):.2f} s; most lines behind {behind:,}; "
                             f"load median {statistics.median(load) if load else float('nan'):.1f}, "
                             f"max {max(load) if load else float('nan'):.1f}")
    if loads:
        lines.append(f"\nmachine load (1 min) during the run: median {statistics.median(loads):.1f}, max {max(loads):.1f} "
                     f"on {os.cpu_count()} cores")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=int, default=3000, help="flood lines a second")
    ap.add_argument("--scan-every", type=float, default=5.0)
    ap.add_argument("--sample", type=float, default=5.0)
    ap.add_argument("--max-rss-mb", type=int, default=6000)
    ap.add_argument("--only", choices=sorted(CONFIGS), action="append", help="run only these configurations")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, netfilter)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="f2bx-flood-"))
    runs: list[Run] = []
    stop = threading.Event()
    try:
        for name in args.only or DEFAULT_CONFIGS:
            runs.append(Run(name, CONFIGS[name], work))
        counts = {"flood": 0}
        start = time.monotonic()
        for run in runs:
            run.started = start
        threads = [threading.Thread(target=flood, args=(runs, args.rate, stop, counts), daemon=True),
                   threading.Thread(target=sampler, args=(runs, args.sample, stop, start, args.max_rss_mb * 1024, counts),
                                    daemon=True)]
        threads += [threading.Thread(target=scanner, args=(run, args.scan_every, stop), daemon=True) for run in runs]
        for t in threads:
            t.start()
        stop.wait(args.minutes * 60)
        stop.set()
        for t in threads:
            t.join(NOT_DROPPED_AFTER + 5)
        for run in runs:
            if run.stopped_at is None:
                held, total = run.failed()
                run.samples.append({"t": round(time.monotonic() - start, 1), "rss_kb": run.rss_kb(),
                                    "failed": held, "total_failed": total, "lines": counts["flood"] + run.scan_lines,
                                    "load1": os.getloadavg()[0]})
        print(f"{counts['flood']:,} flood lines in {args.minutes:g} min ({args.rate}/s target), "
              f"a scanner every {args.scan_every:g} s")
        print(summary(runs, args.minutes, args.rate))
        if args.json:
            args.json.write_text(json.dumps({r.name: {"samples": r.samples, "latencies": r.latencies,
                                                      "scanned_at": [t - start for t in r.scanned_at],
                                                      "stopped_at": r.stopped_at} for r in runs}, indent=1))
    finally:
        stop.set()
        for run in runs:
            try:
                run.close()
            except Exception as exc:        # keep cleaning up the rest
                print(f"cleanup {run.name}: {exc}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
