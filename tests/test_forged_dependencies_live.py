"""Forged packets never cut the server off from what it depends on (issue 12), on the real
kernel: the seeds' firewall in a server namespace, a real rsyslog (imklog) writing
netfilter.log, and a real fail2ban-server running the shipped [f2b-ext-inbound] jail
(as installed; only its log, `bogons=none` for the lab's documentation ranges, a 1 s
refresh and a host name in ignoreip changed) with nftset.

The server namespace has what a server has: a default gateway (the remote namespace,
192.0.2.2 and 2001:db8:f2b::2), a resolver in its /etc/resolv.conf, a host name in
ignoreip (resolved through its /etc/hosts; `ip netns exec` binds /etc/netns/NAME/*
over /etc), an open TCP connection it made to a peer, and a peer it talked to before a
kill -9 and restart of fail2ban. Raw SYN frames forged from each of them, and from five
hosts of the resolver's /24, ban nothing of theirs, escalate nothing over them, and the
server still reaches every one; a real scanner is still dropped within 2 s."""
from __future__ import annotations

import ipaddress
import shutil
import socket
import struct
import tempfile
import time
from pathlib import Path

import pytest

from f2b_ext.lab.netns import REMOTE_V4, REMOTE_V6, SERVER_V4, Lab, in_netns, until
from f2b_ext.lab.live import Rsyslog, apply_firewall, environment_problems

problems = environment_problems()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(bool(problems), reason="; ".join(problems))]

RESOLVER = "198.51.100.53"
PARTNER, PARTNER_NAME = "198.51.100.60", "partner.example"
OPEN_PEER, PAST_PEER = "203.0.113.20", "203.0.113.21"
SCANNER = "203.0.113.99"
JAIL = "f2b-ext-inbound"


def jail_local(log: Path) -> str:
    from test_jails import shipped_action
    action = shipped_action(JAIL, "bogons=none, refresh=1s")
    # ignoreself off: the lab's resolver never answers, and fail2ban would look up this
    # host's names; subnet-escalate guards the server's own addresses itself
    return (f"[DEFAULT]\nignoreself = false\n\n[{JAIL}]\nenabled = true\nlogpath = {log}\nbackend = polling\n"
            f"ignoreip = 127.0.0.1/8 ::1 {PARTNER_NAME}\naction = {action}\n")


def syn_scan(lab: Lab, src: str, ports=(23, 25, 80, 3389)):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from f2b_ext.lab.netns import SERVER_V6
    ip = IPv6(src=src, dst=SERVER_V6) if ":" in src else IP(src=src, dst=SERVER_V4)
    lab.send(*[ip / TCP(sport=41000 + p, dport=p, flags="S") for p in ports])


def connect(lab: Lab, dst: str, port: int = 443) -> socket.socket:
    with in_netns(lab.server):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(2)
    c.connect((dst, port))
    return c


def covers(ban: str, addr: str) -> bool:
    net, a = ipaddress.ip_network(ban, strict=False), ipaddress.ip_address(addr)
    return net.version == a.version and a in net


def test_forged_sources_never_ban_a_dependency():
    from f2b_ext.lab.fail2ban_server import Fail2banServer
    work = Path(tempfile.mkdtemp(prefix="f2bx-deps-"))
    rsyslog = f2b = etc = listener = None
    held = []
    try:
        with Lab() as lab:
            etc = Path("/etc/netns") / lab.server
            etc.mkdir(parents=True)
            (etc / "resolv.conf").write_text(f"nameserver {RESOLVER}\n")
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n{PARTNER} {PARTNER_NAME}\n")
            # conntrack forgets a closed connection at once here, so only the action's
            # memory can know the past peer after the restart
            for key in ("tcp_timeout_time_wait", "tcp_timeout_close_wait", "tcp_timeout_last_ack",
                        "tcp_timeout_fin_wait", "tcp_timeout_close"):
                lab.server_sh("sysctl", "-qw", f"net.netfilter.nf_conntrack_{key}=1")
            apply_firewall(lab, "nft")
            listener = lab.listen(443)
            rsyslog = Rsyslog(work, (lab.server_if,))
            held.append(connect(lab, OPEN_PEER))               # an open connection it made
            f2b = Fail2banServer(jail_local(rsyslog.netfilter_log), netns=lab.server, workdir=work / "fail2ban")
            f2b.start(jail=JAIL)

            def deps() -> str:
                return f2b.client("get", JAIL, "action", "subnet-escalate", "dependencies").stdout

            f2b.wait_for(lambda: all(x in deps() for x in (
                f"{REMOTE_V4} gateway", f"{REMOTE_V6} gateway", f"{RESOLVER} resolver",
                f"{PARTNER} ignoreip ({PARTNER_NAME})", f"{OPEN_PEER} peer", f"{SERVER_V4} this-host")),
                what="the dependencies gathered", timeout=20)
            # a peer it talked to and left (reset: no TIME_WAIT socket stays behind)
            past = connect(lab, PAST_PEER)
            f2b.wait_for(lambda: f"{PAST_PEER} peer" in deps(), what="the past peer remembered", timeout=10)
            past.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            past.close()
            assert "held" not in f2b.client("get", JAIL, "action", "subnet-escalate", "status").stdout

            # kill -9 and restart: the kernel and the socket table have forgotten the past peer
            f2b.stop(kill=True)
            assert until(lambda: PAST_PEER not in lab.server_sh("cat", "/proc/net/nf_conntrack")
                         and PAST_PEER not in _sockets(lab), 15), "conntrack still knows the past peer"
            f2b.start(jail=JAIL)
            f2b.wait_for(lambda: f"{PAST_PEER} peer" in deps(), what="the past peer after the restart")

            ignore = f2b.client("get", JAIL, "ignoreip").stdout
            dependencies = [REMOTE_V4, REMOTE_V6, RESOLVER, PARTNER, OPEN_PEER, PAST_PEER]
            assert all(d in ignore for d in dependencies), ignore

            # forged scans "from" every dependency, five hosts of the resolver's /24, then a real scanner
            for src in dependencies + [f"198.51.100.{i}" for i in range(1, 6)]:
                syn_scan(lab, src)
            start = time.monotonic()
            syn_scan(lab, SCANNER)
            assert until(lambda: not lab.probe(SCANNER, 22), 2.0), "the real scanner is still answered after 2 s"
            assert time.monotonic() - start <= 2.0
            f2b.wait_for(lambda: "198.51.100.5" in f2b.bans(JAIL), what="the forged /24 hosts banned")
            f2b.wait_for(lambda: "198.51.100.0/27" in f2b.bans(JAIL), what="the narrowed escalation")
            time.sleep(2)            # anything else that would follow has had its chance

            bans = f2b.bans(JAIL)
            for dep in dependencies:
                assert not any(covers(b, dep) for b in bans), f"{dep} covered by {sorted(bans)}"
            assert "198.51.100.0/24" not in bans
            log = f2b.server_log()
            assert f"Ignore {RESOLVER} by ip" in log and f"Ignore {REMOTE_V4} by ip" in log
            assert "Escalate 198.51.100.0/27 for 1800s" in log and "forgeable evidence" in log
            # the kernel holds none of them, and the server still reaches each one
            ruleset = lab.server_sh("nft", "list", "table", "inet", "f2b_ext")
            for dep in dependencies:
                assert f" {dep}" not in ruleset and f"{{{dep}" not in ruleset, ruleset
            for dep in (REMOTE_V4, RESOLVER, PARTNER, PAST_PEER):
                connect(lab, dep).close()
            assert not lab.probe(SCANNER, 22) and lab.answered_within("203.0.113.98", 22)
    finally:
        for c in held:
            c.close()
        if listener is not None:
            listener.close()
        for part in (f2b, rsyslog):
            if part is not None:
                part.close()
        if etc is not None:
            shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _sockets(lab: Lab) -> str:
    from f2b_ext.core.dependencies import proc_tcp_peers
    rows = lab.server_sh("cat", "/proc/net/tcp").splitlines()[1:]
    return " ".join(proc_tcp_peers(rows))
