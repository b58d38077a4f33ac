"""`f2b-ext check`: what would keep the jails from seeing attacks, or from banning them.

How it works: the adapter (cli) gathers plain data: the enabled jails as fail2ban's own
JailsReader reads them, the rsyslog configuration, the live ruleset (`nft list ruleset`,
and `iptables-legacy-save` where legacy rules exist), the kernel's nf_log state and this
machine's addresses. `findings()` turns that into `Finding`s, one line each with a fix.
The rules are tables below; nothing here does I/O.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from f2b_ext.core.escalation import ACTION_NAME as ESCALATING_ACTION
from f2b_ext.core.escalation import TIME_UNIT_NAMES, TIME_UNITS, WEEK
from f2b_ext.core.install import JAIL_PREFIX

PROBLEM, WARNING, OK = "problem", "warning", "ok"

# Ban actions (action.d stems) that hold a subnet in every supported fail2ban:
# iptables takes "-s 203.0.113.0/24", an ipfw table a CIDR.
SUBNET_CAPABLE = frozenset({"nftset", "ipset-net", "iptables", "iptables-multiport", "iptables-allports",
                            "iptables-new", "iptables-multiport-log", "firewallcmd-rich-rules",
                            "firewallcmd-rich-logging", "ufw", "route", "shorewall",
                            "bsd-ipfw"})          # `ipfw table N add 203.0.113.0/24`
# Stock ban actions that hold only hosts, up to a fail2ban version: stem -> the first
# version whose stock action holds a subnet (None: none yet). fail2ban 1.1.1 gave the
# stock nftables action `flags interval` (addr_options) by default, and the -multiport and
# -allports variants include it; before (1.0.2, Debian 12; 1.1.0, Debian 13) a /24 ban
# fails there. The ipset actions create hash:ip sets (1.1.1's `ipsettype` can say hash:net,
# but hash:ip stays the default).
NFTABLES_INTERVAL = (1, 1, 1)
HOSTS_ONLY_UNTIL = {
    "nftables": NFTABLES_INTERVAL, "nftables-multiport": NFTABLES_INTERVAL,
    "nftables-allports": NFTABLES_INTERVAL,
    "iptables-ipset": None, "iptables-ipset-proto4": None, "iptables-ipset-proto6": None,
    "iptables-ipset-proto6-allports": None, "firewallcmd-ipset": None, "firewallcmd-allports": None,
    "firewallcmd-multiport": None, "firewallcmd-new": None, "shorewall-ipset-proto6": None,
    "pf": None, "ipfw": None,
}
HOSTS_ONLY = frozenset(HOSTS_ONLY_UNTIL)


def holds_only_hosts(stem: str, fail2ban: tuple | None) -> bool:
    """Whether stock action `stem` cannot hold a subnet in this fail2ban version (an
    unknown version counts as the oldest)."""
    if stem not in HOSTS_ONLY_UNTIL:
        return False
    since = HOSTS_ONLY_UNTIL[stem]
    return since is None or fail2ban is None or tuple(fail2ban) < since


# Actions that only report or mail, never block: they do not count as a ban action.
NON_BLOCKING_PREFIXES = ("sendmail", "mail", "complain", "abuseipdb", "badips", "blocklist_de",
                         "cloudflare", "dummy", "xarf", "smtp", "apprise", "helpers-common")

# A LOG rate limit slower than this hides attacks (a scan sends hundreds of packets a second).
LIMIT_HIDES = 1 / 60          # below one line a minute: most attacks never get logged
LIMIT_THINS = 10.0            # below ten a second: fail2ban sees a fraction of a scan
RATE_UNITS = {**TIME_UNITS, **TIME_UNIT_NAMES}           # 3/hour, 10/min, 1/s
IPTABLES_DEFAULT_LIMIT = "3/hour"
# What a LOG rule should say instead of nothing (README, "Memory under floods"): each
# source at most 10 lines a second (a scan's first three lines pass at once), all of
# them together at most 200 (a flood of random forged sources bounds fail2ban at
# 200 x findtime (1m): 29 MB measured, at a rate it reads without falling behind).
LOG_LIMITS_NFT = ("add @f2bx_log4 { ip saddr limit rate 10/second burst 20 packets } "
                  "limit rate 200/second burst 400 packets log prefix ...")
LOG_LIMITS_IPTABLES = ("-m hashlimit --hashlimit-upto 10/sec --hashlimit-burst 20 --hashlimit-mode srcip "
                       "--hashlimit-name f2bx_log -m limit --limit 200/sec --limit-burst 400 -j LOG ...")

# Kernel loggers that print LOG lines in the format the filter reads.
SYSLOG_LOGGERS = ("nf_log_syslog", "nf_log_ipv4", "nf_log_ipv6")


@dataclass(frozen=True)
class Finding:
    level: str
    subject: str
    message: str
    fix: str = ""


@dataclass(frozen=True)
class JailView:
    """What check needs of one enabled jail."""
    name: str
    filter: str                        # filter name, e.g. "netfilter"
    backend: str
    logpaths: tuple = ()
    actions: tuple = ()                # action.d stems, e.g. ("nftset", "subnet-escalate")
    action_names: tuple = ()           # the names fail2ban gives them: actname=, else the stem
    ignoreip: tuple = ()
    ignoreself: bool = True


@dataclass(frozen=True)
class LogRule:
    where: str                         # "nft inet filter input" / "iptables-legacy filter INPUT"
    text: str
    per_second: float | None           # rate limit in lines per second, all sources; None: unlimited
    per_source: float | None = None    # rate limit in lines per second for each source; None: none


@dataclass
class Machine:
    jails: list = field(default_factory=list)
    kernel_only_logs: set = field(default_factory=set)   # files rsyslog fills from imklog alone
    log_rules: list = field(default_factory=list)
    nflog_rules: int = 0
    loggers: dict = field(default_factory=dict)          # family number -> bound logger name
    logger_available: bool = True                        # nf_log_syslog loaded, built in or installable
    init_netns: bool = True
    all_netns: bool | None = False                       # net.netfilter.nf_log_all_netns; None: unknown
    own_addresses: tuple = ()
    ruleset_readable: bool = True
    dependencies: tuple = ()                             # "address source (detail)", as subnet-escalate guards them
    dependency_problems: tuple = ()                      # sources that could not be read, names that do not resolve
    nftables_binding: bool = True                        # fail2ban's Python imports nftables
    # per jail with a set action: (listed, not in the kernel), (in the kernel, not listed),
    # (expiry differs); a jail missing here was not compared (fail2ban not running)
    enforcement: dict = field(default_factory=dict)
    # per jail: the names of the actions the running fail2ban has for it, or None when
    # fail2ban runs but not this jail; a jail missing here was not asked (no fail2ban)
    running: dict = field(default_factory=dict)
    fail2ban: tuple | None = None                        # fail2ban's version, e.g. (1, 0, 2)


# --- parsing plain text -----------------------------------------------------------------

_RATE = re.compile(r"(\d+)\s*/\s*([a-z]+)")


def rate_per_second(text: str) -> float | None:
    """'3/hour' -> 0.000833; None if unreadable."""
    m = _RATE.fullmatch(text.strip())
    if not m or m.group(2) not in RATE_UNITS:
        return None
    return int(m.group(1)) / RATE_UNITS[m.group(2)]


def nft_log_rules(ruleset: str) -> tuple[list[LogRule], int]:
    """LOG rules in `nft list ruleset` text (iptables-nft rules included), and the number
    of NFLOG (log group N) rules, which go to ulogd, not to the kernel log."""
    rules, nflog, table, chain = [], 0, "", ""
    for line in ruleset.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "table" and len(words) >= 3:
            table = " ".join(words[1:3])
        elif words[0] == "chain" and len(words) >= 2:
            chain = words[1]
        elif re.search(r"(?:^|\s)log(?:\s|$)", line):
            if re.search(r"\blog\b[^#]*\bgroup\s+\d+", line):
                nflog += 1
                continue
            # a limit inside { } is a dynamic set's (meter's): one per key, the source
            outside, inside = re.sub(r"\{[^}]*\}", " ", line), " ".join(re.findall(r"\{([^}]*)\}", line))
            rules.append(LogRule(f"nft {table} {chain}".strip(), line.strip(), _nft_limit(outside),
                                 _nft_limit(inside) if re.search(r"\bip6? saddr\b", inside) else None))
    return rules, nflog


def _nft_limit(text: str) -> float | None:
    m = re.search(r"limit rate (?!over)(\d+\s*/\s*[a-z]+)", text)
    return rate_per_second(m.group(1)) if m else None


def iptables_log_rules(save: str, tool: str = "iptables-legacy") -> tuple[list[LogRule], int]:
    """LOG rules in iptables-save text. `-m limit` without --limit is 3/hour."""
    rules, nflog, table = [], 0, ""
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A "):
            if re.search(r"-j NFLOG\b", line):
                nflog += 1
            elif re.search(r"-j LOG\b", line):
                rate = per_source = None
                if re.search(r"-m limit\b", line):
                    m = re.search(r"--limit (\S+)", line)
                    rate = rate_per_second(m.group(1) if m else IPTABLES_DEFAULT_LIMIT)
                m = re.search(r"--hashlimit(?:-upto)? (\S+)", line)
                if m and re.search(r"--hashlimit-mode \S*\bsrcip\b", line):
                    per_source = rate_per_second(m.group(1))
                rules.append(LogRule(f"{tool} {table} {line.split()[1]}", line.strip(), rate, per_source))
    return rules, nflog


def imklog_only_files(configs: list[str]) -> set[str]:
    """Files that rsyslog fills inside an `if $inputname == "imklog"` block (RainerScript),
    the only lines no local process can forge."""
    files = set()
    for text in configs:
        for m in re.finditer(r'if\s+\$inputname\s*==\s*"imklog"[^{]*\{(?P<body>[^}]*)\}', text):
            files.update(re.findall(r'file\s*=\s*"([^"]+)"', m.group("body")))
    return files


def nf_log_loggers(proc_nf_log: str) -> dict[int, str]:
    """/proc/net/netfilter/nf_log ('%2d %s (%s)'): family -> bound logger ('NONE' if none)."""
    out = {}
    for line in proc_nf_log.splitlines():
        m = re.match(r"\s*(\d+)\s+(\S+)", line)
        if m:
            out[int(m.group(1))] = m.group(2)
    return out


def action_stem(spec: str) -> str:
    """'nftset.py[direction=in]' / 'iptables-multiport[name=x]' -> 'nftset' / 'iptables-multiport'."""
    name = spec.strip().split("[", 1)[0].strip()
    return name[:-3] if name.endswith(".py") else name


# --- deciding ---------------------------------------------------------------------------

def _covered(addr, ignoreip: tuple) -> bool:
    for item in ignoreip:
        try:
            if addr in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue        # a host name or a file: fail2ban resolves it, we cannot
    return False


def jail_findings(j: JailView, m: Machine) -> list[Finding]:
    out = []
    if j.backend.startswith("systemd"):
        out.append(Finding(OK, j.name, "reads the journal's kernel transport (unforgeable)"))
    else:
        for path in j.logpaths:
            if path in m.kernel_only_logs:
                out.append(Finding(OK, j.name, f"reads {path}, which rsyslog fills from the kernel alone"))
            else:
                out.append(Finding(PROBLEM, j.name, f"reads {path}: any local user can write kernel-looking lines "
                                   "there (`logger -p kern.warn -t kernel ...`) and get any address banned",
                                   "read /var/log/netfilter.log (`f2b-ext install` adds its rsyslog rule) "
                                   "or set backend = systemd"))
    # subnet-escalate puts this machine's addresses into the jail's ignoreip itself (no DNS)
    if not j.ignoreself and ESCALATING_ACTION not in j.actions:
        missing = [str(a) for a in m.own_addresses if not _covered(a, j.ignoreip)]
        if missing:
            out.append(Finding(PROBLEM, j.name, f"ignoreself = false and ignoreip lacks this machine's "
                               f"{', '.join(missing)}", "set ignoreself = true (fail2ban's default) or add them to ignoreip"))
    if ESCALATING_ACTION in j.actions:
        bans = [a for a in j.actions if a != ESCALATING_ACTION and not a.startswith(NON_BLOCKING_PREFIXES)]
        hosts_only = [a for a in bans if holds_only_hosts(a, m.fail2ban)]
        unknown = [a for a in bans if a not in HOSTS_ONLY and a not in SUBNET_CAPABLE]
        if not bans:
            out.append(Finding(PROBLEM, j.name, "subnet-escalate has no ban action beside it: nothing blocks",
                               "add nftset.py (or ipset-net.py) to the jail's action"))
        elif hosts_only:
            out.append(Finding(PROBLEM, j.name, f"subnet-escalate bans /24s, but {', '.join(hosts_only)} "
                               f"cannot hold a subnet in fail2ban {_version(m.fail2ban)} (the ban fails)",
                               "use nftset.py (nftables) or ipset-net.py (iptables) as the ban action"))
        elif unknown:
            out.append(Finding(WARNING, j.name, f"cannot tell whether {', '.join(unknown)} holds subnets",
                               "nftset.py and ipset-net.py do; test with `fail2ban-client set JAIL banip 192.0.2.0/24`"))
    if "nftset" in j.actions and not m.nftables_binding:
        out.append(Finding(PROBLEM, j.name, "nftset cannot enforce a ban: fail2ban's Python cannot import nftables "
                           "(the jail stops at start)", "apt-get install python3-nftables"))
    out.extend(running_findings(j, m.running))
    out.extend(enforcement_findings(j.name, m.enforcement.get(j.name)))
    return out


def running_findings(j: JailView, running: dict) -> list[Finding]:
    """The actions fail2ban runs for the jail against those its configuration names: a
    reload that failed part way, or a restart refused by a bad parameter, leaves a jail
    banning into nothing, or not running, while fail2ban-client still answers."""
    if j.name not in running:
        return []
    names = running[j.name]
    if names is None:
        return [Finding(PROBLEM, j.name, "enabled in the configuration, but fail2ban does not run it: nothing it "
                        "reads is banned", "fail2ban's log says why it stopped (a bad parameter?); fix that, "
                        "then `fail2ban-client reload`")]
    out = []
    missing = [a for a in j.action_names if a not in names]
    if missing:
        out.append(Finding(PROBLEM, j.name, f"runs without {', '.join(missing)}, which its configuration names "
                           "(not reloaded since, or a reload failed part way): what it does is not done",
                           f"`fail2ban-client reload {j.name}`, and read fail2ban's log if it fails again"))
    extra = [a for a in names if a not in j.action_names]
    if extra:
        out.append(Finding(WARNING, j.name, f"runs {', '.join(extra)}, which its configuration no longer names",
                           f"`fail2ban-client reload {j.name}`"))
    if not out:
        out.append(Finding(OK, j.name, "runs the actions its configuration names"))
    return out


def _some(items) -> str:
    items = sorted(map(str, items))
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def enforcement_findings(jail: str, diff) -> list[Finding]:
    """fail2ban's ban list against the jail's kernel sets (see Machine.enforcement)."""
    if diff is None:
        return []
    listed_only, kernel_only, retimed = diff
    out = []
    if listed_only:
        out.append(Finding(PROBLEM, jail, f"fail2ban lists {len(listed_only)} ban(s) the kernel does not hold "
                           f"(they are answered): {_some(listed_only)}",
                           "the set action's watchdog repairs this within checkinterval; if it persists, see "
                           "fail2ban's log (or `fail2ban-client reload`)"))
    if kernel_only:
        out.append(Finding(WARNING, jail, f"the kernel holds {len(kernel_only)} ban(s) fail2ban does not list: "
                           f"{_some(kernel_only)}", "the watchdog removes them unless fail2ban's database restores them"))
    if retimed:
        out.append(Finding(WARNING, jail, f"{len(retimed)} ban(s) expire at another time in the kernel than in "
                           f"fail2ban: {_some(retimed)}", "the watchdog resets them within checkinterval"))
    if not out:
        out.append(Finding(OK, jail, "every ban fail2ban lists is in the kernel, with its expiry"))
    return out


def dependency_findings(m: Machine, ours: list) -> list[Finding]:
    """What forged lines may never ban (one line each), and jails that do not guard it."""
    out = [Finding(OK, "protected", dep) for dep in m.dependencies]
    for problem in m.dependency_problems:
        out.append(Finding(WARNING, "protected", f"{problem}: subnet-escalate holds escalation until it knows",
                           "fix the source or the name (or list the address in protect=)"))
    for j in ours:
        if "subnet-escalate" not in j.actions:
            out.append(Finding(WARNING, j.name, "forged lines can ban what this server depends on (gateway, "
                               "resolvers, peers): only subnet-escalate guards them",
                               "add subnet-escalate.py to the jail's action"))
    return out


def findings(m: Machine) -> list[Finding]:
    out: list[Finding] = []
    ours = [j for j in m.jails if j.filter == "netfilter" or j.name.startswith(JAIL_PREFIX)]
    if not ours:
        out.append(Finding(WARNING, "jails", "no enabled jail reads kernel firewall lines",
                           "enable one in jail.local, e.g. [f2b-ext-inbound] enabled = true"))
    for j in ours:
        out.extend(jail_findings(j, m))
    out.extend(dependency_findings(m, ours))

    if not m.ruleset_readable:
        out.append(Finding(WARNING, "ruleset", "cannot read the firewall ruleset (needs root)", "run f2b-ext check as root"))
    elif not m.log_rules:
        out.append(Finding(PROBLEM, "ruleset", "no LOG rule: the kernel logs no dropped packet, so no jail sees one"
                           + (f" ({m.nflog_rules} NFLOG rules go to ulogd, not to the kernel log)" if m.nflog_rules else ""),
                           'log before you drop: nft `log prefix "FINAL_REJECT: "`, `ufw logging on`, '
                           "or `firewall-cmd --set-log-denied=all`"))
    flagged = 0
    for rule in m.log_rules:
        flagged += rule.per_second is not None and rule.per_second < LIMIT_THINS
        if rule.per_second is not None and rule.per_second < LIMIT_HIDES:
            out.append(Finding(PROBLEM, rule.where, f"LOG rule limited to {_rate(rule.per_second)} "
                               f"(iptables' -m limit default is {IPTABLES_DEFAULT_LIMIT}): most attacks never get logged",
                               "drop the limit, or raise it to tens per second with a burst"))
        elif rule.per_second is not None and rule.per_second < LIMIT_THINS:
            out.append(Finding(WARNING, rule.where, f"LOG rule limited to {_rate(rule.per_second)}: a scan "
                               "outruns it and fail2ban sees a fraction", "raise the limit to tens per second"))
    for rule in m.log_rules:
        missing = [what for what, limit in (("in total", rule.per_second), ("per source", rule.per_source))
                   if limit is None]
        if missing:
            out.append(Finding(WARNING, rule.where, f"LOG rule not rate-limited {' nor '.join(missing)}: a flood "
                               "from random forged sources writes a line per packet, and fail2ban holds each source "
                               "about 1.6 KB for findtime (3,000 lines/s and findtime 10m: 2.5 GB after ten minutes) and reads behind",
                               f"limit it per source and in total (README, \"Memory under floods\"): nft "
                               f"`{LOG_LIMITS_NFT}`; iptables `{LOG_LIMITS_IPTABLES}`"))
    if m.log_rules and not flagged:
        out.append(Finding(OK, "ruleset", f"{len(m.log_rules)} LOG rules, none rate-limited into silence"))

    if not m.logger_available:
        out.append(Finding(PROBLEM, "kernel", "no netfilter syslog logger (nf_log_syslog) in this kernel: "
                           "LOG rules print nothing", "install the kernel's modules package, or `modprobe nf_log_syslog`"))
    if m.init_netns and m.all_netns:
        out.append(Finding(WARNING, "kernel", "net.netfilter.nf_log_all_netns = 1: LOG lines of every network "
                           "namespace (containers, any user's `unshare -rn`) reach this host's kernel log and its "
                           "jails: whoever runs a namespace can log forged lines here and get any address banned",
                           "sysctl -w net.netfilter.nf_log_all_netns=0 (and drop it from /etc/sysctl.d) unless a "
                           "jail here must read containers' lines; then run fail2ban in each container instead"))
    if not m.init_netns and m.all_netns is False:
        out.append(Finding(PROBLEM, "kernel", "this runs in a network namespace (a container?) and "
                           "net.netfilter.nf_log_all_netns = 0: the kernel discards LOG output here",
                           "run fail2ban on the host, or on the host `sysctl -w net.netfilter.nf_log_all_netns=1`, "
                           "which also sends every other namespace's LOG lines (any user's `unshare -rn`) to the "
                           "host's log: forged lines there can ban any address for the host's jails"))
    elif not m.init_netns and m.all_netns is None:
        out.append(Finding(WARNING, "kernel", "this runs in a network namespace (a container?): the kernel "
                           "discards LOG output here unless the host set net.netfilter.nf_log_all_netns = 1, "
                           "which cannot be read from inside", "on the host: sysctl net.netfilter.nf_log_all_netns "
                           "(1 also sends every namespace's LOG lines, forgeable by any user's `unshare -rn`, to "
                           "the host's log)"))
    if m.logger_available and (m.init_netns or m.all_netns):
        out.append(Finding(OK, "kernel", "LOG rules reach the kernel log"))
    return out


def _rate(per_second: float) -> str:
    for unit in ("second", "minute", "hour", "day"):
        n = per_second * TIME_UNIT_NAMES[unit]
        if n >= 1:
            return f"{n:g}/{unit}"
    return f"{per_second * WEEK:g}/week"


def _version(version: tuple | None) -> str:
    return ".".join(map(str, version)) if version else "(version unknown)"
