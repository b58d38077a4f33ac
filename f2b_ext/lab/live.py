"""Adapter: the live lab: the seeds' firewall on the real kernel, a real rsyslog and a
real fail2ban-server, wired the way an admin would wire them.

How it works: a `Lab` (server and remote namespaces) gets the seeds' firewall in the
server namespace, as iptables-nft rules or as a pure nftables ruleset (FIREWALLS):
`FINAL_REJECT: ` LOG then REJECT on input, `UNKNOWN_OUTGOING: ` LOG on output. A
private rsyslog reads the kernel's ring buffer with imklog and writes this lab's lines
to `kern.log` (Debian's stock rule) and, through the shipped rsyslog.d rule, to
`netfilter.log`. A private fail2ban-server runs as root inside the server namespace
(its actions change that namespace's firewall) with two jails on `netfilter.log`:
`netfilter-in` (a set action + subnet-escalate) and `netfilter-out` (the set action on
egress); the set action is `nftset`, or `ipset-net` for an iptables firewall (SETUPS).
Attacks are scapy packets sent from the remote side; what happened is read where it
matters: on the wire (`Lab.probe`: does the server still answer?) and from
fail2ban-client. Used by tests/test_live.py and `f2b-ext demo`.
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from f2b_ext.core import ipset, nftset
from f2b_ext import shipped
from f2b_ext.core.escalation import ban_left
from f2b_ext.lab.fail2ban_server import Fail2banServer
from f2b_ext.lab.netns import SERVER_V4, SERVER_V6, Background, Lab, LabError, LabScope, until

# The seeds' rules (001: LOG then REJECT with tcp-reset; output logged, policy accept;
# 000: ICMP accepted), with firewalld's FINAL_REJECT prefix on input. Port 443 out is
# the server's one allowed egress, so a blocked egress is visible.
IPTABLES_RULES = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p {icmp} -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -j LOG --log-prefix "FINAL_REJECT: "
-A INPUT -p tcp -j REJECT --reject-with tcp-reset
-A INPUT -j REJECT
-A OUTPUT -o lo -j ACCEPT
-A OUTPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A OUTPUT -p {icmp} -j ACCEPT
-A OUTPUT -p udp -m udp --dport 53 -j ACCEPT
-A OUTPUT -p tcp -m tcp --dport 25 -j ACCEPT
-A OUTPUT -p tcp -m tcp --dport 443 -j ACCEPT
-A OUTPUT -j LOG --log-prefix "UNKNOWN_OUTGOING: " --log-level 5
COMMIT
"""

NFT_RULES = """table inet seed_firewall {
    chain input {
        type filter hook input priority filter; policy accept;
        iif "lo" accept
        ct state established,related accept
        meta l4proto { icmp, ipv6-icmp } accept
        tcp dport 22 accept
        log prefix "FINAL_REJECT: "
        meta l4proto tcp reject with tcp reset
        reject
    }
    chain output {
        type filter hook output priority filter; policy accept;
        oif "lo" accept
        ct state established,related accept
        meta l4proto { icmp, ipv6-icmp } accept
        udp dport 53 accept
        tcp dport { 25, 443 } accept
        log prefix "UNKNOWN_OUTGOING: " level notice
    }
}
"""

FIREWALLS = ("nft", "iptables-nft")
# (firewall, set action): nftset under both firewalls; ipset-net is for iptables users
SETUPS = (("nft", "nftset"), ("iptables-nft", "nftset"), ("iptables-nft", "ipset-net"))
# Probes knock on 22, which the seeds' firewall accepts (no LOG line: a probe must not
# be an attack itself); nothing listens, so an unbanned host gets a RST.
PROBE_PORT = 22

# Schedules short enough to watch: host bans last `bantime`; an escalated /24 (six
# hosts) lasts the first step of `schedule`.
# ignoreself/usedns off: the server namespace has no resolver, and fail2ban would stall
# on looking up its own names; its addresses are in ignoreip instead. bogons=none: the
# lab may only use documentation ranges, which the default bogon list never escalates.
JAILS = """[DEFAULT]
backend = pyinotify
ignoreself = false
usedns = no
maxretry = 1
findtime = 10m
bantime = {bantime}
ignoreip = 127.0.0.1/8 ::1 {server_v4} {server_v6} {ignoreip}

[netfilter-in]
enabled = true
filter = netfilter[logprefix=FINAL_REJECT]
logpath = {netfilter_log}
action = {banaction}.py[direction=in, checkinterval={checkinterval}]
         subnet-escalate.py[ladder4="24:{hosts}", ladder6="64:{hosts}", schedule="{schedule}", forgedschedule="{schedule}", bogons=none]

[netfilter-out]
enabled = true
filter = netfilter[direction=out, logprefix=UNKNOWN_OUTGOING]
logpath = {netfilter_log}
action = {banaction}.py[direction=out, checkinterval={checkinterval}]
"""


@dataclass
class LiveSettings:
    firewall: str = "nft"
    banaction: str = "nftset"       # or ipset-net
    bantime: int = 600
    schedule: str = "15s 1m"
    hosts: int = 6                  # hosts of one /24 (or /64) that escalate it
    ignoreip: str = ""              # extra addresses never banned nor covered
    checkinterval: float = 1.0
    fail2ban: bool = True           # False: firewall and rsyslog only (logs to read, no bans)


def apply_firewall(lab: Lab, firewall: str):
    """Load the seeds' rules into the server namespace (again: an admin's firewall
    service does exactly this after `nft flush ruleset`)."""
    if firewall == "nft":
        lab.server_sh("nft", "-f", "-", input=NFT_RULES)
    elif firewall == "iptables-nft":
        lab.server_sh("iptables-nft-restore", input=IPTABLES_RULES.format(icmp="icmp"))
        lab.server_sh("ip6tables-nft-restore", input=IPTABLES_RULES.format(icmp="ipv6-icmp"))
    else:
        raise LabError(f"firewall: {firewall!r} is not one of {', '.join(FIREWALLS)}")


class Rsyslog:
    """rsyslogd with imklog, keeping this lab's lines only (imklog replays the
    kernel's buffer, which holds other labs' lines too)."""

    def __init__(self, work: Path, ifaces: tuple[str, ...]):
        self.kern_log, self.netfilter_log = work / "kern.log", work / "netfilter.log"
        for path in (self.kern_log, self.netfilter_log):
            path.touch()
        rule = shipped.data(*shipped.RSYSLOG_RULE).read_text()
        mine = " or ".join(f'$msg contains "={i} "' for i in ifaces)
        (work / "rsyslog.conf").write_text(f"""global(workDirectory="{work}")
module(load="imklog")
if not ({mine}) then {{
    stop
}}
{rule.replace("/var/log/netfilter.log", str(self.netfilter_log))}
kern.*  {self.kern_log}
""")
        output = work / "rsyslogd.out"           # a file, not a pipe nobody drains
        with open(output, "w") as out:
            self.proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(work / "rsyslog.conf"),
                                          "-i", str(work / "rsyslog.pid")], stdout=out, stderr=subprocess.STDOUT)
        time.sleep(0.2)
        if self.proc.poll() is not None:
            raise LabError(f"rsyslogd exited: {output.read_text(errors='replace')[-2000:]}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@dataclass
class LiveLab(LabScope):
    """The whole lab; use as a context manager. Everything it made goes on close, also
    when its build fails half way (LabScope)."""
    settings: LiveSettings = field(default_factory=LiveSettings)

    def __post_init__(self):
        super().__init__()
        self.lab = None
        self.rsyslog = None
        self.f2b = None
        self.work = None

    def build(self):
        problems = environment_problems()
        if problems:
            raise LabError(f"the live lab {problems[0]}")
        self.work = Path(tempfile.mkdtemp(prefix="f2bx-live-"))
        self.lab = Lab().__enter__()
        apply_firewall(self.lab, self.settings.firewall)
        self.rsyslog = Rsyslog(self.work, (self.lab.server_if,))
        if self.settings.fail2ban:
            self.f2b = Fail2banServer(self.jails(), netns=self.lab.server, workdir=self.work / "fail2ban")
            self.f2b.start(jail="netfilter-out")

    def jails(self) -> str:
        s = self.settings
        return JAILS.format(banaction=s.banaction, bantime=s.bantime, schedule=s.schedule, hosts=s.hosts, ignoreip=s.ignoreip,
                            checkinterval=s.checkinterval, server_v4=SERVER_V4, server_v6=SERVER_V6,
                            netfilter_log=self.rsyslog.netfilter_log)

    def close(self):
        for part in (self.f2b, self.rsyslog, self.lab):
            if part is not None:
                try:
                    part.close()
                except Exception:         # keep cleaning up the rest
                    pass
        self.f2b = self.rsyslog = self.lab = None
        if self.work:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- attacks, as the seeds describe them --
    def syn_scan(self, src: str, ports=(23, 25, 80, 3389)):
        from scapy.layers.inet import IP, TCP
        from scapy.layers.inet6 import IPv6
        ip = IPv6(src=src, dst=SERVER_V6) if ":" in src else IP(src=src, dst=SERVER_V4)
        self.lab.send(*[ip / TCP(sport=40000 + p, dport=p, flags="S") for p in ports])

    def gre(self, src: str, count: int = 3):
        from scapy.layers.inet import IP
        from scapy.layers.l2 import GRE
        self.lab.send(*[IP(src=src, dst=SERVER_V4, id=i + 1) / GRE() / (b"\0" * 20) for i in range(count)])

    def backscatter(self, src: str, sport: int = 80):
        """A SYN-ACK answering a SYN someone else sent with this server's address."""
        from scapy.layers.inet import IP, TCP
        self.lab.send(IP(src=src, dst=SERVER_V4) / TCP(sport=sport, dport=3594, flags="SA", seq=79911989, ack=235561828))

    def call_home(self, dst: str, port: int) -> bool:
        return self.lab.connect_from_server(dst, port)

    # -- what happened --
    def answered(self, src: str, dport: int = PROBE_PORT) -> bool:
        return self.lab.probe(src, dport)

    def bans(self, jail: str = "netfilter-in") -> dict[str, int]:
        return self.f2b.bans(jail)

    def action_property(self, jail: str, action: str, prop: str) -> str:
        return self.f2b.client("get", jail, "action", action, prop).stdout

    def log_lines(self, needle: str) -> list[str]:
        return [line for line in self.rsyslog.netfilter_log.read_text(errors="replace").splitlines() if needle in line]

    def kernel_holds(self, jail: str, net: str) -> int:
        """How many times the jail's kernel set lists `net` (with its timeout)."""
        net = ipaddress.ip_network(net, strict=False)
        if self.settings.banaction == "ipset-net":
            listing = self.lab.server_sh("ipset", "list", ipset.set_name(jail, net.version), check=False)
        else:
            listing = self.lab.server_sh("nft", "list", "set", "inet", "f2b_ext", nftset.set_name(jail, net), check=False)
        element = nftset.element(net, None)
        return len(re.findall(rf"(?<![\w.:]){re.escape(element)} timeout", listing))

    until = staticmethod(until)

    def kill_fail2ban(self):
        self.f2b.stop(kill=True)

    def start_fail2ban(self):
        self.f2b.start(jail="netfilter-out")

    def flush_ruleset(self):
        self.lab.server_sh("nft", "flush", "ruleset")


def environment_problems() -> list[str]:
    """What keeps the live lab from running here, one line each."""
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root (network namespaces, netfilter)")
    for tool in ("rsyslogd", "fail2ban-server", "nft", "iptables-nft-restore", "ip"):
        if not shutil.which(tool):
            problems.append(f"needs {tool}, which is not installed")
    return problems


class Prober(Background):
    """SYNs every `every` seconds, round robin from `sources` (banned hosts and members of
    banned prefixes) to the server's PROBE_PORT, and every answer the server sends any
    of them (RST, SYN-ACK, ICMP), seen on the wire at the remote end. `phase(name)`
    starts counting answers under a new name; `answers` maps phase -> [source, ...].
    Each answer counts at the time the kernel received it (the socket's timestamp, on
    time.monotonic()'s clock), not when the receiving thread got round to it: on a
    loaded machine that thread may read an answer given before a repair only after it,
    or in the next phase."""

    def __init__(self, lab: Lab, sources: list[str], every: float = 0.005):
        from f2b_ext.lab.netns import in_netns, syn_frame
        self.lab, self.every = lab, every
        self.sources = {ipaddress.ip_address(s).packed: s for s in sources}
        self.frames = [syn_frame(lab.remote_mac, lab.server_mac, ipaddress.ip_address(s), PROBE_PORT, 30000 + i, seq=i + 1)
                       for i, s in enumerate(sources)]
        self.answers: dict[str, list[str]] = {}
        self.answered_at: list[tuple[float, str]] = []     # (time.monotonic(), source) of every answer
        self.sent: dict[str, int] = {}
        self._phase = "start"
        self._phases: list[tuple[float, str]] = [(-math.inf, "start")]     # (monotonic start, name)
        import socket
        with in_netns(lab.remote):
            self._tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            self._rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        self._tx.bind((lab.remote_if, 0))
        self._rx.bind((lab.remote_if, 0))           # 0: the protocol the socket was made with
        self._rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        super().__init__(self._send, self._receive)

    def __enter__(self) -> "Prober":
        self.phase("start")
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__()
        self._tx.close()
        self._rx.close()

    def phase(self, name: str):
        self.answers.setdefault(name, [])
        self.sent.setdefault(name, 0)
        self._phases.append((time.monotonic(), name))
        self._phase = name

    def _phase_at(self, when: float) -> str:
        return next(name for start, name in reversed(self._phases) if start <= when)

    def _send(self):
        i = 0
        while not self._stop.is_set():
            try:
                self._tx.send(self.frames[i % len(self.frames)])
                self.sent[self._phase] += 1
            except OSError:
                pass
            i += 1
            time.sleep(self.every)

    def _receive(self):
        import select
        while not self._stop.is_set():
            if not select.select([self._rx], [], [], 0.1)[0]:
                continue
            frame, ancillary, _, _ = self._rx.recvmsg(2048, 64)
            if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] not in (1, 6):
                continue
            dst = frame[30:34]
            if dst in self.sources and frame[26:30] == ipaddress.ip_address(SERVER_V4).packed:
                when = time.monotonic() - (time.time() - wire_time(ancillary))
                self.answers[self._phase_at(when)].append(self.sources[dst])
                self.answered_at.append((when, self.sources[dst]))


SO_TIMESTAMPNS = 35        # Linux's (socket.SO_TIMESTAMPNS from Python 3.13 on)


def wire_time(ancillary) -> float:
    """The kernel's receive time (SO_TIMESTAMPNS, the wall clock) of a recvmsg()'s
    frame; now when the message carries none."""
    import socket
    import struct
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack("qq", data[:16])
            return seconds + nanoseconds / 1e9
    return time.time()


def kernel_elements(lab: Lab, banaction: str, jail: str) -> dict:
    """{network: seconds left or None} the jail's kernel sets hold, read with the
    command-line tools (not the action's own code)."""
    from f2b_ext.core.nftset import jail_elements
    if banaction == "ipset-net":
        held = {}
        for fam in (4, 6):
            held.update(ipset.parse_save(lab.server_sh("ipset", "save", ipset.set_name(jail, fam), check=False)))
        return held
    return jail_elements(jail, lambda *args: lab.server_sh("nft", *args, check=False))


def listed_with_ends(f2b: Fail2banServer, jail: str) -> dict:
    """{network: seconds left or None} of `get JAIL banip --with-time` (fail2ban's list)."""
    out = f2b.client("get", jail, "banip", "--with-time", check=False).stdout
    now, result = time.time(), {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[3] == "+":
            length = int(parts[4])
            start = time.mktime(time.strptime(f"{parts[1]} {parts[2]}", "%Y-%m-%d %H:%M:%S"))
            result[ipaddress.ip_network(parts[0], strict=False)] = ban_left(start, length, now)
    return result


def database_bans(f2b: Fail2banServer, jail: str) -> dict:
    """{network: seconds left or None} fail2ban's database holds as current for `jail`."""
    import sqlite3
    now = time.time()
    with sqlite3.connect(f"file:{f2b.db}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT ip, timeofban, bantime FROM bips WHERE jail=? AND (timeofban + bantime > ? OR bantime < 0)",
                          (jail, now)).fetchall()
    return {ipaddress.ip_network(ip, strict=False): ban_left(tob, bt, now) for ip, tob, bt in rows}
