"""The evidence model and the dependency parsers: pure, on text and plain data."""
from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given, settings, strategies as st

from f2b_ext.core import dependencies as deps
from f2b_ext.core.escalation import ban_kind, ticket_evidence
from f2b_ext.core.evidence import RULES, Evidence, classify, parse, weakest_needed


# -- evidence ---------------------------------------------------------------------------

@pytest.mark.parametrize("proto,direction,kind", [
    (None, None, Evidence.PROVEN),             # an application's log: sshd, nginx
    ("TCP", "IN", Evidence.FORGEABLE),         # a dropped SYN: no handshake happened
    ("TCP", "in", Evidence.FORGEABLE),         # ipfw
    ("UDP", "FWD", Evidence.FORGEABLE),
    ("47", "IN", Evidence.FORGEABLE),
    ("SYN_RECV", None, Evidence.FORGEABLE),    # synwatch: kernel evidence without a direction
    ("TCP", "OUT", Evidence.OUTBOUND),         # this host sent it
    ("UDP", "out", Evidence.OUTBOUND),
    (None, "OUT", Evidence.OUTBOUND),
])
def test_classify(proto, direction, kind):
    assert classify(proto, direction) == kind


def test_rules_table_is_complete_and_ordered():
    assert set(RULES) == set(Evidence)
    # only proven evidence climbs by default; everything weaker is bounded
    assert [k for k, r in RULES.items() if r.climbs_wide] == [Evidence.PROVEN]
    assert all(RULES[k].breaker for k in Evidence if k != Evidence.PROVEN)
    assert RULES[Evidence.FORGEABLE].schedule == "forged"
    assert parse("Forgeable") == Evidence.FORGEABLE and parse("proven") == Evidence.PROVEN
    with pytest.raises(ValueError):
        parse("maybe")


@settings(max_examples=300, deadline=None)
@given(kinds=st.lists(st.sampled_from(list(Evidence)), max_size=10), need=st.integers(1, 10))
def test_weakest_needed_is_the_weakest_of_the_strongest_need(kinds, need):
    got = weakest_needed(kinds, need)
    if len(kinds) < need:
        assert got is None
        return
    # no choice of `need` pieces has a stronger weakest piece
    best = max(min(c) for c in itertools.combinations(kinds, need)) if len(kinds) <= 8 else got
    assert got == best


@pytest.mark.parametrize("single,data,restored,kind", [
    (True, {}, False, "host"),
    (True, {"proto": "TCP"}, True, "host"),
    (False, {"escalation": "5 hosts"}, False, "ours"),
    (False, {"escalation": "5 hosts"}, True, "ours-restored"),
    (False, {"proto": "SYN_RECV"}, False, "filter-prefix"),
    (False, {"proto": "SYN_RECV"}, True, "restored"),
    (False, {}, True, "restored"),
    (False, {}, False, "admin-prefix"),
])
def test_ban_kinds(single, data, restored, kind):
    assert ban_kind(single, data, restored)[0] == kind


def test_on_ban_feeds_the_escalator_as_ban_kinds_says():
    from f2b_ext.core.escalation import Escalator, Ladder, Safety, on_ban
    core = Escalator(Ladder(rungs={4: ((24, 3),), 6: ((64, 3),)}), safety=Safety(bogons=()))
    inf = float("inf")
    for n, host in enumerate(("203.0.113.1", "203.0.113.2")):
        assert on_ban(core, host, {"proto": "TCP", "dir": "IN"}, False, 100 + n, 700, 100 + n) == ("host", [])
    # a restored host already used up by an escalation (at 150) is not counted again
    assert on_ban(core, "203.0.113.3", {"proto": "TCP"}, True, 120, 720, 200, last_escalation=150) == ("host", [])
    kind, pending = on_ban(core, "203.0.113.3", {"proto": "TCP", "dir": "IN"}, False, 201, 801, 201)
    assert kind == "host" and [str(c.net) for c in pending] == ["203.0.113.0/24"]
    # our own prefix coming back, an admin's: remembered (no repeat proposal), never new evidence
    assert on_ban(core, "203.0.113.0/24", {"escalation": "3 hosts", "evidence": "proven"}, False, 201, 3801, 201) \
        == ("ours", [])
    assert on_ban(core, "198.51.100.0/24", {}, False, 202, inf, 202) == ("admin-prefix", [])
    assert on_ban(core, "203.0.113.4", {"proto": "TCP", "dir": "IN"}, False, 203, 803, 203) == ("host", [])


def test_ticket_evidence():
    assert ticket_evidence({"evidence": "outbound"}, Evidence.PROVEN) == Evidence.OUTBOUND
    assert ticket_evidence({"evidence": "nonsense"}, Evidence.PROVEN) == Evidence.FORGEABLE   # the safe side
    assert ticket_evidence({"forged": True}, Evidence.PROVEN) == Evidence.FORGEABLE          # older tickets
    assert ticket_evidence({"forged": False}, Evidence.FORGEABLE) == Evidence.PROVEN
    assert ticket_evidence({"proto": "SYN_RECV"}, Evidence.PROVEN) == Evidence.FORGEABLE
    assert ticket_evidence({}, Evidence.PROVEN) == Evidence.PROVEN


# -- parsers ----------------------------------------------------------------------------

def test_resolv_conf():
    text = """# generated
search example.org
nameserver 198.51.100.53
nameserver  2001:db8::53
nameserver fe80::1%eth0
nameserver not-an-address
options edns0
"""
    assert deps.resolv_conf(text) == ["198.51.100.53", "2001:db8::53", "fe80::1"]


def test_route_gateways_with_multipath_and_link_local_routers():
    routes = [
        {"dst": "default", "gateway": "192.0.2.254", "dev": "eth0"},
        {"dst": "198.18.0.0/15", "nexthops": [{"gateway": "192.0.2.10", "dev": "eth0"},
                                              {"gateway": "192.0.2.11", "dev": "eth1"}]},
        {"dst": "default", "gateway": "fe80::1", "dev": "eth0", "protocol": "ra"},
        {"dst": "192.0.2.0/24", "dev": "eth0", "scope": "link"},
        {"dst": "default", "gateway": 7}, "garbage", {"gateway": "999.1.1.1"},
    ]
    assert deps.route_gateways(routes) == [("192.0.2.254", "eth0"), ("192.0.2.10", "eth0"),
                                           ("192.0.2.11", "eth1"), ("fe80::1", "eth0")]
    assert deps.route_gateways("not a list") == []
    neigh = [{"dst": "fe80::1", "dev": "eth0", "router": None, "state": ["STALE"]},
             {"dst": "fe80::2", "dev": "eth0", "state": ["REACHABLE"]}]
    assert deps.neighbour_routers(neigh) == ["fe80::1"]


def test_ntp_configs():
    chrony = """pool 2.debian.pool.ntp.org iburst
server 198.51.100.123 iburst prefer
# server 203.0.113.1
peer ntp-peer.example.org
sourcedir /run/chrony-dhcp
"""
    assert deps.ntp_conf(chrony) == ["2.debian.pool.ntp.org", "198.51.100.123", "ntp-peer.example.org"]
    timesyncd = """[Time]
NTP=198.51.100.124 time.example.org
#FallbackNTP=0.debian.pool.ntp.org
FallbackNTP=2001:db8::123
"""
    assert deps.timesyncd_conf(timesyncd) == ["198.51.100.124", "time.example.org", "2001:db8::123"]
    assert deps.split_names(["198.51.100.1", "a.example"]) == (["198.51.100.1"], ["a.example"])


def _proc_row(local: str, remote: str, state: int) -> str:
    return f"   0: {local} {remote} {state:02X} 00000000:00000000 00:00000000 00000000     0        0 1 1 0 10 0"


def test_proc_tcp_peers_are_connections_this_host_opened_past_the_handshake():
    # 192.0.2.1 is 0100 02C0 little-endian; 198.51.100.9 is 09 64 33 C6 -> "096433C6"
    rows = [
        _proc_row("0100C000:0016", "00000000:0000", 0x0A),        # listening on 22
        _proc_row("0100C000:0016", "096433C6:A000", 0x01),        # a client of our sshd: not ours
        _proc_row("0100C000:9C40", "096433C6:01BB", 0x01),        # we connected to 198.51.100.9:443
        _proc_row("0100C000:9C41", "0A6433C6:01BB", 0x02),        # SYN_SENT: not answered
        _proc_row("0100C000:9C42", "0B6433C6:01BB", 0x06),        # TIME_WAIT: it completed
        "garbage", "",
    ]
    assert deps.proc_tcp_peers(rows) == ["198.51.100.9", "198.51.100.11"]
    v6 = _proc_row("B80D0120000000000000000001000000:9C40", "B80D0120000000000000000009000000:01BB", 0x01)
    assert deps.proc_tcp_peers([v6]) == ["2001:db8::9"]


def test_conntrack_peers_are_answered_flows_this_host_opened():
    lines = [
        "ipv4     2 udp      17 170 src=192.0.2.1 dst=198.51.100.53 sport=5000 dport=53 src=198.51.100.53 dst=192.0.2.1 sport=53 dport=5000 [ASSURED] mark=0 use=1",
        "ipv4     2 udp      17 20 src=192.0.2.1 dst=198.51.100.54 sport=5001 dport=53 [UNREPLIED] src=198.51.100.54 dst=192.0.2.1 sport=53 dport=5001 mark=0 use=1",
        "ipv4     2 tcp      6 431999 ESTABLISHED src=192.0.2.1 dst=203.0.113.9 sport=40000 dport=443 src=203.0.113.9 dst=192.0.2.1 sport=443 dport=40000 [ASSURED] mark=0 use=1",
        "ipv4     2 tcp      6 100 SYN_SENT src=192.0.2.1 dst=203.0.113.10 sport=40001 dport=443 [UNREPLIED] src=203.0.113.10 dst=192.0.2.1 sport=443 dport=40001 mark=0 use=1",
        "ipv4     2 tcp      6 60 SYN_RECV src=203.0.113.66 dst=192.0.2.1 sport=1 dport=22 src=192.0.2.1 dst=203.0.113.66 sport=22 dport=1 mark=0 use=1",
        "ipv4     2 tcp      6 100 ESTABLISHED src=203.0.113.77 dst=192.0.2.1 sport=2 dport=22 src=192.0.2.1 dst=203.0.113.77 sport=22 dport=2 [ASSURED] use=1",
        "ipv6     10 tcp      6 300 ESTABLISHED src=2001:0db8:0000:0000:0000:0000:0000:0001 dst=2001:0db8:0000:0000:0000:0000:0000:0009 sport=1 dport=443 src=2001:0db8:0000:0000:0000:0000:0000:0009 dst=2001:0db8:0000:0000:0000:0000:0000:0001 sport=443 dport=1 [ASSURED] use=1",
        "nonsense src= dst=",
    ]
    assert deps.conntrack_peers(lines, ["192.0.2.1", "2001:db8::1"]) == ["198.51.100.53", "203.0.113.9", "2001:db8::9"]


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=400))
def test_parsers_never_raise_on_hostile_text(text):
    for parse_text in (deps.resolv_conf, deps.ntp_conf, deps.timesyncd_conf):
        for item in parse_text(text):
            assert isinstance(item, str)
    deps.proc_tcp_peers(text.splitlines())
    deps.conntrack_peers(text.splitlines(), ["192.0.2.1"])
    deps.PeerMemory.loads(text)


def test_peer_memory_forgets_after_the_retention_and_survives_a_round_trip():
    m = deps.PeerMemory(retention=100)
    assert m.observe(["198.51.100.9", "198.51.100.9", "bogus"], now=1000) == 1
    assert m.observe(["2001:db8::9"], now=1050) == 1
    assert m.expire(now=1120) == ["198.51.100.9"]
    back = deps.PeerMemory.loads(m.dumps(), retention=100)
    assert back.seen == {"2001:db8::9": 1050.0}
    assert deps.PeerMemory.loads('{"peers": {"999.1.1.1": 5, "198.51.100.1": "x", "198.51.100.2": 7}}').seen == \
        {"198.51.100.2": 7.0}


def test_dependencies_know_what_they_protect_against():
    [gw] = deps.dependencies("gateway", ["fe80::1%eth0"], "via eth0")
    assert gw.always and str(gw) == "fe80::1 gateway (via eth0)"
    [peer] = deps.dependencies("peer", ["198.51.100.9"])
    assert not peer.always
    assert deps.dependencies("resolver", ["nonsense"]) == []
    assert str(deps.dependencies("protect", ["203.0.113.0/25"])[0]) == "203.0.113.0/25 protect"
    assert all(isinstance(ipaddress.ip_network(d.net), (ipaddress.IPv4Network, ipaddress.IPv6Network))
               for d in deps.dependencies("ntp", ["198.51.100.1", "2001:db8::1"]))
    with pytest.raises(ValueError):
        deps.dependencies("friend", ["198.51.100.1"])
