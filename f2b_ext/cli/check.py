"""`f2b-ext check`: gathers this machine and its fail2ban as f2b_ext.core.check's plain data
(Machine, JailView), lets the core judge it, prints one line per finding."""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import time
from pathlib import Path

from f2b_ext.cli.common import Style, add_conf_option, add_json_option, command
from f2b_ext.system.filter_runner import parse_filter_spec
from f2b_ext.system.host import guarded_dependencies
from f2b_ext.system.jail_config import Jails


def _configured_jails(conf: str) -> list:
    """The enabled jails as fail2ban's own JailsReader reads CONFDIR (system.jail_config)."""
    from f2b_ext.core import check
    jails = []
    for jail in Jails(conf).jails:
        o = jail.options
        specs = [a for a in str(o.get("action") or "").splitlines() if a.strip()]
        jails.append(check.JailView(
            name=jail.getName(), filter=parse_filter_spec(o.get("filter") or "")[0] if o.get("filter") else "",
            backend=str(o.get("backend") or "auto"),
            logpaths=tuple(p.strip() for p in str(o.get("logpath") or "").splitlines() if p.strip()),
            actions=tuple(map(check.action_stem, specs)), action_names=tuple(map(_action_name, specs)),
            ignoreip=tuple(str(o.get("ignoreip") or "").replace(",", " ").split()),
            ignoreself=str(o.get("ignoreself", True)).lower() not in ("false", "no", "0", "off")))
    return jails


def _action_name(spec: str) -> str:
    """The name fail2ban's JailReader gives an action line: its actname=, else the file's stem."""
    from fail2ban.helpers import extractOptions
    try:
        name, options = extractOptions(spec.strip())
    except ValueError:
        return spec.strip()
    return options.get("actname") or os.path.splitext(name)[0]


def _fail2ban(conf: str):
    """The running fail2ban whose socket CONFDIR names (system.fail2ban_client: its own
    protocol, a root-owned socket), or None when none answers there."""
    from f2b_ext.system.fail2ban_client import Fail2ban, Fail2banError, socket_path
    try:
        return Fail2ban(socket_path(conf))
    except Fail2banError:
        return None


def _running(f2b, jails: list) -> dict:
    """Machine.running: the actions the running fail2ban has for each configured jail;
    {} when fail2ban does not answer."""
    from f2b_ext.system.fail2ban_client import Fail2banError
    if f2b is None:
        return {}
    try:
        names = set(f2b.jails())
        return {j.name: tuple(f2b.ask("get", j.name, "actions")) if j.name in names else None for j in jails}
    except Fail2banError:
        return {}


def _machine(conf: str):
    """Everything `check` looks at, as plain data."""
    import glob
    import subprocess
    from f2b_ext.core import check
    m = check.Machine(jails=_configured_jails(conf))
    texts = []
    for path in ["/etc/rsyslog.conf", *sorted(glob.glob("/etc/rsyslog.d/*.conf"))]:
        try:
            texts.append(Path(path).read_text(errors="replace"))
        except OSError:
            pass
    m.kernel_only_logs = check.imklog_only_files(texts)
    nft = shutil.which("nft")
    if nft:
        r = subprocess.run([nft, "list", "ruleset"], capture_output=True, text=True)
        if r.returncode == 0:
            m.log_rules, m.nflog_rules = check.nft_log_rules(r.stdout)
        else:
            m.ruleset_readable = False
    for tool in ("iptables-legacy-save", "ip6tables-legacy-save"):
        exe = shutil.which(tool)
        if exe:
            r = subprocess.run([exe], capture_output=True, text=True)
            rules, nflog = check.iptables_log_rules(r.stdout, tool.replace("-save", ""))
            m.log_rules += rules
            m.nflog_rules += nflog
    try:
        m.loggers = check.nf_log_loggers(Path("/proc/net/netfilter/nf_log").read_text())
    except OSError:
        m.loggers = {}
    release = os.uname().release
    m.logger_available = any(name in check.SYSLOG_LOGGERS for name in m.loggers.values()) or any(
        Path(p).exists() for mod in check.SYSLOG_LOGGERS
        for p in (f"/sys/module/{mod}", *glob.glob(f"/lib/modules/{release}/kernel/net/*/netfilter/{mod}.ko*"),
                  *glob.glob(f"/lib/modules/{release}/kernel/net/netfilter/{mod}.ko*")))
    # the kernel registers nf_log_all_netns in the initial namespace only: its absence
    # (where the rest of net/netfilter is) means this is a container's namespace
    sysctl = Path("/proc/sys/net/netfilter/nf_log_all_netns")
    m.init_netns = sysctl.exists() or not sysctl.parent.is_dir()
    try:
        m.all_netns = sysctl.read_text().strip() == "1" if m.init_netns else None
    except OSError:
        m.all_netns = None
    m.own_addresses = tuple(_own_addresses())
    found, problems = guarded_dependencies()
    m.dependencies, m.dependency_problems = tuple(dict.fromkeys(map(str, found))), tuple(problems)
    if any("nftset" in j.actions for j in m.jails):
        m.nftables_binding = _fail2ban_imports("nftables")
    f2b = _fail2ban(conf)
    try:
        m.running = _running(f2b, m.jails)
        for j in m.jails:
            if {"nftset", "ipset-net"} & set(j.actions):
                m.enforcement[j.name] = _enforcement(j, f2b)
    finally:
        if f2b is not None:
            f2b.close()
    from fail2ban.version import version
    from f2b_ext.core.install import parse_version
    m.fail2ban = parse_version(version)
    return m


def _fail2ban_imports(module: str) -> bool:
    """Can the Python that runs fail2ban-server import `module`?"""
    import subprocess
    from f2b_ext.system.install import InstallError, fail2ban_python
    server = shutil.which("fail2ban-server")
    try:
        python = fail2ban_python(server) if server else sys.executable
    except InstallError:
        python = sys.executable
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def _enforcement(jail, f2b):
    """(listed only, kernel only, retimed) for a jail with a set action, comparing
    fail2ban's `get JAIL banip --with-time` with the kernel's sets (this namespace, the
    one fail2ban runs in); None when fail2ban does not answer."""
    import subprocess
    import time
    from f2b_ext.core import ipset, schedule, setsync
    from f2b_ext.core.escalation import ban_left
    from f2b_ext.system.fail2ban_client import Fail2banError
    if f2b is None:
        return None
    try:
        lines = f2b.ask("get", jail.name, "banip", "--with-time")
    except Fail2banError:
        return None
    now, listed = time.time(), {}
    for ban in filter(None, (schedule.parse_ban(jail.name, line, False) for line in lines)):
        listed[ipaddress.ip_network(ban.target, strict=False)] = ban_left(ban.start, ban.length, now)
    held = {}
    if "nftset" in jail.actions and shutil.which("nft"):
        from f2b_ext.core.nftset import jail_elements
        held.update(jail_elements(jail.name, lambda *a: subprocess.run(["nft", *a], capture_output=True,
                                                                      text=True).stdout))
    if "ipset-net" in jail.actions and shutil.which("ipset"):
        for fam in (4, 6):
            out = subprocess.run(["ipset", "save", ipset.set_name(jail.name, fam)], capture_output=True, text=True).stdout
            held.update(ipset.parse_save(out))
    plan = setsync.plan(listed, held, tolerance=3)
    return ([n for n, _ in plan.add], plan.remove, [n for n, _ in plan.retime])


def _own_addresses():
    """This machine's addresses that a remote could know it by (not loopback, not link-local)."""
    from f2b_ext.system.host import own_addresses
    return [a for a in map(ipaddress.ip_address, own_addresses()) if not (a.is_loopback or a.is_link_local)]


def cmd_check(args) -> int:
    from f2b_ext.core import check
    found = check.findings(_machine(args.conf))
    if args.json:
        import json
        from dataclasses import asdict
        json.dump([asdict(f) for f in found], sys.stdout, indent=1)
        print()
    else:
        out = Style(sys.stdout, args.color)
        label = {check.PROBLEM: out.red("PROBLEM"), check.WARNING: out.bold("warning"), check.OK: out.green("ok     ")}
        for f in found:
            if f.level == check.OK and args.quiet:
                continue
            print(f"{label[f.level]}  {f.subject}: {f.message}" + (f"  -> fix: {f.fix}" if f.fix else ""))
        problems = sum(f.level == check.PROBLEM for f in found)
        print(out.red(f"{problems} problem{'s' if problems > 1 else ''}") if problems else out.green("no problems found"))
    return 1 if any(f.level == check.PROBLEM for f in found) else 0


def add_parser(sub) -> None:
    """The `check` command's arguments (sub: build_parser's subparsers)."""
    c = command(sub, "check", cmd_check, help="find what keeps the jails from seeing or banning attacks",
                description="Read the configured fail2ban (its enabled jails), rsyslog, the live "
                            "firewall ruleset and the kernel's logging state, and print one line per "
                            "finding with its fix: forgeable logs, LOG rules rate-limited into silence, "
                            "no LOG rule, no kernel logger, ignoreip without this machine's addresses, "
                            "subnet escalation without a ban action that holds subnets. Exit 1 if "
                            "there is a problem.")
    add_conf_option(c)
    add_json_option(c)
    c.add_argument("-q", "--quiet", action="store_true", help="only problems and warnings")
