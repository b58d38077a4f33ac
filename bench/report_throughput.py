#!/usr/bin/env python3
"""`f2b-ext report` on a large firewall log: throughput and peak memory.

    .venv/bin/python bench/report_throughput.py [--lines 1000000]

Two logs of `--lines` lines, cycling over the lines captured from the real kernel
(tests/samples/netfilter-captured):
  - "realistic": remotes drawn from 20,000 addresses;
  - "worst case": remotes cycling through all 131,072 addresses of 198.18.0.0/15, more
    than the report's tables keep (100,000), so they must stay bounded.
Each is read by `f2b-ext report --json` (a subprocess, as a user runs it) and, for
comparison in the same run, by the stock tools an admin would use instead:
`fail2ban-regex` with this suite's filter (matches per address only) and the seeds'
awk pipeline (top SRC= addresses, no verdicts). Peak memory is the child's max RSS.
Prints a Markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from f2b_ext.system.filter_runner import config_dir  # noqa: E402
from f2b_ext.system.samples import read_cases  # noqa: E402

AWK = "grep -o 'SRC=[^ ]*' {log} | sort | uniq -c | sort -rn | head"


def write_log(path: Path, n: int, distinct: int | None, rng: random.Random):
    """n lines; remotes drawn from `distinct` addresses, or cycling through them all (None)."""
    base = [c.line for c in read_cases(ROOT / "tests/samples/netfilter-captured")
            if not c.options and not c.line.startswith("lab kernel")]
    addr = re.compile(r"(?:198\.51\.100|203\.0\.113)\.\d+")
    with open(path, "w") as fh:
        for i in range(n):
            # remotes stay in the benchmark range 198.18.0.0/15 (131,072 addresses)
            k = (i if distinct is None else rng.randrange(distinct)) % 131_072
            remote = f"198.{18 + (k >> 16)}.{(k >> 8) & 255}.{k & 255}"
            fh.write(addr.sub(remote, base[i % len(base)], count=1) + "\n")


def timed(cmd, **kw) -> tuple[float, int, str]:
    """(seconds, peak RSS in MB of the child, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, **kw).stdout
    secs = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return secs, max(peak, before) // 1024, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    args = ap.parse_args()
    rng = random.Random(11)
    rows = []
    with tempfile.TemporaryDirectory(prefix="f2b-bench-report-") as tmp:
        tmp = Path(tmp)
        confdir = config_dir(tmp / "conf")
        for name, distinct in (("realistic (20,000 remotes)", 20_000), ("worst case (131,072 remotes)", None)):
            log = tmp / "netfilter.log"
            write_log(log, args.lines, distinct, rng)
            mb = log.stat().st_size / 1e6
            # each tool in a fresh process, so each max RSS is its own
            report = subprocess.run([sys.executable, __file__, "--child", str(log)], capture_output=True,
                                    text=True, check=True)
            secs, peak, summary = json.loads(report.stdout)
            rows.append((name, "f2b-ext report", secs, peak, mb, summary))
            out = subprocess.run([sys.executable, __file__, "--child-f2b", str(log), str(confdir)],
                                 capture_output=True, text=True, check=True)
            secs, peak, _ = json.loads(out.stdout)
            rows.append((name, "fail2ban-regex netfilter", secs, peak, mb, ""))
            out = subprocess.run([sys.executable, __file__, "--child-awk", str(log)],
                                 capture_output=True, text=True, check=True)
            secs, peak, _ = json.loads(out.stdout)
            rows.append((name, "grep \\| sort \\| uniq -c (the seeds' shell way)", secs, peak, mb, ""))
    print(f"`f2b-ext report --json` on {args.lines:,} lines (Python {sys.version.split()[0]})\n")
    print("| log | tool | seconds | lines/s | MB/s | peak RSS MB | report's speed vs this tool |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for i, (name, tool, secs, peak, mb, _) in enumerate(rows):
        ours = rows[i - i % 3][2]
        print(f"| {name} | {tool} | {secs:.1f} | {args.lines / secs:,.0f} | {mb / secs:.1f} | {peak} | "
              f"{secs / ours:.2f}x |")     # this tool's time / the report's time
    for name, tool, _, _, _, summary in rows:
        if summary:
            print(f"\n{name}: {summary}")
    return 0


def child(argv: list[str]) -> int:
    """Run one tool in this fresh process's child and print [seconds, peak MB, note]."""
    mode, log = argv[0], argv[1]
    if mode == "--child":
        secs, peak, out = timed([sys.executable, "-m", "f2b_ext", "report", log, "--json"], cwd=ROOT)
        s = json.loads(out)
        note = (f"{s['records']:,} records, {len(s['top_sources'])} top sources, approximate={s['approximate']} "
                f"(max overcount {s['max_overcount']:,})")
    elif mode == "--child-f2b":
        secs, peak, out = timed(["fail2ban-regex", "-c", argv[2], "--raw", "-o", "ip", log, "netfilter"])
        note = f"{len(out.split()):,} matches"
    else:
        secs, peak, out = timed(["sh", "-c", AWK.format(log=log)])
        note = out.splitlines()[0].strip() if out else ""
    print(json.dumps([secs, peak, note]))
    return 0


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]) if len(sys.argv) > 1 and sys.argv[1].startswith("--child") else main())
