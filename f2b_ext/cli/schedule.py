"""`f2b-ext schedule`: every jail's bans from the running fail2ban (f2b_ext.system.fail2ban_client), drawn by f2b_ext.core.schedule."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from f2b_ext.cli.common import Style, add_conf_option, add_json_option, command
from f2b_ext.errors import CliError
from f2b_ext.system.fail2ban_client import Fail2ban, socket_path


def cmd_schedule(args) -> int:
    from f2b_ext.core import schedule
    f2b = Fail2ban(socket_path(args.conf, args.socket))
    try:
        jails = [j for j in f2b.jails() if not args.jail or j in args.jail]
        missing = set(args.jail or ()) - set(jails)
        if missing - {schedule.REMOTE_JAIL}:
            raise CliError(f"no such jail: {', '.join(sorted(missing - {schedule.REMOTE_JAIL}))}")
        bans = []
        for jail in jails:
            escalating = schedule.ESCALATING_ACTION in f2b.ask("get", jail, "actions")
            for line in f2b.ask("get", jail, "banip", "--with-time"):
                ban = schedule.parse_ban(jail, line, escalating)
                if ban:
                    bans.append(ban)
    finally:
        f2b.close()
    now = time.time()
    remote = _fleet_ledger_rows(args.fleet_status, now) if not args.jail or schedule.REMOTE_JAIL in args.jail else []
    if remote:
        bans += schedule.remote_bans(remote)
        jails.append(schedule.REMOTE_JAIL)
    if args.json:
        import json
        json.dump(schedule.as_json(bans, now), sys.stdout, indent=1)
        print()
        return 0
    width = shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else 100
    for line in schedule.render(bans, now, jails, width=width, style=Style(sys.stdout, args.color)):
        print(line)
    return 0


def _fleet_ledger_rows(status_path: str | None, now: float) -> list:
    """The fleet agent's remote bans from its ledger (named in its status file); none
    when no agent runs here."""
    import json as _json
    import sqlite3
    from f2b_ext.system.fleet_agent import DEFAULT_STATUS
    from f2b_ext.system.fleet_ledger import LedgerStore
    try:
        ledger = _json.loads(Path(status_path or DEFAULT_STATUS).read_text()).get("ledger")
        return LedgerStore(ledger, readonly=True).bans(now) if ledger else []
    except (OSError, ValueError, sqlite3.Error):
        if status_path:
            raise CliError(f"{status_path}: no fleet agent status or ledger to read") from None
        return []


def add_parser(sub) -> None:
    """The `schedule` command's arguments (sub: build_parser's subparsers)."""
    sc = command(sub, "schedule", cmd_schedule, help="every ban of every jail and when it ends, as a timeline",
                 description="Ask the running fail2ban for every jail's bans (fail2ban-client's "
                             "`get JAIL banip --with-time`) and draw them on one time axis, soonest "
                             "end first; subnets that subnet-escalate banned are marked.")
    sc.add_argument("jail", nargs="*", help="only these jails (default: all)")
    sc.add_argument("--socket", metavar="PATH", help="fail2ban's socket (default: from CONFDIR/fail2ban.conf)")
    add_conf_option(sc)
    add_json_option(sc)
    sc.add_argument("--fleet-status", metavar="FILE",
                    help="the fleet agent's status file, whose ledger lists its remote bans (default: "
                         "/run/f2b-ext/fleet-status.json when an agent runs here)")
