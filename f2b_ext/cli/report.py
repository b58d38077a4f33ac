"""`f2b-ext report`: streams a log file or the journal into f2b_ext.core.report and prints its summary."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from f2b_ext.cli.common import Style, add_conf_option, add_json_option, command, file_error, filter_spec, netfilter_policy, readable_file
from f2b_ext.core import netfilter as nf
from f2b_ext.errors import CliError
from f2b_ext.system.host import guarded_dependencies


class Progress:
    """A progress bar on stderr, only when stderr is a terminal and the size is known."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.on = total > 0 and stream.isatty()
        self.next = 0.0
        self.start = time.monotonic()

    def update(self, done: int, lines: int):
        now = time.monotonic()
        if not self.on or now < self.next:
            return
        self.next = now + 0.1
        frac = min(1.0, done / self.total)
        rate = done / max(now - self.start, 1e-6) / 1e6
        self.stream.write(f"\r[{'#' * int(30 * frac):<30}] {frac:4.0%}  {lines:,} lines  {rate:.1f} MB/s ")
        self.stream.flush()

    def close(self):
        if self.on:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()


def _log_lines(path: Path, progress_stream=sys.stderr):
    """The lines of a log file (plain or .gz), streamed, with a progress bar on a terminal."""
    import gzip
    readable_file(path)
    try:
        raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        size = os.fstat(raw.fileno()).st_size if path.suffix != ".gz" else 0
    except OSError as exc:
        raise file_error(path, exc) from None
    progress = Progress(size, progress_stream)
    done = 0
    try:
        with raw:
            for n, data in enumerate(raw, 1):
                done += len(data)
                if n % 4096 == 0:
                    progress.update(done, n)
                yield data.decode("utf-8", "replace").rstrip("\r\n")
    except (OSError, EOFError) as exc:
        raise CliError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        progress.close()


def _journal_lines(since: float | None, directory: str | None = None):
    """The journal's kernel-transport records, streamed from journalctl."""
    import subprocess
    exe = shutil.which("journalctl")
    if not exe:
        raise CliError("journalctl not found: --journal needs systemd's journal")
    if directory and not Path(directory).is_dir():
        raise CliError(f"{directory}: no such directory")
    cmd = [exe, "_TRANSPORT=kernel", "-o", "short-iso-precise", "--no-pager", "-q",
           *([f"--directory={directory}"] if directory else [])]
    if since is not None:
        cmd.append(f"--since=@{int(since)}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for data in proc.stdout:
            yield data.decode("utf-8", "replace").rstrip("\n")
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise CliError(f"journalctl: {err.splitlines()[-1] if err else f'exit {proc.returncode}'}")


def _jail_policy(conf: str, name: str) -> nf.Policy:
    """The core's Policy for jail `name` of CONFDIR: its filter's options as fail2ban
    resolves them for it (system.jail_config), both directions read. An option left at
    the shipped filter's own value keeps the core's equivalent default (the filter's
    logprefix is written for fail2ban's whole-line regex, the core's for the prefix)."""
    from f2b_ext.system.filter_runner import stock_init_options
    from f2b_ext.system.jail_config import Jails
    jails = Jails(conf, only=name)
    filter_name, known = jails.filter_options(jails.jails[0])
    if filter_name != "netfilter":
        raise CliError(f"jail {name!r} uses filter {filter_name or 'none'!r} (report reads: netfilter)")
    stock = stock_init_options("netfilter")
    options = {k: v for k, v in known.items() if k in nf.POLICY_OPTIONS and v != stock.get(k)}
    return netfilter_policy(f"of jail {name!r}", options, direction="any")


def cmd_report(args) -> int:
    from f2b_ext.core import report
    journal = args.journal or bool(args.journal_dir)
    if bool(args.logfile) == journal:
        raise CliError("give one LOGFILE or --journal")
    now = time.time()
    try:
        since = report.parse_since(args.since, now) if args.since else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    from f2b_ext.core.escalation import parse_bogons
    bogons = parse_bogons(args.bogons)
    policy = nf.Policy(direction="any")
    if args.jail:                           # the jail's filter and options, as fail2ban reads CONFDIR
        if args.filter != "netfilter":
            raise CliError("give --filter or --jail, not both")
        policy = _jail_policy(args.conf, args.jail)
    elif args.filter != "netfilter":        # the jail's parameters (fail2ban reads the spec)
        options = filter_spec(args.filter, ("netfilter",), "report reads")[1]
        policy = netfilter_policy(args.filter, options, direction="any")
    found = [] if args.no_dependencies else guarded_dependencies()[0]
    dependencies = {str(d.net.network_address): d.source for d in found if d.net.num_addresses == 1}
    rep = report.Report(now=now, since=since, policy=policy, hosts=args.hosts, bogons=bogons,
                        dependencies=dependencies)
    lines = _journal_lines(since, args.journal_dir) if journal else _log_lines(Path(args.logfile))
    for line in lines:
        rep.feed(line)
    summary = rep.summary(top=args.top)
    if args.json:
        import json
        summary["source"] = "journal" if journal else args.logfile
        json.dump(summary, sys.stdout, indent=1)
        print()
        return 0
    out = Style(sys.stdout, args.color)
    width = shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else 100
    for line in report.render(summary, "journal (kernel transport)" if journal else args.logfile,
                              out, width=width):
        print(line)
    return 0


def add_parser(sub) -> None:
    """The `report` command's arguments (sub: build_parser's subparsers)."""
    r = command(sub, "report", cmd_report,
                help="what a firewall log says: sources, ports, backscatter, subnets, activity",
                description="Read a kernel firewall log (plain or .gz) or the journal's kernel "
                            "records and sum it up: records per LOG prefix and direction, protocols, "
                            "top sources and targeted ports, outbound attempts, backscatter (hosts that "
                            "answered packets forged with this server's address), candidate subnets "
                            "for escalation and activity per minute. Streams: any size, bounded memory.")
    r.add_argument("logfile", nargs="?", help="the log file (e.g. /var/log/netfilter.log)")
    r.add_argument("--journal", action="store_true", help="read the journal (_TRANSPORT=kernel) instead")
    r.add_argument("--journal-dir", metavar="DIR", help="read the journal files in DIR (journalctl -D), e.g. a copy")
    r.add_argument("--since", metavar="WHEN", help="only records since an age (30m, 2h, 1d) or a date (2026-11-21T08:00)")
    add_json_option(r)
    r.add_argument("--top", type=int, default=10, metavar="N", help="rows per table (default 10)")
    r.add_argument("--no-dependencies", action="store_true",
                   help="the log is another machine's: do not mark (or protect) this machine's dependencies")
    r.add_argument("--bogons", default="default", metavar="LIST",
                   help="networks never escalated, as subnet-escalate's bogons parameter: default, none, or CIDRs")
    r.add_argument("--filter", default="netfilter", metavar="SPEC",
                   help='the jail\'s filter and parameters, e.g. "netfilter[icmptypes=8|13, neverprotos=2|47]" '
                        '(both directions are read whatever its direction)')
    r.add_argument("--jail", metavar="NAME",
                   help="judge lines as jail NAME of --conf does: its filter's options as fail2ban reads them "
                        "(the jail's filter line, the filter's .local), both directions read")
    add_conf_option(r)
    r.add_argument("--hosts", type=int, default=5, metavar="N",
                   help="attacking hosts that make a /24 (/64) a candidate subnet (default 5, as subnet-escalate)")
