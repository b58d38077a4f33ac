#!/usr/bin/env python3
"""fail2ban-regex throughput: netfilter.conf vs a naive ad-hoc filter vs stock sshd.

    .venv/bin/python bench/filter_throughput.py [--lines 200000] [--repeat 3]

One run measures, on logs of the same size, with fail2ban-regex in its default summary
mode (what an admin runs) and, as before, with `--raw -o ip`:
  - two kernel logs: the captured-sample mix (lines captured from the real kernel, about
    20% attempts) and an attack-heavy mix (70% inbound SYN attempts, 20% ACK RST
    backscatter, 10% UDP), each through filter.d/netfilter.conf, the naive ad-hoc
    filter `failregex = .*SRC=<HOST>` (and how many of its bans are wrong), and the
    floor: a filter that matches nothing (fail2ban's own per-line cost: reading, date);
    the naive filter and the floor read dates with netfilter.conf's own datepattern, so
    only the failregexes differ (the naive filter with fail2ban's default date templates,
    as an admin would write it, is shown too);
  - stock filter.d/sshd.conf on an sshd log;
and the worst case for backtracking: 1 MB hostile lines through the filter machinery,
and IPv6 records with 10 to 10,000 extension headers (time per header must stay flat).
Prints Markdown tables for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import ipaddress
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from f2b_ext.core import netfilter as nf  # noqa: E402
from f2b_ext.system.filter_runner import FilterRunner, config_dir, ensure_utc  # noqa: E402
from f2b_ext.system.samples import read_cases  # noqa: E402

# netfilter.conf's own date handling, which the naive filter and the floor get too, so that
# the comparison is of the failregexes alone (one home: read from the shipped filter).
DATEPATTERN = re.search(r"^datepattern = (.*)$", (ROOT / "filter.d/netfilter.conf").read_text(), re.M).group(1)
NAIVE = f"[Definition]\nfailregex = .*SRC=<HOST>\ndatepattern = {DATEPATTERN}\n"
# The naive filter as an admin writes it: fail2ban's default date templates, searched
# anywhere in the line (slower than netfilter.conf's anchored ones); shown for reference.
NAIVE_DEFAULT_DATES = "[Definition]\nfailregex = .*SRC=<HOST>\n"
# The floor: matches nothing, reads dates as netfilter.conf does.
FLOOR = f"[Definition]\nfailregex = ^ NEVER MATCHES <HOST>$\ndatepattern = {DATEPATTERN}\n"


def kernel_log(n: int, rng: random.Random) -> list[str]:
    """n lines cycling over the captured kernel lines, with fresh remote addresses."""
    base = [c.line for c in read_cases(ROOT / "tests/samples/netfilter-captured")
            if not c.options and not c.line.startswith("lab kernel")]
    out = []
    for i in range(n):
        line = base[i % len(base)]
        # vary the 198.51.100.x / 203.0.113.x hosts so bans are many distinct addresses
        line = re.sub(r"(198\.51\.100|203\.0\.113)\.\d+", lambda m: f"{m.group(1)}.{rng.randrange(1, 255)}", line)
        out.append(line)
    return out


def attack_log(n: int, rng: random.Random) -> list[str]:
    """A scanned server's log: 70% inbound SYN attempts, 20% ACK RST backscatter (victims
    of floods that forged our address), 10% UDP (probes, and late replies from port 53/123),
    as Debian 12's rsyslog writes firewalld's lines."""
    head = ("2026-11-21T08:08:{s:02d}.{us:06d}+00:00 web1 kernel: [{up:12.6f}] FINAL_REJECT: IN=eth0 OUT= "
            "MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC={src} DST=198.51.100.1 LEN={ln} TOS=0x00 "
            "PREC=0x00 TTL={ttl} ID={id} {df}PROTO=")
    out = []
    for i in range(n):
        r = rng.random()
        src = f"{rng.choice(('203.0.113', '198.18.7', '198.19.200'))}.{rng.randrange(1, 255)}"
        h = head.format(s=i % 60, us=rng.randrange(10**6), up=1000 + i / 100, src=src, ln=rng.choice((40, 44, 60)),
                        ttl=rng.randrange(30, 250), id=rng.randrange(65536), df=rng.choice(("", "DF ")))
        if r < 0.7:
            tail = (f"TCP SPT={rng.randrange(1024, 65536)} DPT={rng.choice((22, 23, 80, 443, 3389, 8080, rng.randrange(1, 65536)))} "
                    f"WINDOW={rng.choice((1024, 29200, 64240))} RES=0x00 SYN URGP=0 ")
        elif r < 0.9:
            tail = (f"TCP SPT={rng.choice((80, 443, 22, 25))} DPT={rng.randrange(1024, 65536)} "
                    f"WINDOW=0 RES=0x00 ACK RST URGP=0 ")
        else:
            tail = (f"UDP SPT={rng.choice((53, 123, rng.randrange(1024, 65536), rng.randrange(1024, 65536)))} "
                    f"DPT={rng.choice((161, 1900, 5060, 11211, rng.randrange(1, 65536)))} LEN={rng.randrange(8, 512)} ")
        out.append(h + tail)
    return out


def sshd_log(n: int, rng: random.Random) -> list[str]:
    shapes = [
        "Nov 21 08:08:21 host sshd[{pid}]: Failed password for invalid user {user} from {ip} port {port} ssh2",
        "Nov 21 08:08:21 host sshd[{pid}]: Failed password for root from {ip} port {port} ssh2",
        "Nov 21 08:08:21 host sshd[{pid}]: Invalid user {user} from {ip} port {port}",
        "Nov 21 08:08:21 host sshd[{pid}]: Connection closed by authenticating user root {ip} port {port} [preauth]",
        "Nov 21 08:08:21 host sshd[{pid}]: Accepted publickey for admin from {ip} port {port} ssh2: ED25519 SHA256:x",
        "Nov 21 08:08:21 host sshd[{pid}]: pam_unix(sshd:session): session opened for user admin(uid=1000) by (uid=0)",
    ]
    return [rng.choice(shapes).format(pid=rng.randrange(1000, 60000), user=rng.choice(["admin", "test", "oracle"]),
                                      ip=f"203.0.113.{rng.randrange(1, 255)}", port=rng.randrange(1024, 65535))
            for _ in range(n)]


def fail2ban_regex(confdir: Path, log: Path, flt: str, raw: bool = True) -> tuple[float, list[str], float]:
    """Seconds, the banned addresses (--raw -o ip) or the summary's matched count, and
    the CPU seconds fail2ban-regex used (user + system, the kernel's accounting of the
    waited-for child: time spent waiting for a core while other sessions run is not
    charged, so this is the steadier of the two on a shared machine)."""
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    args = ["--raw", "-o", "ip"] if raw else []
    out = subprocess.run(["fail2ban-regex", "-c", str(confdir), *args, str(log), flt],
                         capture_output=True, text=True, check=True).stdout
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if raw:
        return took, out.split(), cpu
    m = re.search(r"^Lines: [\d,]+ lines, [\d,]+ ignored, ([\d,]+) matched", out, re.M)
    return took, [m.group(1).replace(",", "")] if m else [], cpu


def summary_mode(confdir: Path, logs: dict, repeat: int, compare: bool = False) -> None:
    """Both kernel mixes in fail2ban-regex's default summary mode: ours, naive (same date
    handling), floor, the naive filter with fail2ban's default dates, interleaved so that
    machine noise hits all alike. Seconds are the median of `repeat` rounds; "vs naive" is
    the median of the rounds' ratios (each round's filters ran back to back), with the
    lowest and highest; "vs naive, CPU" is the same on the CPU seconds each run used."""
    print("fail2ban-regex in its default summary mode (no `--raw`), median of "
          f"{repeat} interleaved rounds (vs naive: median ratio of the rounds, [lowest-highest]):\n")
    print("| log | filter | seconds | lines/s | vs naive | vs naive, CPU | matched | above floor s | vs naive above floor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for mix, (path, n) in logs.items():
        names = {"netfilter": "netfilter.conf", "naive": f"naive `.*SRC=<HOST>` (datepattern {DATEPATTERN})",
                 "floor": "floor (matches nothing)",
                 "naive-default-dates": "naive `.*SRC=<HOST>`, fail2ban's default dates"}
        if compare:
            names["compare"] = "`--compare` filter"
        times, cpu = {f: [] for f in names}, {f: [] for f in names}
        matched = {}
        for _ in range(repeat):
            for flt in times:
                secs, m, cpu_secs = fail2ban_regex(confdir, path, flt, raw=False)
                times[flt].append(secs)
                cpu[flt].append(cpu_secs)
                matched[flt] = m[0] if m else "?"
        med = {f: statistics.median(t) for f, t in times.items()}
        for flt, name in names.items():
            ratios = [a / b for a, b in zip(times["naive"], times[flt])]
            cpu_ratios = [a / b for a, b in zip(cpu["naive"], cpu[flt])]
            above = med[flt] - med["floor"]
            ratio = (med["naive"] - med["floor"]) / above if flt != "floor" and above > 0 else float("nan")
            print(f"| {mix} | {name} | {med[flt]:.2f} | {n / med[flt]:,.0f} | {statistics.median(ratios):.2f}x "
                  f"[{min(ratios):.2f}-{max(ratios):.2f}] | {statistics.median(cpu_ratios):.2f}x "
                  f"[{min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}] | {int(matched[flt]):,} | {above:.2f} | "
                  + (f"{ratio:.2f}x |" if flt != "floor" else "- |"))
    print()


def exthdr_scaling(confdir: Path) -> None:
    """IPv6 records with n extension headers (--log-ip-options): seconds per line and per
    header, through fail2ban's Filter.processLine; linear means per-header time is flat."""
    ensure_utc()
    ours = FilterRunner("netfilter", {}, confdir)
    head = ("Nov 21 08:08:21 host kernel: [  444.910152] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:86:dd "
            "SRC=2001:0db8:000e:0000:0000:0000:0000:0001 DST=2001:0db8:0000:0000:0000:0000:0000:0001 "
            "LEN=1500 TC=0 HOPLIMIT=64 FLOWLBL=0 ")
    print("IPv6 extension headers (`OPT ( ) ` groups, as the kernel prints them with "
          "--log-ip-options), one record through Filter.processLine, best of 5:\n")
    print("| headers | line bytes | matched | seconds | µs per header |")
    print("|---:|---:|---|---:|---:|")
    for n in (10, 100, 1000, 10000):
        for tail, what in (("PROTO=TCP SPT=1 DPT=22 WINDOW=1024 RES=0x00 SYN URGP=0 ", "SYN"),
                           ("PROTO=TCP SPT=443 DPT=1 WINDOW=0 RES=0x00 ACK RST URGP=0 ", "ACK RST")):
            line = head + "OPT ( ) " * n + tail
            secs = min(_timed(ours, line) for _ in range(5))
            got = bool(ours.match(line))
            print(f"| {n:,} ({what}) | {len(line):,} | {'yes' if got else 'no'} | {secs:.4f} | {secs / n * 1e6:.2f} |")
    print()


def worst_case(confdir: Path) -> list[tuple[str, float, float]]:
    """Seconds per 1 MB hostile line: (filler, netfilter, naive)."""
    ensure_utc()
    ours = FilterRunner("netfilter", {}, confdir)
    naive = FilterRunner("naive", {}, confdir)
    head = "Nov 21 08:08:21 host kernel: [  444.910152] "
    rec = ("FINAL_REJECT: IN=eth0 OUT= SRC=203.0.113.7 DST=198.51.100.1 LEN=60 TOS=0x00 PREC=0x00 "
           "TTL=51 ID=5 DF PROTO=TCP SPT=40000 DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0 ")
    rows = []
    for filler in ("A", " ", "=", ":", "IN=", "SRC=198.51.100.66 ", "IN=eth0 OUT= ", "SYN ",
                   "OPT ( ) ", "kernel: [ 1.0] "):
        blob = filler * (1_000_000 // len(filler))
        times = []
        for runner in (ours, naive):
            # the worse of the two shapes, each the best of 3 tries
            times.append(max(min(_timed(runner, line) for _ in range(3))
                             for line in (head + blob + rec, head + rec + blob)))
        rows.append((filler, *times))
    return rows


def _pass(runner, lines) -> float:
    t = time.perf_counter()
    for line in lines:
        runner.match(line)
    return time.perf_counter() - t


def _timed(runner, line):
    t = time.perf_counter()
    runner.match(line)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compare", metavar="FILTER.conf",
                    help="another netfilter.conf (e.g. an earlier version: git show REV:filter.d/netfilter.conf) "
                         "run in the same summary-mode rounds")
    ap.add_argument("--summary-only", action="store_true",
                    help="only the summary-mode table (both mixes, ours/naive/floor)")
    ap.add_argument("--backtracking-only", action="store_true",
                    help="only the worst cases for backtracking (extension headers, 1 MB lines)")
    args = ap.parse_args()
    if args.backtracking_only:
        with tempfile.TemporaryDirectory(prefix="f2b-bench-") as tmp:
            confdir = config_dir(Path(tmp) / "conf")
            (confdir / "filter.d" / "naive.conf").write_text(NAIVE)
            backtracking(confdir)
        return 0
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="f2b-bench-") as tmp:
        tmp = Path(tmp)
        confdir = config_dir(tmp / "conf")
        (confdir / "filter.d" / "naive.conf").write_text(NAIVE)
        (confdir / "filter.d" / "floor.conf").write_text(FLOOR)
        (confdir / "filter.d" / "naive-default-dates.conf").write_text(NAIVE_DEFAULT_DATES)
        if args.compare:
            shutil.copy2(args.compare, confdir / "filter.d" / "compare.conf")
        shutil.copy2("/etc/fail2ban/filter.d/sshd.conf", confdir / "filter.d" / "sshd.conf")
        klines = kernel_log(args.lines, rng)
        klog, slog = tmp / "kern.log", tmp / "auth.log"
        klog.write_text("\n".join(klines) + "\n")
        slines = sshd_log(args.lines, rng)
        slog.write_text("\n".join(slines) + "\n")

        alines = attack_log(args.lines, rng)
        alog = tmp / "attack.log"
        alog.write_text("\n".join(alines) + "\n")

        ensure_utc()
        summary_mode(confdir, {"captured-sample mix": (klog, args.lines),
                               "attack-heavy mix": (alog, args.lines)}, args.repeat, bool(args.compare))
        truth = [nf.judge_line(line) for line in alines]
        secs, ours_ips, _ = fail2ban_regex(confdir, alog, "netfilter")
        want = [str(v.remote) for v in truth if v.attempt]
        print(f"Attack-heavy mix: the core counts {len(want):,} attempts; netfilter.conf banned "
              f"{len(ours_ips):,}, {sum(1 for a, b in zip(ours_ips, want) if ipaddress.ip_address(a) != ipaddress.ip_address(b))} "
              f"of them a different address than the core (`--raw -o ip`, {secs:.2f} s).\n")
        if args.summary_only:
            return 0

        results = {}
        for name, log, flt in (("netfilter.conf (this suite)", klog, "netfilter"),
                               ("naive `.*SRC=<HOST>`", klog, "naive"),
                               ("stock sshd.conf, sshd log", slog, "sshd")):
            runs = [fail2ban_regex(confdir, log, flt) for _ in range(args.repeat)]
            results[name] = (statistics.median(r[0] for r in runs), runs[0][1])

        # Which of the naive filter's bans are wrong? The truth is the core's verdict.
        truth = [nf.judge_line(line) for line in klines]
        right = sum(1 for v in truth if v.attempt)
        naive_bans = results["naive `.*SRC=<HOST>`"][1]
        ours_bans = results["netfilter.conf (this suite)"][1]

        print(f"fail2ban-regex on {args.lines:,} lines, median of {args.repeat} runs "
              f"(fail2ban {_f2b_version()}, Python {sys.version.split()[0]})\n")
        print("| filter | log | seconds | lines/s | vs naive | bans | wrong bans |")
        print("|---|---|---:|---:|---:|---:|---:|")
        naive_rate = args.lines / results["naive `.*SRC=<HOST>`"][0]
        for name, (secs, bans) in results.items():
            rate = args.lines / secs
            log = "sshd" if "sshd" in name else "kernel"
            if "naive" in name:
                wrong = len(bans) - right
            elif "sshd" in name:
                wrong = "n/a"
            else:
                wrong = sum(1 for b, v in zip(ours_bans, [v for v in truth if v.attempt]) if ipaddress.ip_address(b) != v.remote)
            print(f"| {name} | {log} | {secs:.2f} | {rate:,.0f} | {rate / naive_rate:.2f}x | {len(bans):,} | {wrong} |")
        print(f"\nAttempts in the kernel log (the core's count): {right:,}; "
              f"netfilter.conf banned {len(ours_bans):,}, the naive filter {len(naive_bans):,}.\n")

        print("The same logs in-process (fail2ban's Filter.processLine, no fail2ban-regex "
              "start-up or reporting), best of the repeats:\n")
        print("| filter | lines/s | vs naive |")
        print("|---|---:|---:|")
        inproc = {}
        for name, lines, flt in (("netfilter.conf (this suite)", klines, "netfilter"),
                                 ("naive `.*SRC=<HOST>`", klines, "naive"),
                                 ("stock sshd.conf, sshd log", slines, "sshd")):
            runner = FilterRunner(flt, {}, confdir)
            best = min(_pass(runner, lines) for _ in range(args.repeat))
            inproc[name] = len(lines) / best
        for name, rate in inproc.items():
            print(f"| {name} | {rate:,.0f} | {rate / inproc['naive `.*SRC=<HOST>`']:.2f}x |")
        print()

        backtracking(confdir)
    return 0


def backtracking(confdir: Path) -> None:
    exthdr_scaling(confdir)
    print("Worst case, one 1 MB hostile line (filler repeated before or after a record; "
          "the slower shape, best of 3), through fail2ban's Filter.processLine:\n")
    print("| filler | netfilter.conf s | naive s |")
    print("|---|---:|---:|")
    for filler, ours_s, naive_s in worst_case(confdir):
        print(f"| `{filler!r}` | {ours_s:.3f} | {naive_s:.3f} |")


def _f2b_version() -> str:
    from fail2ban.version import version
    return version


if __name__ == "__main__":
    sys.exit(main())
