#!/usr/bin/env python3
"""Where a filter's time goes, in instructions per line (callgrind), free of the machine's load.

    .venv/bin/python bench/filter_instructions.py [--lines 2000] [--mix attack|captured]
                                                  [--filter netfilter naive floor ...]
                                                  [--conf OTHER.conf]

For each filter it counts, with `valgrind --tool=callgrind` (Debian's `valgrind`; not
needed by the suite), the instructions that fail2ban-regex's own `Fail2banRegex.process()`
spends on `--lines` lines of one mix made by bench/filter_throughput.py's generators,
minus the same run on no lines (start-up, reading the filter, compiling), divided by
the lines: fail2ban's whole per-line cost in its summary mode ("process"). "search"
counts only the compiled failregexes' `search()` over the date-stripped lines, as
fail2ban calls them: the regex's own cost. Counts do not depend on the other sessions'
load, so two filters measured at different times compare; seconds do (filter_throughput.py).

The filters (--filter) are netfilter (this checkout's filter.d/netfilter.conf), naive
(`.*SRC=<HOST>` with netfilter.conf's datepattern), naive-default-dates (fail2ban's default
date templates) and floor (matches nothing), as in filter_throughput.py; --conf adds
another version of netfilter.conf (git show REV:filter.d/netfilter.conf), shown as "conf".
"""
from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import filter_throughput as ft  # noqa: E402

MIXES = {"attack": ft.attack_log, "captured": ft.kernel_log}


def _child(confdir: str, flt: str, mix: str, lines: int, what: str) -> None:
    """Run under callgrind: build the lines, load the filter, process `lines` of them."""
    from fail2ban.client.fail2banregex import Fail2banRegex, get_opt_parser
    from f2b_ext.system.filter_runner import ensure_utc
    ensure_utc()
    text = MIXES[mix](max(lines, 1), random.Random(7))[:lines]
    opts, _ = get_opt_parser().parse_args(["-c", confdir, "/dev/null", flt])
    f2br = Fail2banRegex(opts)
    f2br.output = lambda line: None
    assert f2br.readRegex(flt, "fail")
    if what == "process":
        f2br.process(text)
        return
    # the date-stripped lines, as fail2ban hands them to the failregexes
    from fail2ban.server.failregex import Regex
    stripped = []
    for line in text:
        f2br.testRegex(line)
        stripped.append(Regex._tupleLinesBuf(f2br._filter._Filter__lineBuffer))
    searches = [r._regexObj.search for r in f2br._filter._Filter__failRegex]
    # the baseline ("search0") makes the same calls to a builtin that does nothing
    _searches(searches if what == "search" else [len] * len(searches), stripped)


def _searches(searches, stripped):
    for line in stripped:
        for search in searches:
            search(line)


def _instructions(confdir: Path, flt: str, mix: str, lines: int, what: str, tmp: Path) -> int:
    """Instructions callgrind counts for the child's run (all of it, or `_searches`)."""
    out = tmp / f"cg.{flt}.{mix}.{lines}.{what}"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    cmd += [sys.executable, __file__, "--child", str(confdir), flt, mix, str(lines), what]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")   # same runs, same counts
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    summary = re.search(r"^summary:\s*(\d+)", out.read_text(errors="replace"), re.M) or \
        re.search(r"^totals:\s*(\d+)", out.read_text(errors="replace"), re.M)
    return int(summary.group(1))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        confdir, flt, mix, lines, what = sys.argv[2:7]
        _child(confdir, flt, mix, int(lines), what)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--mix", choices=sorted(MIXES), default="attack")
    ap.add_argument("--filter", nargs="+", default=["netfilter", "naive", "floor"])
    ap.add_argument("--conf", help="another netfilter.conf, measured as filter 'conf'")
    ap.add_argument("--what", nargs="+", choices=("process", "search"), default=["process", "search"])
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    from f2b_ext.system.filter_runner import config_dir
    with tempfile.TemporaryDirectory(prefix="f2b-cg-") as tmp:
        tmp = Path(tmp)
        confdir = config_dir(tmp / "conf")
        (confdir / "filter.d" / "naive.conf").write_text(ft.NAIVE)
        (confdir / "filter.d" / "floor.conf").write_text(ft.FLOOR)
        (confdir / "filter.d" / "naive-default-dates.conf").write_text(ft.NAIVE_DEFAULT_DATES)
        filters = list(args.filter)
        if args.conf:
            shutil.copy2(args.conf, confdir / "filter.d" / "conf.conf")
            filters.append("conf")
        print(f"instructions per line, {args.mix} mix, {args.lines:,} lines (callgrind; Python "
              f"{sys.version.split()[0]}):\n")
        print("| filter | " + " | ".join(args.what) + " |")
        print("|---|" + "---:|" * len(args.what))
        for flt in filters:
            cells = []
            for what in args.what:
                full = _instructions(confdir, flt, args.mix, args.lines, what, tmp)
                # process: minus the same run on no lines; search: minus the same lines
                # with the searches replaced by calls that do nothing
                none = (_instructions(confdir, flt, args.mix, 0, what, tmp) if what == "process"
                        else _instructions(confdir, flt, args.mix, args.lines, "search0", tmp))
                cells.append(f"{(full - none) / args.lines / 1000:.1f}k")
            print(f"| {flt} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
