"""`f2b-ext test`: sample logs (or your own) through the real filter, with the core's reason for each verdict."""

from __future__ import annotations

import ipaddress
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from f2b_ext import shipped
from f2b_ext.cli.common import Style, command, filter_spec, netfilter_policy, readable_file
from f2b_ext.core import netfilter as nf
from f2b_ext.errors import CliError
from f2b_ext.system.filter_runner import FilterRunner, config_dir, ensure_utc
from f2b_ext.system.samples import SampleError, read_cases


# The filters this suite ships. Only netfilter has a pure core that explains each verdict
# (f2b_ext/core/netfilter.py); for the others the verdict is fail2ban's alone.
SHIPPED_FILTERS = ("netfilter", "ipfw", "synrecv")


def _filter(spec: str) -> tuple[str, dict]:
    return filter_spec(spec, SHIPPED_FILTERS, "this suite ships")


def _runner(spec: str, workdir: Path) -> tuple[FilterRunner, nf.Policy | None]:
    name, options = _filter(spec)
    policy = netfilter_policy(spec, options) if name == "netfilter" else None
    try:
        return FilterRunner(name, options, config_dir(workdir)), policy
    except ValueError as exc:
        raise CliError(f"filter {spec}: {exc}") from None


@dataclass
class Judged:
    line: str
    banned: str | None        # fail2ban's verdict: the address it would ban
    reason: str               # the core's explanation
    agree: bool               # fail2ban and the core agree


def judge(runner: FilterRunner, policy: nf.Policy | None, line: str, journal: bool = False) -> Judged:
    from fail2ban.server.mytime import MyTime
    found = runner.match(line, journal_time=MyTime.time() if journal else None)
    banned = found[0].ip if found else None
    if policy is None:          # no core for this filter: fail2ban's word, and which regex
        reason = (f"failregex #{found[0].regex_index + 1}" + "".join(f", {k}={v}" for k, v in found[0].groups.items())
                  if found else "no failregex matched")
        return Judged(line, banned, reason, True)
    verdict = nf.judge_line(line, policy)
    agree = bool(found) == verdict.attempt and (not found or banned == str(verdict.remote))
    return Judged(line, banned, verdict.reason, agree)



def cmd_test(args) -> int:
    """Samples (with failJSON expectations) or plain logs through the filter."""
    out = Style(sys.stdout, args.color)
    name, options = _filter(args.filter)
    if name == "netfilter":
        netfilter_policy(args.filter, options)      # a bad value is an error, also with no line to judge
    files = [Path(f) for f in args.logfile] or \
        [f for f in shipped.listing(shipped.SAMPLES) if f.name.startswith(name)]
    if not files:
        raise CliError(f"no sample logs for {name} in {shipped.data(shipped.SAMPLES)}")
    for f in args.logfile:
        readable_file(f)
    ensure_utc()
    totals = Counter()
    with tempfile.TemporaryDirectory(prefix="f2b-ext-") as tmp:
        runners: dict = {}

        def get(spec):
            if spec not in runners:
                runners[spec] = _runner(spec, Path(tmp) / str(len(runners)))
            return runners[spec]

        for path in files:
            try:
                with shipped.as_file(path) as real:          # a shipped sample is package data
                    cases = read_cases(real)
            except (SampleError, UnicodeDecodeError, OSError) as exc:
                raise CliError(f"{path}: {exc}") from None
            has_expectations = any(c.expect for c in cases)
            for case in cases:
                opts = {k: v for k, v in case.options.items() if k != "logtype"}
                spec = args.filter if not opts else \
                    f"{name}[" + ", ".join(f'{k}="{v}"' for k, v in sorted(opts.items())) + "]"
                runner, policy = get(spec)
                j = judge(runner, policy, case.line, journal=case.options.get("logtype") == "journal")
                failed = not j.agree
                if has_expectations:
                    want = case.expect.get("host") if case.should_match else None
                    failed |= (j.banned is None) != (want is None) or \
                        (want is not None and j.banned != str(ipaddress.ip_network(want, strict=False)
                                                             if "/" in want else ipaddress.ip_address(want)))
                totals["lines"] += 1
                totals["ban" if j.banned else "ignored"] += 1
                totals["failed"] += failed
                if args.quiet and not failed:
                    continue
                where = out.dim(f"{path.name}:{case.lineno}")
                if j.banned:
                    verdict = out.green(f"BAN {j.banned}") + f"  attempt: {j.reason}"
                else:
                    verdict = out.dim("ignored: " + j.reason)
                mark = out.red("FAIL ") if failed else ""
                print(f"{mark}{where}  {verdict}")
                if failed and not j.agree:
                    print(out.red("     fail2ban and the core disagree on this line (a bug: please report it)"))
    summary = (f"{totals['lines']} lines: {totals['ban']} would ban, {totals['ignored']} ignored, "
               f"{totals['failed']} failed")
    print(out.bold(summary) if not totals["failed"] else out.red(summary))
    return 1 if totals["failed"] else 0


def add_parser(sub) -> None:
    """The `test` command's arguments (sub: build_parser's subparsers)."""
    t = command(sub, "test", cmd_test, help="run sample logs (or your own log) through the filter",
                description="Print the verdict and the reason for every line, then totals. "
                            "Sample files with failJSON comments are checked against their "
                            "expectations; the exit status is 1 if any check failed.")
    t.add_argument("logfile", nargs="*", help="log files (default: the shipped samples)")
    t.add_argument("--filter", default="netfilter", metavar="SPEC",
                   help='filter and options as a jail writes them, e.g. "netfilter[direction=out]"')
    t.add_argument("-q", "--quiet", action="store_true", help="print only failures and totals")
