"""`f2b-ext demo`: the live demonstration (f2b_ext.lab.demo); the only command that imports the lab."""

from __future__ import annotations

import sys

from f2b_ext.cli.common import Style, command
from f2b_ext.errors import CliError


def cmd_demo(args) -> int:
    """The live demonstration (f2b_ext.lab.demo), or the fleet's (f2b_ext.lab.fleet_demo)."""
    if args.fleet:
        return demo_fleet(args)
    from f2b_ext.lab.live import environment_problems
    problems = environment_problems()
    if problems:
        raise CliError(f"the live demo {problems[0]} (`make demo` installs everything; "
                       "`f2b-ext test` shows verdicts on the sample logs without root)")
    from f2b_ext.lab.demo import run
    return run(Style(sys.stdout, args.color), firewall=args.firewall, banaction=args.banaction)


def demo_fleet(args) -> int:
    from f2b_ext.lab.fleet_demo import environment_problems
    problems = environment_problems()
    if problems:
        raise CliError(f"the fleet demo {problems[0]} (`make venv` installs everything)")
    from f2b_ext.lab.fleet_demo import run
    from f2b_ext.lab.netns import LabError
    from f2b_ext.lab.fail2ban_server import ServerError
    try:
        return run(Style(sys.stdout, args.color))
    except (LabError, ServerError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None


def add_parser(sub) -> None:
    """The `demo` command's arguments (sub: build_parser's subparsers)."""
    d = command(sub, "demo", cmd_demo, help="the live demonstration on this kernel (root): attacks, bans, escalation",
                description="Builds two network namespaces on this kernel with the seeds' firewall, "
                            "rsyslog and a private fail2ban-server, plays the seeds' attacks and shows "
                            "what happened. Touches nothing outside the namespaces it makes; "
                            "cleans up when done or interrupted.")
    d.add_argument("--firewall", choices=("nft", "iptables-nft"), default="nft",
                   help="the server's firewall as a pure nftables ruleset or as iptables-nft rules")
    d.add_argument("--banaction", choices=("nftset", "ipset-net"), default="nftset",
                   help="the set action that blocks (ipset-net: for iptables firewalls)")
    d.add_argument("--fleet", action="store_true",
                   help="the fleet instead: three servers (nats-server, fail2ban, fleet agent each) in "
                        "namespaces; a scan on one dropped on the others, forged bans refused")
