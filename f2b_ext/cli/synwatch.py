"""`f2b-ext synwatch`: the SYN_RECV watcher (f2b_ext.system.synwatch around f2b_ext.core.synwatch)."""

from __future__ import annotations

import argparse
import sys

from f2b_ext.cli.common import command
from f2b_ext.errors import CliError


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
        return value
    return parse


def cmd_synwatch(args) -> int:
    """Sample SYN_RECV entries; log one line per offender per interval (f2b_ext.system.synwatch)."""
    from f2b_ext.core import synwatch as sw
    from f2b_ext.system.synwatch import DEFAULT_LOG, LineSink, Watcher, reader_for
    from f2b_ext.core.escalation import parse_networks
    try:
        thresholds = sw.Thresholds(host=args.host, net=args.net, prefix4=args.prefix4, prefix6=args.prefix6,
                                   ports=sw.parse_ports(args.ports), unattributed=args.unattributed,
                                   protected=parse_networks(args.ignore, "--ignore"))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        sink = LineSink("-" if args.once and args.log is None else (args.log or DEFAULT_LOG))
    except OSError as exc:
        raise CliError(f"cannot write the log {exc.filename}: {exc.strerror}") from None
    warn = lambda msg: print(f"f2b-ext synwatch: {msg}", file=sys.stderr, flush=True)
    reader = reader_for(args.reader, warn)
    watcher = Watcher(thresholds, reader, sink, capacity=args.capacity)
    if args.once:
        watcher.once()
        return 0
    warn(f"sampling SYN_RECV every {args.interval:g}s with {reader.name}: host >= {args.host}, "
         f"/{args.prefix4} (/{args.prefix6}) >= {args.net}, ports {args.ports}; lines to "
         f"{'stdout' if sink.path == '-' else sink.path}")
    watcher.run(args.interval)
    return 0


def add_parser(sub) -> None:
    """The `synwatch` command's arguments (sub: build_parser's subparsers)."""
    from f2b_ext.system.synwatch import DEFAULT_LOG          # no fail2ban import: the watcher runs without it
    w = command(sub, "synwatch", cmd_synwatch, help="log sources holding many half-open (SYN_RECV) connections",
                description="A SYN flood on an open port leaves no firewall log line; its trace "
                            "is connections stuck in SYN_RECV. Every INTERVAL seconds, count them "
                            "per remote address and per /24 (/64), and write one line per offender "
                            "(a prefix at or above --net, else an address at or above --host) to the "
                            "log that filter.d/synrecv.conf reads. Never resolves names; this "
                            "machine's addresses, loopback and --ignore are never reported.")
    w.add_argument("--interval", type=_positive(float), default=10.0, metavar="SECONDS",
                   help="seconds between samples (default 10)")
    w.add_argument("--host", type=_positive(int), default=20, metavar="N",
                   help="entries from one address that make it an offender (default 20)")
    w.add_argument("--net", type=_positive(int), default=50, metavar="N",
                   help="entries from one /24 (/64) that make the prefix an offender (default 50)")
    w.add_argument("--prefix4", type=int, default=24, metavar="LEN", help="IPv4 prefix length counted (default 24)")
    w.add_argument("--prefix6", type=int, default=64, metavar="LEN", help="IPv6 prefix length counted (default 64)")
    w.add_argument("--ports", default="all", metavar="LIST",
                   help='local ports watched, e.g. "80,443" or "8000-8099" (default all)')
    w.add_argument("--ignore", action="append", default=[], metavar="CIDR",
                   help="never report this network, nor a prefix holding it (repeatable; use your jail's ignoreip)")
    w.add_argument("--unattributed", type=_positive(int), default=200, metavar="N",
                   help="log a summary when N entries belong to no offender (a spread flood; default 200)")
    w.add_argument("--reader", choices=("auto", "netlink", "proc"), default="auto",
                   help="netlink sock_diag (cheaper) or /proc/net/tcp{,6} (default: netlink if available)")
    w.add_argument("--log", metavar="FILE",
                   help=f"where lines go ('-': stdout, for journald; default {DEFAULT_LOG})")
    w.add_argument("--capacity", type=_positive(int), default=65536, metavar="N",
                   help="addresses (and prefixes) counted exactly per sample; beyond, counts are bounded "
                        "estimates that never exceed the truth (default 65536)")
    w.add_argument("--once", action="store_true", help="take one sample, print its lines (to --log if given), exit")
