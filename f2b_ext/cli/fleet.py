"""`f2b-ext fleet init|run|create|status`: the fleet's configuration, agent and status."""

from __future__ import annotations

import time
from pathlib import Path

from f2b_ext.cli.common import add_json_option, command
from f2b_ext.errors import CliError


def cmd_fleet(args) -> int:
    """The fleet: init (cluster config), run (the agent), status."""
    if args.fleet_command == "init":
        from f2b_ext.system import fleet_init
        servers = {}
        for item in args.servers:
            name, sep, addr = item.partition("=")
            if not sep:
                raise CliError(f"{item!r}: give each server as NAME=ADDRESS")
            servers[name] = addr
        try:
            written = fleet_init.write(Path(args.out), servers, args.store, args.certs)
        except ValueError as exc:           # fleet.EventError is one
            raise CliError(str(exc).splitlines()[0]) from None
        print(f"wrote {len(written)} files under {args.out}: per server nats-server.conf, fleet.conf and its "
              f"certificate; then once: f2b-ext fleet create --config admin/fleet.conf")
        return 0
    from f2b_ext.system.fleet_agent import DEFAULT_CONFIG, DEFAULT_STATUS, AgentConfig
    if args.fleet_command == "status":
        import json as _json
        path = Path(args.status or DEFAULT_STATUS)
        try:
            st = _json.loads(path.read_text())
        except FileNotFoundError:
            raise CliError(f"no status at {path}: is the agent running? (systemctl status f2b-ext-fleet)") from None
        except ValueError:
            raise CliError(f"{path}: unreadable status") from None
        if args.bans:
            return _fleet_bans(st.get("ledger"), args.json)
        if args.json:
            print(_json.dumps(st, indent=1))
            return 0
        age = time.time() - st["time"]
        print(f"server {st['server']}: {'connected' if st['connected'] else 'NOT connected'}, "
              f"spool depth {st['spool_depth']}, published {st['published']}"
              + (f" (status {age:.0f}s old: agent stopped?)" if age > 10 else ""))
        for name, s in st["servers"].items():
            print(f"  {name:20} last event {time.strftime('%H:%M:%S', time.localtime(s['last_event']))}, lag {s['lag']:.3f}s")
        for name, until in st["quarantined"].items():
            print(f"  quarantined {name} until {time.strftime('%H:%M:%S', time.localtime(until))}")
        if "remote_bans" in st:
            kernel = st.get("kernel_bans")
            checked = (f", {kernel} in the kernel at {time.strftime('%H:%M:%S', time.localtime(st['kernel_checked']))}"
                       if kernel is not None else "")
            print(f"  remote bans {st['remote_bans']} listed ({st['remote']}){checked}, "
                  f"{st.get('repairs', 0)} repaired")
        print("  verdicts: " + (", ".join(f"{k} {v}" for k, v in sorted(st["verdicts"].items())) or "none"))
        for net, until in st["fleet_decisions"].items():
            print(f"  fleet ban {net} until {time.strftime('%Y-%m-%d %H:%M', time.localtime(until))}")
        return 0
    from f2b_ext.core import fleet
    try:
        cfg = AgentConfig.read(args.config or DEFAULT_CONFIG, status=args.status)
    except ValueError as exc:               # fleet.EventError is one
        raise CliError(str(exc)) from None
    from f2b_ext.system.fleet_agent import create_streams, run
    if args.fleet_command == "create":
        import nats.errors
        try:
            created = create_streams(cfg)
        except (nats.errors.Error, OSError, TimeoutError) as exc:      # no server, a refusal: one line
            raise CliError(f"fleet create: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        print(f"stream {fleet.STREAM} and buckets {fleet.PROTECTED_BUCKET}, {fleet.DECISIONS_BUCKET} "
              f"ready ({cfg.replicas} replica(s)): "
              + (f"created {', '.join(created)}" if created else "they were there, with these settings"))
        return 0
    run(cfg)
    return 0


def _fleet_bans(path, as_json: bool) -> int:
    """`fleet status --bans`: every remote ban the agent lists, from its ledger: where it
    came from (origin servers, their jail and evidence kind) and when it ends."""
    import json as _json
    import sqlite3
    from f2b_ext.system.fleet_ledger import LedgerStore
    if not path:
        raise CliError("the agent's status names no ledger (an agent older than the ledger?)")
    try:
        bans = LedgerStore(path, readonly=True).bans(time.time())
    except sqlite3.Error as exc:
        raise CliError(f"{path}: {exc}") from None
    if as_json:
        print(_json.dumps([{"target": t, "until": u, "reports": [dict(zip(("origin", "until", "jail", "evidence", "at"), r))
                                                                 for r in reports]} for t, u, reports in bans], indent=1))
        return 0
    print(f"{len(bans)} remote bans")
    for target, until, reports in bans:
        origins = "; ".join(f"{o} ({jail}, {evidence})" for o, _, jail, evidence, _ in reports) or "?"
        print(f"  {target:40} until {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(until))} from {origins}")
    return 0


def add_parser(sub) -> None:
    """The `fleet` command's arguments (sub: build_parser's subparsers)."""
    fl = command(sub, "fleet", cmd_fleet, help="share bans across servers through NATS JetStream",
                 description="A fleet of servers shares its bans: `init` writes a NATS cluster "
                             "configuration with TLS and one credential per server, `run` is the agent "
                             "(its systemd unit: f2b-ext-fleet), `status` says what it sees.")
    fsub = fl.add_subparsers(dest="fleet_command", metavar="FLEET_COMMAND")
    fsub.required = True
    fi = fsub.add_parser("init", help="write nats-server configs, TLS files and agent configs for a fleet")
    fi.add_argument("servers", nargs="+", metavar="NAME=ADDRESS", help="every fleet server's name and address")
    fi.add_argument("--out", required=True, metavar="DIR", help="an empty directory for the files")
    fi.add_argument("--store", default="/var/lib/nats/f2b-ext", metavar="DIR", help="JetStream's store directory")
    fi.add_argument("--certs", metavar="DIR",
                    help="where the certificates will be on each server (default: where they are written)")
    fr = fsub.add_parser("run", help="the agent: publish the spool, apply the fleet's bans (its systemd unit)")
    fr.add_argument("--config", metavar="FILE", help="agent configuration (default /etc/f2b-ext/fleet.conf)")
    fr.add_argument("--status", metavar="FILE", help="status file (default /run/f2b-ext/fleet-status.json)")
    fc = fsub.add_parser("create", help="create the stream and buckets once (with admin/fleet.conf from init)")
    fc.add_argument("--config", metavar="FILE", required=True, help="the administrator's fleet.conf")
    fc.set_defaults(status=None)
    fs = fsub.add_parser("status", help="servers seen, lag, spool depth, quarantined servers, remote bans")
    fs.add_argument("--status", metavar="FILE", help="status file (default /run/f2b-ext/fleet-status.json)")
    add_json_option(fs)
    fs.add_argument("--bans", action="store_true",
                    help="every remote ban the agent lists: origin servers, jail, evidence kind, end")
