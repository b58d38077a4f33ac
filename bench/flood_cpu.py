#!/usr/bin/env python3
"""fail2ban-server's CPU per flood line with the shipped [f2b-ext-inbound] jail, and what
each per-line cost is: the same flood against variants of the jail, one after another (root).

    .venv/bin/python bench/flood_cpu.py [--rate 3000] [--seconds 30] [--only VARIANT ...]
                                        [--py-spy .venv/bin/py-spy] [--json FILE]

Each variant is one lab and one real fail2ban-server, set up as in bench/flood_memory.py
(the seeds' nftables firewall, the shipped jail.d/f2b-ext.conf with `nftset` and
`subnet-escalate`, on-disk database): the benchmark writes `--rate` flood lines a second
for `--seconds` (kernel format, a fresh random source in 2001:db8::/32 each, so every line
is a failure and none bans), then waits until the jail has counted them all ("Total
failed"). Measured from /proc/PID/stat and /proc/PID/task/*/stat (user + system time):
the server's CPU seconds per line read, its CPU share while the flood ran (1.0 = one
core; fail2ban's Python runs one thread at a time, so about 1.0 is its ceiling), how far
it read behind (lines written minus counted, every second) and the CPU of each thread
(fail2ban names them: `f2b/f.JAIL` reads and matches, `f2b/observer` runs
`failureFound`, `f2b/a.JAIL` bans).

Variants (only the named setting differs from the shipped jail):
  shipped         as shipped: bantime.increment = true, fail2ban's INFO log, found-limit.py
                  (at most 20 "Found" lines a second)
  no-found-limit  without found-limit.py: a "Found" line for every failure (as before)
  no-found-limit,no-increment   and bantime.increment = false
  no-increment    bantime.increment = false: no database query per failure
  notice          fail2ban's loglevel NOTICE (`fail2ban-client set loglevel NOTICE` once the
                  jail runs): no "Found" line at all
  notice,no-increment           what is left: reading, matching and the tickets
  polling         backend = polling instead of pyinotify

With --py-spy, the server of each variant is sampled (py-spy record, raw stacks, 100/s,
--nonblocking) while the flood runs; the summary prints the share of samples in the
functions that matter per line (inclusive) and the top functions by own time.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import shutil
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flood_memory import Run  # noqa: E402

# the shipped action line without found-limit.py (the jail as shipped before it)
WITHOUT_FOUND_LIMIT = ("action = %(banaction_f2b_ext)s[direction=in]\n"
                       "    subnet-escalate.py[hosts=5, nets=3, window=1h, forgedschedule=30m, maxrate=10/1h, maxheld=64]\n")
VARIANTS = {          # name: (jail extra, backend, loglevel)
    "shipped": ("", "pyinotify", "INFO"),
    "no-found-limit": (WITHOUT_FOUND_LIMIT, "pyinotify", "INFO"),
    "no-found-limit,no-increment": (WITHOUT_FOUND_LIMIT + "bantime.increment = false\n", "pyinotify", "INFO"),
    "no-increment": ("bantime.increment = false\n", "pyinotify", "INFO"),
    "notice": ("", "pyinotify", "NOTICE"),
    "notice,no-increment": ("bantime.increment = false\n", "pyinotify", "NOTICE"),
    "polling": ("", "polling", "INFO"),
}
TICK = os.sysconf("SC_CLK_TCK")
# where the time goes, by the function a py-spy sample passes through (inclusive)
STAGES = (
    ("filter thread: FileFilter.getFailures (reading and all per-line work)", r"FileFilter\.getFailures "),
    ("processLineAndAdd (all per-line work in the filter thread)", r"Filter\.processLineAndAdd "),
    ("  processLine: date detection", r"DateDetector\.getTime "),
    ("  findFailure: failregex", r"Filter\.findFailure "),
    ("  'Found' INFO log line (logSys.info)", r"Logger\.info \(logging"),
    ("  MyTime.time2str (the Found line's argument)", r"MyTime\.time2str "),
    ("  failManager.addFailure", r"FailManager\.addFailure "),
    ("  Observers.Main.add (queue)", r"ObserverThread\.add "),
    ("  _inIgnoreIPList", r"Filter\._inIgnoreIPList "),
    ("  performSvc (every 100 lines)", r"Filter\.performSvc "),
    ("observer failureFound (bantime.increment)", r"ObserverThread\.failureFound "),
    ("  db.getBan (SQLite)", r"Fail2BanDb\.getBan "),
    ("observer loop besides failureFound", r"ObserverThread\.run "),
    ("os.path.exists / isfile", r"^(exists|isfile) \(<frozen genericpath>"),
)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def thread_ticks(pid: int) -> dict[str, int]:
    out: dict[str, int] = collections.Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] += int(fields[11]) + int(fields[12])
    return out


def spy_summary(raw: Path) -> dict:
    """Inclusive share of samples per STAGE, and the top own-time functions."""
    total, stage, own = 0, collections.Counter(), collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[re.sub(r":\d+\)$", ")", frames[-1])] += n
        for name, pattern in STAGES:
            if any(re.search(pattern, f) for f in frames):
                stage[name] += n
    return {"samples": total, "stages": {name: stage[name] / total if total else 0 for name, _ in STAGES},
            "own": [(f, n / total) for f, n in own.most_common(25)] if total else []}


def measure(name: str, rate: int, seconds: float, work: Path, spy: str | None, keep: Path | None = None) -> dict:
    extra, backend, loglevel = VARIANTS[name]
    run = Run(name, extra, work, backend=backend)
    try:
        pid = run.pid
        # set once the jail has started (the lab waits for fail2ban's INFO line saying so)
        run.f2b.client("set", "loglevel", loglevel)
        time.sleep(2)
        rnd = random.Random(20261201)
        _, counted0 = run.failed()
        c0, t0, w0 = cpu_ticks(pid), thread_ticks(pid), time.monotonic()
        spy_proc, raw = None, work / f"{name}.spy.txt"
        if spy:
            spy_proc = subprocess.Popen([spy, "record", "-p", str(pid), "-r", "100", "-d", str(int(seconds)),
                                         "--nonblocking", "-f", "raw", "-o", str(raw)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        written, behind, next_sample = 0, [], w0 + 1
        while (now := time.monotonic()) - w0 < seconds:
            n = int((now - w0) * rate) - written
            if n > 0:
                run.write([run.flood_line(rnd, written + i) for i in range(n)])
                written += n
            if now >= next_sample:
                next_sample += 1
                behind.append(written - (run.failed()[1] - counted0))
            time.sleep(0.1)
        wrote_for = time.monotonic() - w0
        c_flood = cpu_ticks(pid)
        while (counted := run.failed()[1] - counted0) < written and time.monotonic() - w0 < seconds + 300:
            behind.append(written - counted)
            time.sleep(0.5)
        w1, c1, t1 = time.monotonic(), cpu_ticks(pid), thread_ticks(pid)
        if spy_proc:
            spy_proc.wait(60)
        cpu = (c1 - c0) / TICK
        result = {
            "variant": name, "lines": written, "counted": counted, "wall_s": round(w1 - w0, 2),
            "cpu_s": round(cpu, 2), "cpu_us_per_line": round(cpu / max(counted, 1) * 1e6, 1),
            "read_lines_per_cpu_s": round(counted / cpu) if cpu else None,
            "cpu_share_during_flood": round((c_flood - c0) / TICK / wrote_for, 2),
            "most_behind": max(behind, default=0), "caught_up_after_s": round(w1 - w0 - wrote_for, 1),
            "threads_cpu_s": {k: round((t1[k] - t0.get(k, 0)) / TICK, 2) for k in t1 if t1[k] - t0.get(k, 0)},
            "load1": os.getloadavg()[0],
        }
        if spy and raw.exists():
            result["py_spy"] = spy_summary(raw)
            if keep:
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(raw, keep / raw.name)
        return result
    finally:
        run.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--only", choices=list(VARIANTS), action="append")
    ap.add_argument("--py-spy", default=None, help="py-spy binary: profile each server while the flood runs")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep py-spy's raw stacks in this directory")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, netfilter)", file=sys.stderr)
        return 2
    import fail2ban.version
    print(f"fail2ban {fail2ban.version.version}, Python {sys.version.split()[0]}, {args.rate} lines/s for "
          f"{args.seconds:g} s per variant")
    work = Path(tempfile.mkdtemp(prefix="f2bx-cpu-"))
    results = []
    try:
        for name in args.only or VARIANTS:
            r = measure(name, args.rate, args.seconds, work, args.py_spy, args.keep)
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "py_spy"}), flush=True)
            if "py_spy" in r:
                s = r["py_spy"]
                print(f"  py-spy: {s['samples']} samples")
                for stage, share in s["stages"].items():
                    print(f"    {share:6.1%}  {stage}")
                print("  own time:")
                for f, share in s["own"][:15]:
                    print(f"    {share:6.1%}  {f}")
        print("\n| variant | lines | CPU µs per line | lines per CPU second | CPU share at "
              f"{args.rate}/s | most lines behind | caught up after s | load |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in results:
            print(f"| {r['variant']} | {r['counted']:,} | {r['cpu_us_per_line']:.0f} | {r['read_lines_per_cpu_s']:,} | "
                  f"{r['cpu_share_during_flood']:.2f} | {r['most_behind']:,} | {r['caught_up_after_s']:.1f} | "
                  f"{r['load1']:.1f} |")
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
