"""The pure core against the rule tables, exhaustively; and against the real fail2ban
filter on generated lines (the regex and the tables must never disagree)."""
from __future__ import annotations

import ipaddress
import itertools
import re as _re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from f2b_ext.core import netfilter as nf
from linegen import netfilter_line

HEAD = "Nov 21 08:08:21 host kernel: [  444.910152] FINAL_REJECT: "
IN4 = "IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=203.0.113.7 DST=198.51.100.1 LEN=60 TOS=0x00 PREC=0x00 TTL=51 ID=5 DF "
OUT4 = "IN= OUT=eth0 SRC=198.51.100.1 DST=203.0.113.7 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=5 DF "
IN6 = ("IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:86:dd SRC=2001:0db8:0000:0000:0000:0000:0000:0007 "
       "DST=2001:0db8:0000:0000:0000:0000:0000:0001 LEN=60 TC=0 HOPLIMIT=64 FLOWLBL=0 ")
REMOTE4 = ipaddress.ip_address("203.0.113.7")

ALL_FLAG_SETS = [frozenset(c) for n in range(len(nf.TCP_FLAG_ORDER) + 1)
                 for c in itertools.combinations(nf.TCP_FLAG_ORDER, n)]


def tcp_line(base, flags):
    words = "".join(f + " " for f in nf.TCP_FLAG_ORDER if f in flags)
    return HEAD + base + f"PROTO=TCP SPT=40000 DPT=23 WINDOW=1024 RES=0x00 {words}URGP=0 "


def both(runner, line, **policy):
    """(core verdict, fail2ban's matches) for one line."""
    return nf.judge_line(line, nf.Policy.from_filter_options(policy)), runner(policy).match(line)


def test_flag_table_has_every_combination():
    assert len(ALL_FLAG_SETS) == 512


@pytest.mark.parametrize("flags", ALL_FLAG_SETS, ids=lambda f: "-".join(sorted(f)) or "NULL")
def test_tcp_inbound_every_flag_set(runner, flags):
    """Inbound: an attempt iff neither ACK nor RST; aggressive: always."""
    line = tcp_line(IN4, flags)
    verdict, found = both(runner, line)
    want = not (flags & {"ACK", "RST"})
    assert verdict.attempt is want and bool(found) is want
    if want:
        assert verdict.remote == REMOTE4 and found[0].ip == str(REMOTE4)
    verdict, found = both(runner, line, mode="aggressive")
    assert verdict.attempt and [m.ip for m in found] == [str(REMOTE4)]


@pytest.mark.parametrize("flags", ALL_FLAG_SETS, ids=lambda f: "-".join(sorted(f)) or "NULL")
def test_tcp_outbound_every_flag_set(runner, flags):
    """Outbound: only a new connection (SYN, no ACK, no RST); the remote is DST."""
    line = tcp_line(OUT4, flags)
    want = "SYN" in flags and not (flags & {"ACK", "RST"})
    for mode in ("normal", "aggressive"):
        verdict, found = both(runner, line, direction="out", mode=mode)
        assert verdict.attempt is want and bool(found) is want
        if want:
            assert found[0].ip == str(REMOTE4) and found[0].groups["dir"] == "OUT"
        verdict, found = both(runner, line, direction="in", mode=mode)
        assert not verdict.attempt and not found


@pytest.mark.parametrize("itype", range(256))
def test_icmp_every_type(runner, itype):
    line = HEAD + IN4 + f"PROTO=ICMP TYPE={itype} CODE=0 "
    want = itype in (8, 13, 15, 17)
    verdict, found = both(runner, line)
    assert verdict.attempt is want and bool(found) is want
    # and the same type embedded in an ICMP error never counts
    err = HEAD + IN4 + ("PROTO=ICMP TYPE=3 CODE=3 [SRC=198.51.100.1 DST=203.0.113.66 LEN=28 TOS=0x00 "
                        f"PREC=0x00 TTL=1 ID=4 PROTO=ICMP TYPE={itype} CODE=0 ] ")
    verdict, found = both(runner, err)
    assert not verdict.attempt and not found


@pytest.mark.parametrize("itype", range(256))
def test_icmpv6_every_type(runner, itype):
    line = HEAD + IN6 + f"PROTO=ICMPv6 TYPE={itype} CODE=0 "
    verdict, found = both(runner, line)
    assert verdict.attempt is (itype == 128) and bool(found) is (itype == 128)


@pytest.mark.parametrize("proto", [str(n) for n in range(256)] + ["ESP", "AH"])
def test_other_protocols(runner, proto):
    line = HEAD + IN4 + f"PROTO={proto} "
    verdict, found = both(runner, line)
    want = proto != "2"
    assert verdict.attempt is want and bool(found) is want
    if want:
        assert found[0].groups["proto"] == proto


@pytest.mark.parametrize("number", range(256))
def test_icmptypes_icmp6types_and_neverprotos_are_parameters_of_both(runner, number):
    """The filter's [Init] icmptypes, icmp6types and neverprotos: the core reads them too,
    so `f2b-ext test` explains a jail that sets them as fail2ban judges it."""
    opts = dict(icmptypes="0|8", icmp6types="128|129|135", neverprotos="2|47|41")
    for line, want in ((HEAD + IN4 + f"PROTO=ICMP TYPE={number} CODE=0 ", number in (0, 8)),
                       (HEAD + IN6 + f"PROTO=ICMPv6 TYPE={number} CODE=0 ", number in (128, 129, 135)),
                       (HEAD + IN4 + f"PROTO={number} ", number not in (2, 47, 41))):
        verdict, found = both(runner, line, **opts)
        assert verdict.attempt is want and bool(found) is want, (line, verdict.reason)


@pytest.mark.parametrize("sport", sorted(set(nf.DEFAULT_REPLY_PORTS) | {0, 1, 52, 54, 530, 1230, 5300, 65535}))
def test_udp_reply_ports(runner, sport):
    line = HEAD + IN4 + f"PROTO=UDP SPT={sport} DPT=9 LEN=20 "
    want = sport not in nf.DEFAULT_REPLY_PORTS
    verdict, found = both(runner, line)
    assert verdict.attempt is want and bool(found) is want


def test_reply_ports_is_a_parameter(runner):
    line = HEAD + IN4 + "PROTO=UDP SPT=4500 DPT=9 LEN=20 "
    assert both(runner, line)[0].attempt
    verdict, found = both(runner, line, replyports="4500|53")
    assert not verdict.attempt and not found


@pytest.mark.parametrize("dst", ["224.0.0.1", "239.1.2.3", "192.0.2.255", "255.255.255.255"])
def test_multicast_and_broadcast_destinations(runner, dst):
    line = HEAD + IN4.replace("DST=198.51.100.1", f"DST={dst}") + "PROTO=UDP SPT=40000 DPT=9 LEN=20 "
    verdict, found = both(runner, line)
    assert not verdict.attempt and not found


def test_policy_rejects_bad_parameters():
    with pytest.raises(ValueError, match="direction"):
        nf.Policy(direction="sideways")
    with pytest.raises(ValueError, match="mode"):
        nf.Policy(mode="paranoid")
    with pytest.raises(ValueError, match="logprefix"):
        nf.Policy(logprefix="(unclosed")
    with pytest.raises(ValueError, match="replyports"):
        nf.Policy.from_filter_options({"replyports": "53,123"})
    with pytest.raises(ValueError, match="protocols"):
        nf.Policy.from_filter_options({"protocols": "GRE or TCP"})
    with pytest.raises(ValueError, match="unknown"):
        nf.Policy.from_filter_options({"directoin": "out"})
    for key in ("icmptypes", "icmp6types", "neverprotos"):
        with pytest.raises(ValueError, match=key):
            nf.Policy.from_filter_options({key: "8,13"})
        with pytest.raises(ValueError, match=key):
            nf.Policy.from_filter_options({key: "256"})


POLICIES = [dict(), dict(direction="out"), dict(direction="any"), dict(mode="aggressive"),
            dict(logprefix="FINAL_REJECT"), dict(logprefix=r"\[UFW BLOCK\]"),
            dict(direction="out", logprefix="UNKNOWN_OUTGOING"), dict(protocols="47"),
            dict(direction="any", protocols="TCP|ICMPv6|50"),
            dict(insideifaces="eth1|eth2|docker[0-9]+"), dict(direction="any", insideifaces="br0|veth\\w+"),
            dict(insideaddrs=r"192\.168\.|2001:0db8:ffff:"), dict(direction="out", insideaddrs=r"203\.0\.113\.")]


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line=netfilter_line(), policy=st.sampled_from(POLICIES))
def test_regex_and_core_agree_on_generated_lines(runner, line, policy):
    """Differential: the shipped regexes (through real fail2ban) and the core tables."""
    verdict = nf.judge_line(line, nf.Policy.from_filter_options(policy))
    found = runner(policy).match(line)
    assert verdict.attempt == bool(found), (verdict.reason, [m.ip for m in found])
    if found:
        assert len(found) == 1
        assert ipaddress.ip_address(found[0].ip) == verdict.remote


def test_filter_defaults_are_the_cores():
    """The filter's [Init] insideifaces is the core's default (one fact, two notations)."""
    import re as _re
    from pathlib import Path
    conf = (Path(__file__).resolve().parent.parent / "filter.d" / "netfilter.conf").read_text()
    assert _re.search(r"^insideifaces = (.*)$", conf, _re.M).group(1) == nf.DEFAULT_INSIDE_IFACES
    assert _re.search(r"^insideaddrs = (.*)$", conf, _re.M).group(1) == nf.NO_ADDRESSES


def _never_remote_edges():
    for net, _ in nf.NEVER_REMOTE:
        for addr in (net.network_address, net.broadcast_address, net.network_address + net.num_addresses // 2):
            yield addr
        # just outside, on both sides
        for addr in (int(net.network_address) - 1, int(net.broadcast_address) + 1):
            if 0 <= addr < 2 ** net.max_prefixlen:
                yield ipaddress.ip_address(addr) if net.version == 4 else ipaddress.IPv6Address(addr)


@pytest.mark.parametrize("addr", list(_never_remote_edges()), ids=str)
@pytest.mark.parametrize("direction", ["in", "out"])
def test_never_remote_table_and_regex_agree(runner, addr, direction):
    """Every NEVER_REMOTE network's edges and middle (and its neighbours just outside),
    as SRC inbound and DST outbound: the filter and the core agree, and neither bans
    an address of the table."""
    text = nf.kernel_notation(addr)
    if addr.version == 4:
        line = (HEAD + (IN4.replace("SRC=203.0.113.7", f"SRC={text}") if direction == "in"
                        else OUT4.replace("DST=203.0.113.7", f"DST={text}")) + "PROTO=UDP SPT=40000 DPT=9 LEN=20 ")
    else:
        line = HEAD + (IN6.replace("SRC=2001:0db8:0000:0000:0000:0000:0000:0007", f"SRC={text}") if direction == "in"
                       else f"IN= OUT=eth0 SRC=2001:0db8:0000:0000:0000:0000:0000:0001 DST={text} LEN=60 TC=0 "
                            "HOPLIMIT=64 FLOWLBL=0 ") + "PROTO=UDP SPT=40000 DPT=9 LEN=20 "
    verdict, found = both(runner, line, direction=direction)
    assert verdict.attempt == bool(found), verdict.reason
    listed = nf.never_remote(addr) is not None
    multicast = direction == "out" and (any(addr in n for n in nf.MULTICAST_NETS)   # DST rules
                                        or (addr.version == 4 and addr.packed[-1] == 255))
    assert verdict.attempt is (not listed and not multicast), verdict.reason
    if found:
        assert ipaddress.ip_address(found[0].ip) == addr       # never turned into another form


@pytest.mark.parametrize("n", [9, 64, 1000])
def test_any_number_of_ipv6_extension_headers(runner, n):
    line = HEAD + IN6 + "OPT ( ) " * n + "PROTO=TCP SPT=40000 DPT=22 WINDOW=1024 RES=0x00 SYN URGP=0 "
    verdict, found = both(runner, line)
    assert verdict.attempt and [m.ip for m in found] == ["2001:db8::7"]


# Runs of fields no verdict depends on, which the filter and the core skip (not read):
# the link layer after MAC=, the IPv4 header fields from LEN= to PROTO=, TCP's between
# DPT= and RES=. (line, attempt?) under the default policy.
SYN = "PROTO=TCP SPT=40000 DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0 "
SKIPPED_RUNS = [
    (HEAD + IN4.replace("TTL=51 ID=5", "TTL=051 ID=x") + SYN, True),
    (HEAD + IN4.replace("TOS=0x00", "TOS=0xZZ") + SYN, True),
    (HEAD + IN4 + "OPT (0102030405060708) " + SYN, True),
    (HEAD + IN4.replace("08:00 ", "08:00 TUNNEL=192.0.2.9->192.0.2.10 ") + SYN, True),
    (HEAD + IN4.replace("MAC=52:54", "MAC=zz:54") + SYN, True),
    (HEAD + IN4 + SYN.replace("WINDOW=1024", "SEQ=01 ACK=x WINDOW=01"), True),
    # the skip stops at the first character it must not cross: refused
    (HEAD + IN4.replace("08:00 ", "08:00 XS=1 ") + SYN, False),
    (HEAD + IN4.replace("TOS=0x00", "TOS=0x00 OPT (0102)") + SYN, False),     # a "P" before PREC=
    (HEAD + IN4.replace("TTL=51", "TTL=51 PR=1") + SYN, False),               # an "R" in a "P" word
    (HEAD + IN4 + SYN.replace("WINDOW=1024", "WINDOW=R"), False),
    # the ports stay read: a TCP port the kernel never prints is refused
    (HEAD + IN4 + SYN.replace("DPT=23", "DPT=023"), False),
    # never an address out of a skipped run: a second SRC= or PROTO= is not the record's
    (HEAD + IN4.replace("MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 ",
                        "MAC=52:54 SRC=198.51.100.66 DST=198.51.100.1 ") + SYN, False),
    (HEAD + IN4 + "PROTO=UDP SPT=53 DPT=9 LEN=8 " + SYN, False),
]


@pytest.mark.parametrize("line, attempt", SKIPPED_RUNS)
def test_skipped_runs_are_skipped_alike(runner, line, attempt):
    for policy in ({}, {"direction": "any"}, {"mode": "aggressive"}):
        verdict, found = both(runner, line, **policy)
        assert verdict.attempt is attempt and bool(found) is attempt, (policy, verdict.reason)
        if found:
            assert [m.ip for m in found] == [str(REMOTE4)] and verdict.remote == REMOTE4


PREFIX_BODIES = ["A", "A I ", "x:", "I", "IN", "[UFW BLOCK]"]
PREFIX_DELIMITERS = ["", ":", ": ", " ", "  ", ":  ", "\t", ": \t", "::", "I", "IN"]


@pytest.mark.parametrize("length", [0, 1, 2, 3, 125, 126, 127, 128, 129, 130])
def test_default_prefix_length_and_delimiter(runner, length):
    """The default logprefix around the kernel's 127-character bound (the prefix holds its
    own delimiter), with every delimiter and with "I"/"IN" before IN=: the filter and the
    core accept the same lines. The filter captures no prefix (no action uses it); the
    prefix the core splits off, given back as the jail's logprefix, is one the filter
    reads on that line, and one the core splits off again."""
    for body in PREFIX_BODIES:
        for delim in PREFIX_DELIMITERS:
            text = (body * 130)[:length] + delim
            line = "Nov 21 08:08:21 host kernel: [  444.910152] " + text + IN4 + \
                "PROTO=TCP SPT=40000 DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0 "
            verdict, found = both(runner, line)
            assert verdict.attempt == bool(found), (repr(text), verdict.reason)
            assert verdict.attempt is ("=" not in text and len(text) <= 127), repr(text)
            if found:
                prefix = nf.parse_message(nf.kernel_message(line)[1]).prefix
                again = nf.parse_message(nf.kernel_message(line)[1], _re.escape(prefix))
                assert again is not None and again.prefix == prefix, repr(text)
                if len(prefix) <= 100:      # (fail2ban's reader caps option values)
                    assert [m.ip for m in both(runner, line, logprefix=_re.escape(prefix))[1]] == \
                        [str(REMOTE4)], repr(text)
