"""What the capture sends, and what the verdict on each resulting kernel line must be.

Each `Probe` is one packet the remote sends (or one thing the server does), with the
verdicts written down by hand from the filter's rules, independent of the filter and of
f2b_ext.core.netfilter. Every other line the kernel logs meanwhile is a kernel's *answer*
(SYN-ACK, RST, ICMP error, echo reply) or neighbour discovery: never an attempt.
`capture()` plays the probes through a `Lab` under one firewall profile and returns
(probe or None, kernel record) pairs.
"""
from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Callable, Optional

from f2b_ext.lab.netns import SERVER_V4, SERVER_V6, Lab, KernelRecord, in_netns

S4, S6 = SERVER_V4, SERVER_V6


@dataclass
class Probe:
    name: str
    inbound: Optional[Callable] = None      # (marker) -> (scapy packet, dst_mac or None)
    outbound: Optional[Callable] = None     # (lab, marker) -> None: the server acts
    expect_in: bool = False                 # attempt for direction=in, mode=normal
    expect_out: bool = False                # attempt for direction=out
    aggressive: Optional[bool] = None       # for mode=aggressive if it differs
    remote: str = ""                        # the address a match must ban
    family: int = 4

    @property
    def expect_aggressive(self) -> bool:
        return self.expect_in if self.aggressive is None else self.aggressive


def _v4(src, l4, dst=S4, **ip):
    def build(marker):
        from scapy.layers.inet import IP
        return IP(src=src, dst=dst, id=marker, **ip) / l4(), None
    return build


def _v6(src, l4, dst=S6, dst_mac=None, **ip):
    def build(marker):
        from scapy.layers.inet6 import IPv6
        return IPv6(src=src, dst=dst, fl=marker, **ip) / l4(), dst_mac
    return build


def tcp(flags, sport=40000, dport=23, **kw):
    def l4():
        from scapy.layers.inet import TCP
        return TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=2000 if "A" in flags else 0, **kw)
    return l4


def udp(sport, dport=161):
    def l4():
        from scapy.layers.inet import UDP
        return UDP(sport=sport, dport=dport) / b"probe"
    return l4


def icmp(itype, code=0, inner=None):
    def l4():
        from scapy.layers.inet import ICMP
        pkt = ICMP(type=itype, code=code)
        return pkt / inner() if inner else pkt / (b"\0" * 16)
    return l4


def icmp6(cls, inner=None, **kw):
    def l4():
        import scapy.layers.inet6 as i6
        pkt = getattr(i6, cls)(**kw)
        return pkt / inner() if inner else pkt
    return l4


def raw_proto(payload):
    return lambda: payload()


def _gre_payload():
    # Seed 000: GRE carrying IP/UDP between two unrelated addresses.
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import GRE
    return GRE() / IP(src="198.18.7.7", dst="198.18.9.9") / UDP(sport=1111, dport=2222)


def _embedded_from_server():
    from scapy.layers.inet import IP, UDP
    return IP(src=S4, dst="203.0.113.66") / UDP(sport=53, dport=33434)


def _embedded6_from_server():
    from scapy.layers.inet6 import IPv6
    from scapy.layers.inet import UDP
    return IPv6(src=S6, dst="2001:db8:66::66") / UDP(sport=53, dport=33434)


# -- the server acts (outbound) --

def _connect(dst, port):
    def act(lab: Lab, marker):
        with in_netns(lab.server):
            fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect((dst, port))
            except BlockingIOError:
                pass
            time.sleep(0.1)
            s.close()
    return act


def _udp_send(dst, port):
    def act(lab: Lab, marker):
        with in_netns(lab.server):
            fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.sendto(b"call home", (dst, port))
            s.close()
    return act


def _ping(dst):
    def act(lab: Lab, marker):
        from scapy.layers.inet import ICMP
        with in_netns(lab.server):
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            s.sendto(bytes(ICMP(type=8, id=marker & 0xffff, seq=1) / b"ping"), (dst, 0))
            s.close()
    return act


BCAST_MAC = "ff:ff:ff:ff:ff:ff"
MCAST4_MAC = "01:00:5e:00:00:01"
MCAST6_MAC = "33:33:00:00:00:01"

TCP_FLAG_PROBES = [
    # scapy flags, name, attempt inbound
    ("S", "SYN", True), ("SEC", "ECN SYN (CWR ECE SYN)", True), ("F", "FIN", True),
    ("", "NULL", True), ("FPU", "XMAS (URG PSH FIN)", True), ("SF", "SYN FIN", True),
    ("SA", "SYN-ACK backscatter", False), ("A", "ACK", False), ("R", "RST", False),
    ("RA", "ACK RST", False), ("FA", "FIN-ACK", False), ("PA", "PSH-ACK", False),
]


def probes() -> list[Probe]:
    p: list[Probe] = []
    for i, (flags, name, attempt) in enumerate(TCP_FLAG_PROBES):
        src = f"198.51.100.{10 + i}"
        p.append(Probe(f"TCP {name}", _v4(src, tcp(flags)), expect_in=attempt,
                       aggressive=True, remote=src))
    p.append(Probe("TCP SYN from port 80 (seed 002 forged source port)",
                   _v4("203.0.113.80", tcp("S", sport=80, dport=443)), expect_in=True,
                   remote="203.0.113.80"))
    p.append(Probe("TCP SYN with options (MSS, SACK, timestamps)",
                   _v4("203.0.113.81", tcp("S", dport=22, options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0))])),
                   expect_in=True, remote="203.0.113.81"))
    p.append(Probe("TCP SYN with IP options (record route)",
                   _v4("203.0.113.82", tcp("S", dport=25), options=[__import__("scapy.layers.inet", fromlist=["IPOption_RR"]).IPOption_RR()]),
                   expect_in=True, remote="203.0.113.82"))
    for port, attempt in ((40000, True), (5300, True), (53, False), (67, False), (68, False),
                          (123, False), (137, False), (138, False), (1900, False), (5353, False)):
        src = f"203.0.113.{100 + port % 97}"
        p.append(Probe(f"UDP from port {port}", _v4(src, udp(port)), expect_in=attempt, remote=src))
    p.append(Probe("UDPLITE", _v4("198.51.100.200", udp(40001), proto=136), expect_in=True,
                   remote="198.51.100.200"))
    for itype, name, attempt in ((8, "echo request", True), (13, "timestamp request", True),
                                 (15, "information request", True), (17, "address mask request", True),
                                 (0, "echo reply", False), (4, "source quench", False),
                                 (5, "redirect", False), (11, "time exceeded", False),
                                 (12, "parameter problem", False), (14, "timestamp reply", False),
                                 (16, "information reply", False), (18, "address mask reply", False)):
        src = f"198.18.0.{itype + 10}"
        inner = _embedded_from_server if itype in (4, 5, 11, 12) else None
        p.append(Probe(f"ICMP {name}", _v4(src, icmp(itype, inner=inner)), expect_in=attempt, remote=src))
    p.append(Probe("ICMP port unreachable embedding the server's own packet",
                   _v4("198.18.0.3", icmp(3, 3, inner=_embedded_from_server)), expect_in=False))
    p.append(Probe("GRE carrying IP/UDP (seed 000)", _v4("198.18.47.47", raw_proto(_gre_payload)),
                   expect_in=True, remote="198.18.47.47"))
    p.append(Probe("IP in IP", _v4("198.18.4.4", lambda: b"\x45" + b"\0" * 19, proto=4),
                   expect_in=True, remote="198.18.4.4"))
    p.append(Probe("ESP", _v4("198.18.50.50", lambda: b"\0\0\0\x2a" + b"\0" * 12, proto=50),
                   expect_in=True, remote="198.18.50.50"))
    p.append(Probe("AH", _v4("198.18.51.51", lambda: b"\x06\x04\0\0\0\0\0\x2a" + b"\0" * 16, proto=51),
                   expect_in=True, remote="198.18.51.51"))
    p.append(Probe("SCTP", _v4("198.18.132.132", lambda: b"\0" * 12, proto=132),
                   expect_in=True, remote="198.18.132.132"))
    p.append(Probe("IGMP, unicast", _v4("198.18.2.2", lambda: b"\x11\x64" + b"\0" * 6, proto=2),
                   expect_in=False))

    def igmp_query(marker):
        from scapy.layers.inet import IP
        return IP(src="0.0.0.0", dst="224.0.0.1", id=marker, ttl=1, proto=2, tos=0xc0) / (b"\x11\x64" + b"\0" * 6), MCAST4_MAC
    p.append(Probe("IGMP from 0.0.0.0 to 224.0.0.1 (seed 003)", igmp_query, expect_in=False))

    def udp_broadcast(marker):
        from scapy.layers.inet import IP, UDP
        return IP(src="192.0.2.77", dst="192.0.2.255", id=marker) / UDP(sport=138, dport=138), BCAST_MAC
    p.append(Probe("NetBIOS broadcast to x.x.x.255 (seed 003)", udp_broadcast, expect_in=False))

    def udp_broadcast_hi(marker):
        from scapy.layers.inet import IP, UDP
        return IP(src="192.0.2.78", dst="192.0.2.255", id=marker) / UDP(sport=40000, dport=9), BCAST_MAC
    p.append(Probe("UDP to the broadcast address", udp_broadcast_hi, expect_in=False))

    def syn_bcast_mac(marker):
        from scapy.layers.inet import IP, TCP
        return IP(src="192.0.2.79", dst=S4, id=marker) / TCP(sport=40000, dport=23, flags="S"), BCAST_MAC
    p.append(Probe("SYN in a broadcast frame", syn_bcast_mac, expect_in=False))

    def udp_multicast(marker):
        from scapy.layers.inet import IP, UDP
        return IP(src="192.0.2.80", dst="224.0.0.1", id=marker) / UDP(sport=40000, dport=9), MCAST4_MAC
    p.append(Probe("UDP to multicast 224.0.0.1", udp_multicast, expect_in=False))

    # IPv6
    p6 = [
        ("TCP SYN", "2001:db8:a::1", tcp("S"), True, True),
        ("TCP SYN-ACK backscatter", "2001:db8:a::2", tcp("SA", sport=443), False, True),
        ("TCP RST", "2001:db8:a::3", tcp("R"), False, True),
        ("UDP from port 40000", "2001:db8:a::4", udp(40000), True, None),
        ("UDP from port 123", "2001:db8:a::5", udp(123), False, None),
        ("ICMPv6 echo request", "2001:db8:a::6", icmp6("ICMPv6EchoRequest"), True, None),
        ("ICMPv6 echo reply", "2001:db8:a::7", icmp6("ICMPv6EchoReply"), False, None),
        ("ICMPv6 destination unreachable embedding the server's packet", "2001:db8:a::8",
         icmp6("ICMPv6DestUnreach", inner=_embedded6_from_server), False, None),
        ("ICMPv6 packet too big", "2001:db8:a::9", icmp6("ICMPv6PacketTooBig", inner=_embedded6_from_server), False, None),
        ("ICMPv6 time exceeded", "2001:db8:a::a", icmp6("ICMPv6TimeExceeded", inner=_embedded6_from_server), False, None),
        ("ICMPv6 neighbour solicitation", "2001:db8:a::b", icmp6("ICMPv6ND_NS", tgt=S6), False, None),
        ("ICMPv6 router solicitation", "2001:db8:a::c", icmp6("ICMPv6ND_RS"), False, None),
    ]
    for name, src, l4, attempt, aggr in p6:
        p.append(Probe(f"IPv6 {name}", _v6(src, l4, hlim=255 if "solicitation" in name else 64),
                       expect_in=attempt, aggressive=aggr, remote=src, family=6))

    def gre6(marker):
        from scapy.layers.inet6 import IPv6
        return IPv6(src="2001:db8:b::47", dst=S6, fl=marker, nh=47) / (b"\0\0\x08\0" + b"\x45" + b"\0" * 19), None
    p.append(Probe("IPv6 GRE", gre6, expect_in=True, remote="2001:db8:b::47", family=6))

    def hbh_echo(marker):
        from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop, ICMPv6EchoRequest
        return IPv6(src="2001:db8:b::1", dst=S6, fl=marker) / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest(), None
    p.append(Probe("IPv6 hop-by-hop header + echo request", hbh_echo, expect_in=True,
                   remote="2001:db8:b::1", family=6))

    def frag_syn(marker):
        from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
        from scapy.layers.inet import TCP
        return IPv6(src="2001:db8:b::2", dst=S6, fl=marker) / IPv6ExtHdrFragment(id=0xabcd) / TCP(sport=40000, dport=22, flags="S"), None
    p.append(Probe("IPv6 atomic fragment header + TCP SYN", frag_syn, expect_in=True,
                   remote="2001:db8:b::2", family=6))

    def mld_query(marker):
        from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop, RouterAlert, ICMPv6MLQuery
        return IPv6(src="fe80::1", dst="ff02::1", fl=marker, hlim=1) / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / ICMPv6MLQuery(), MCAST6_MAC
    p.append(Probe("IPv6 MLD query to ff02::1", mld_query, expect_in=False, family=6))

    def echo6_multicast(marker):
        from scapy.layers.inet6 import IPv6, ICMPv6EchoRequest
        return IPv6(src="2001:db8:b::3", dst="ff02::1", fl=marker) / ICMPv6EchoRequest(), MCAST6_MAC
    p.append(Probe("IPv6 echo request to ff02::1", echo6_multicast, expect_in=False, family=6))

    # The server acts: outbound attempts (remote = DST).
    p.append(Probe("server opens TCP to 198.51.100.80:4444 (call home)",
                   outbound=_connect("198.51.100.80", 4444), expect_out=True, remote="198.51.100.80"))
    p.append(Probe("server sends UDP to 203.0.113.9:9999",
                   outbound=_udp_send("203.0.113.9", 9999), expect_out=True, remote="203.0.113.9"))
    p.append(Probe("server pings 198.18.0.5", outbound=_ping("198.18.0.5"), expect_out=True,
                   remote="198.18.0.5"))
    p.append(Probe("server opens TCP to [2001:db8:c::80]:4444",
                   outbound=_connect("2001:db8:c::80", 4444), expect_out=True,
                   remote="2001:db8:c::80", family=6))
    return p


PROBES = probes()


# Firewall profiles: the same probes under the LOG rule styles admins use.
PROFILES = {
    "firewalld": ("iptables", '--log-prefix "FINAL_REJECT: "', "FINAL_REJECT"),
    "verbose": ("iptables", '--log-prefix "[IPTABLES REJECT]: " --log-tcp-sequence '
                '--log-tcp-options --log-ip-options --log-uid', "[IPTABLES REJECT]"),
    "nft-all": ("nft", 'log prefix "filter_IN_public_REJECT: " flags all', "filter_IN_public_REJECT"),
    "ufw": ("iptables", '--log-prefix "[UFW BLOCK] "', "[UFW BLOCK]"),
    "bare": ("iptables", "", ""),
}
OUT_PREFIX = "UNKNOWN_OUTGOING"


def apply_profile(lab: Lab, profile: str):
    """LOG every packet in and out (accepting them, so the kernels answer for real)."""
    kind, opts, _ = PROFILES[profile]
    lab.server_sh("nft", "flush", "ruleset")
    if kind == "nft":
        lab.server_sh("nft", "-f", "-", input=f"""
table inet lab {{
  chain input {{
    type filter hook input priority 0; policy accept;
    iif lo accept
    {opts}
  }}
  chain output {{
    type filter hook output priority 0; policy accept;
    oif lo accept
    log prefix "{OUT_PREFIX}: " flags all
  }}
}}""")
        return
    for tool in ("iptables", "ip6tables"):
        lab.server_sh(tool, "-A", "INPUT", "-i", "lo", "-j", "ACCEPT")
        lab.server_sh("sh", "-c", f"{tool} -A INPUT -j LOG {opts}")
        lab.server_sh(tool, "-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT")
        lab.server_sh(tool, "-A", "OUTPUT", "-j", "LOG", "--log-prefix", f"{OUT_PREFIX}: ", "--log-uid")


def capture(lab: Lab, profile: str, only: Optional[list[Probe]] = None) -> list[tuple[Optional[Probe], KernelRecord]]:
    """Play the probes; pair each kernel record with the probe that sent it (None for
    the kernels' answers and neighbour discovery)."""
    apply_profile(lab, profile)
    log = lab.kernel_log()
    out: list[tuple[Optional[Probe], KernelRecord]] = []
    try:
        for n, probe in enumerate(only or PROBES):
            marker = 1000 + n
            if probe.inbound:
                pkt, mac = probe.inbound(marker)
                lab.send(pkt, dst_mac=mac)
                # the probe's own packet: inbound, carrying its marker
                own = (f"IN={lab.server_if} ", f" ID={marker} " if probe.family == 4 else f" FLOWLBL={marker} ")
            else:
                probe.outbound(lab, marker)
                # the server's own packets to the probe's remote (SYN retransmissions too)
                own = (f"OUT={lab.server_if} ", f" DST={ipaddress.ip_address(probe.remote).exploded} ")
            # until the probe's own line came (a loaded machine may log it later than the
            # settle time: it would then be read with the next probe's lines, as none's)
            for rec in log.read(settle=0.15, timeout=10.0, until=lambda r: all(part in r.message for part in own)):
                out.append((probe if all(part in rec.message for part in own) else None, rec))
    finally:
        log.close()
    return out



# -- a container host: a "container" namespace behind a bridge named docker0 in the
# server, Docker-like NAT (a published port DNATed to it, its own traffic masqueraded),
# every forwarded and input packet logged. Addresses stay in the lab's ranges.
CONTAINER_NET, BRIDGE_V4, CONTAINER_V4 = "198.18.100.0/24", "198.18.100.1", "198.18.100.2"
PUBLISHED = 8080
BRIDGE = "docker0"          # a name the filter's default insideifaces knows


@dataclass
class ContainerCase:
    name: str
    act: Callable                   # (lab, container netns) -> None
    match: Callable                 # kernel message -> bool: this case's own record
    expect_in: bool
    remote: str = ""


def container_cases() -> list[ContainerCase]:
    def inbound(lab, ctr):
        from scapy.layers.inet import IP, TCP
        lab.send(IP(src="203.0.113.90", dst=S4) / TCP(sport=40090, dport=PUBLISHED, flags="S"))

    def inbound_backscatter(lab, ctr):
        from scapy.layers.inet import IP, TCP
        lab.send(IP(src="203.0.113.92", dst=S4) / TCP(sport=443, dport=PUBLISHED, flags="RA", ack=5, seq=7))

    def outbound(lab, ctr):
        with in_netns(ctr):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(("203.0.113.91", 4444))
            except BlockingIOError:
                pass
            time.sleep(0.2)
            s.close()

    def outbound_udp(lab, ctr):
        with in_netns(ctr):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"call home", ("203.0.113.93", 9999))
            s.close()

    def to_host(lab, ctr):
        with in_netns(ctr):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect((BRIDGE_V4, 5432))
            except BlockingIOError:
                pass
            time.sleep(0.2)
            s.close()

    return [
        ContainerCase("inbound SYN to a published port, DNATed to the container (IN=uplink OUT=docker0)",
                      inbound, lambda m: "SRC=203.0.113.90 " in m and f"OUT={BRIDGE} " in m, True, "203.0.113.90"),
        ContainerCase("inbound ACK RST to the published port (backscatter; no connection, so not DNATed)",
                      inbound_backscatter, lambda m: "SRC=203.0.113.92 " in m, False),
        ContainerCase("the container's own outbound connection (IN=docker0 OUT=uplink): never",
                      outbound, lambda m: f"IN={BRIDGE} " in m and "DST=203.0.113.91 " in m, False),
        ContainerCase("the container's outbound UDP: never",
                      outbound_udp, lambda m: f"IN={BRIDGE} " in m and "DST=203.0.113.93 " in m, False),
        ContainerCase("the container to the host itself (IN=docker0 OUT=): never",
                      to_host, lambda m: f"IN={BRIDGE} OUT= " in m and f"DST={BRIDGE_V4} " in m, False),
    ]


def capture_container(lab: Lab, prefix: str = "DOCKER-USER: ") -> list[tuple[Optional[ContainerCase], KernelRecord]]:
    """Build the container behind docker0 inside the lab's server, play the cases, and
    pair each kernel record with its case (None: other records, e.g. the kernels' answers)."""
    from f2b_ext.lab.netns import KernelLog, sh
    ctr = f"{lab.server}c"
    host_if, ctr_if = f"{lab.server}v", f"{lab.server}w"
    sh("ip", "netns", "add", ctr)
    try:
        sh("ip", "-n", ctr, "link", "set", "lo", "up")
        lab.server_sh("ip", "link", "add", BRIDGE, "type", "bridge")
        lab.server_sh("ip", "addr", "add", f"{BRIDGE_V4}/24", "dev", BRIDGE)
        lab.server_sh("ip", "link", "set", BRIDGE, "up")
        lab.server_sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ctr_if, "netns", ctr)
        lab.server_sh("ip", "link", "set", host_if, "master", BRIDGE, "up")
        sh("ip", "-n", ctr, "addr", "add", f"{CONTAINER_V4}/24", "dev", ctr_if)
        sh("ip", "-n", ctr, "link", "set", ctr_if, "up")
        sh("ip", "-n", ctr, "route", "add", "default", "via", BRIDGE_V4)
        lab.server_sh("sysctl", "-qw", "net.ipv4.ip_forward=1")     # the server namespace's own
        lab.server_sh("nft", "flush", "ruleset")
        lab.server_sh("iptables", "-t", "nat", "-A", "PREROUTING", "-i", lab.server_if, "-p", "tcp",
                      "--dport", str(PUBLISHED), "-j", "DNAT", "--to-destination", f"{CONTAINER_V4}:80")
        lab.server_sh("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", CONTAINER_NET, "!", "-o", BRIDGE,
                      "-j", "MASQUERADE")
        for chain in ("FORWARD", "INPUT"):
            lab.server_sh("iptables", "-A", chain, "-j", "LOG", "--log-prefix", prefix)
        log = KernelLog((lab.server_if, BRIDGE))
        out = []
        try:
            for case in container_cases():
                case.act(lab, ctr)
                for rec in log.read(settle=0.2, timeout=10.0, until=lambda r: case.match(r.message)):
                    mine = CONTAINER_V4 in rec.message or lab.server_if in rec.message or \
                        f"DST={BRIDGE_V4} " in rec.message
                    if mine:
                        out.append((case if case.match(rec.message) else None, rec))
        finally:
            log.close()
        return out
    finally:
        sh("ip", "netns", "del", ctr, check=False)
