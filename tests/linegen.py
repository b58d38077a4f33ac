"""Hypothesis strategies that write netfilter LOG lines in the kernel's grammar
(nf_log_syslog.c), including everything the filter must refuse."""
from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from f2b_ext.core.netfilter import TCP_FLAG_ORDER

V4_SPECIAL = ["0.0.0.0", "224.0.0.1", "239.255.255.250", "192.0.2.255", "255.255.255.255",
              "198.51.100.1", "203.0.113.7", "198.18.0.9", "192.0.2.1", "127.0.0.1", "169.254.1.1",
              "0.1.2.3", "192.168.1.20"]
V6_SPECIAL = ["::", "ff02::1", "ff05::2", "2001:db8::1", "2001:db8:ffff::7", "fe80::1", "::1",
              "::ffff:198.51.100.7", "::198.51.100.7", "::ffff:0:198.51.100.7", "64:ff9b::c633:6407",
              "64:ff9b:1::1", "febf::1", "fec0::1", "2002:c633:6407::1"]
# What the kernel never prints: other notations of an address (must never match).
NOT_KERNEL = ["010.001.002.003", "999.0.2.7", "[192.0.2.7]", "\uff11\uff19\uff12.0.2.7", "2001:db8::7",
              "2001:0DB8:0000:0000:0000:0000:0000:0007", "203.0.113.7."]
# Interfaces: outside, inside (default insideifaces), loopback; bridge ports.
IFACES_IN = ["eth0", "eth0", "eth0", "docker0", "br-0123456789ab", "lo", "eth1", "br0"]
IFACES_OUT = ["eth1", "docker0", "virbr0", "cali1a2b3c", "br0", "eth0", "lo"]
PORTS = ["", "", "", "PHYSIN=eth2 ", "PHYSIN=vethabc ", "PHYSOUT=veth123 ", "PHYSIN=eth2 PHYSOUT=eth3 "]


def v4():
    any_v4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
    return st.one_of(st.sampled_from(V4_SPECIAL), any_v4, any_v4, any_v4)


def v6():
    any_v6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
    return st.one_of(st.sampled_from(V6_SPECIAL), any_v6, any_v6, any_v6
                     ).map(lambda a: ipaddress.IPv6Address(a).exploded)


PREFIXES = ["", "FINAL_REJECT: ", "UNKNOWN_OUTGOING: ", "[UFW BLOCK] ", "[IPTABLES REJECT]: ",
            "filter_IN_public_REJECT: ", "FINAL_REJECT_X: ", "X SRC=203.0.113.66 ", "DROP:",
            "SRC 1.2.3.4: "]
MACS = ["", "MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 ", "MAC=ff:ff:ff:ff:ff:ff:52:54:00:65:43:21:08:00 ",
        "MAC= ", "MACSRC=52:54:00:65:43:21 MACDST=52:54:00:12:34:56 MACPROTO=0800 ",
        "MACSRC=52:54:00:65:43:21 MACDST=ff:ff:ff:ff:ff:ff MACPROTO=0800 ",
        "PHYSIN=eth1 MAC=01:00:5e:00:00:01:b8:ca:3a:62:cc:e0:08:00 ",
        # a SIT tunnel's, and runs the filter and the core skip alike (never read)
        "MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 TUNNEL=192.0.2.9->192.0.2.10 ",
        "MAC=zz:54 ", "MAC=52:54 XS=1 "]
# ordinary frames most of the time, broadcast ones now and then
MACS = MACS + [MACS[1], MACS[4]] * 4
HEADERS = ["Nov 21 08:08:21 host kernel: [  444.910152] ",
           "2026-11-21T08:08:21.452534+00:00 host kernel: [  444.910152] ",
           "Nov 21 08:08:21 host kernel: ", "host kernel: [  444.910152] "]


@st.composite
def tcp_part(draw):
    flags = [f for f in TCP_FLAG_ORDER if draw(st.booleans())]
    seq = draw(st.sampled_from(["", "SEQ=1 ACK=2 ", "SEQ=01 ACK=x ", "SEQ=1 RX=2 "]))
    tail = draw(st.sampled_from(["", "OPT (020405B4) "]))
    if draw(st.integers(0, 20)) == 0:
        return draw(st.sampled_from(["PROTO=TCP ", "PROTO=TCP INCOMPLETE [4 bytes] "]))
    if draw(st.integers(0, 10)) == 0:
        return draw(st.sampled_from(["UDP", "UDPLITE", "ICMP", "ICMPv6", "ESP", "AH", "47", "FOO"]).map(
            lambda p: f"PROTO={p} INCOMPLETE [0 bytes] "))
    return (f"PROTO=TCP SPT={draw(st.integers(0, 65535))} DPT={draw(st.integers(0, 65535))} {seq}"
            f"WINDOW=1024 RES=0x00 {''.join(f + ' ' for f in flags)}URGP=0 {tail}")


@st.composite
def proto_part(draw, family):
    kind = draw(st.sampled_from(["tcp", "tcp", "udp", "icmp", "other"]))
    if kind == "tcp":
        return draw(tcp_part())
    if kind == "udp":
        name = draw(st.sampled_from(["UDP", "UDPLITE"]))
        sport = draw(st.one_of(st.sampled_from([53, 67, 68, 123, 137, 138, 1900, 5353, 530, 5300]),
                               st.integers(0, 65535)))
        return f"PROTO={name} SPT={sport} DPT={draw(st.integers(0, 65535))} LEN=20 "
    if kind == "icmp":
        name = "ICMP" if family == 4 else "ICMPv6"
        itype = draw(st.integers(0, 255))
        embed = draw(st.sampled_from(["", "[SRC=192.0.2.1 DST=203.0.113.66 LEN=40 TOS=0x00 PREC=0x00 TTL=1 ID=4 "
                                          "PROTO=TCP SPT=1 DPT=22 WINDOW=1 RES=0x00 SYN URGP=0 ] "]))
        return f"PROTO={name} TYPE={itype} CODE={draw(st.integers(0, 255))} {embed}"
    num = draw(st.one_of(st.integers(0, 255).map(str), st.sampled_from(["ESP", "AH", "2", "47"])))
    return f"PROTO={num} " + draw(st.sampled_from(["", "SPI=0x2a "]))


@st.composite
def netfilter_line(draw):
    family = draw(st.sampled_from([4, 6]))
    addr = v4() if family == 4 else v6()
    src, dst = draw(addr), draw(addr)
    if draw(st.integers(0, 12)) == 0:
        src = draw(st.sampled_from(NOT_KERNEL))
    direction = draw(st.sampled_from(["in", "in", "out", "fwd"]))
    inn = "" if direction == "out" else draw(st.sampled_from(IFACES_IN))
    out = "" if direction == "in" else draw(st.sampled_from(IFACES_OUT))
    l2 = draw(st.sampled_from(MACS)) if inn else ""
    ports = draw(st.sampled_from(PORTS))
    old_order = draw(st.booleans())
    if family == 4:
        ipf = draw(st.sampled_from(["LEN=60 TOS=0x00 PREC=0x00 TTL=51 ID=5 "] * 4 + [
            # skipped alike by the filter and the core (values never read), or refused
            # alike ("P" before PREC=, another "P" word after it)
            "LEN=060 TOS=0xZZ PREC=0x00 TTL=x ID=5 ", "LEN=60 PX=1 PREC=0x00 TTL=51 ID=5 ",
            "LEN=60 TOS=0x00 PREC=0x00 TTL=51 PID=5 "])) + \
            draw(st.sampled_from(["", "DF ", "CE DF MF ", "MF FRAG:100 ", "DF OPT (0102030405060708) "]))
    else:
        ipf = "LEN=60 TC=0 HOPLIMIT=64 FLOWLBL=0 " + "".join(draw(st.lists(st.sampled_from(
            ["OPT ( ) ", "FRAG:0 ID:0000abcd ", "OPT ( FRAG:8 INCOMPLETE ID:0000abcd ) ", "OPT ( AH SPI=0x2a ) "]),
            max_size=12)))
    tail = draw(st.sampled_from(["", "UID=0 GID=0 ", "MARK=0x1 "]))
    physin = "".join(w + " " for w in ports.split() if w.startswith("PHYSIN="))
    physout = "".join(w + " " for w in ports.split() if w.startswith("PHYSOUT="))
    ifaces = (f"IN={inn} {physin}OUT={out} {physout}" if old_order    # older kernels' order
              else f"IN={inn} OUT={out} {ports}")
    body = (f"{draw(st.sampled_from(PREFIXES))}{ifaces}{l2}SRC={src} DST={dst} "
            f"{ipf}{draw(proto_part(family))}{tail}")
    if draw(st.booleans()):
        body = body.rstrip()          # syslog daemons may strip the trailing space
    if draw(st.integers(0, 15)) == 0:  # truncated anywhere
        body = body[:draw(st.integers(0, len(body)))]
    return draw(st.sampled_from(HEADERS)) + body
