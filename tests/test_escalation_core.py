"""The escalation core: ladder, window, safety, schedule. Pure: time is passed in."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from f2b_ext.core.escalation import (Breaker, ConfigError, Escalator, HostBan, Ladder, NetworkIndex, Safety,
                                Schedule, parse_duration, parse_networks)
from f2b_ext.core.evidence import Evidence

ip = ipaddress.ip_address
net = ipaddress.ip_network
# tests live on documentation ranges, which are bogons: narrow the bogon list
NO_BOGONS = Safety(bogons=())


def esc(**kw):
    kw.setdefault("safety", NO_BOGONS)
    return Escalator(**kw)


# the filter's captures for each kind of evidence (evidence.classify)
PROVEN = dict(proto=None, direction=None)          # an application's log
INBOUND = dict(proto="TCP", direction="IN")        # a LOG line of a dropped SYN
OUTBOUND = dict(proto="UDP", direction="OUT")      # a packet this host sent


def bans(e, addrs, t0=1000.0, step=1.0, proto=None, direction=None):
    out = []
    for i, a in enumerate(addrs):
        out += e.observe(HostBan(ip(a), t0 + i * step, proto, direction))
    return out


def test_fifth_distinct_host_escalates_the_24():
    e = esc()
    assert bans(e, [f"203.0.113.{i}" for i in range(1, 5)]) == []
    [c] = bans(e, ["203.0.113.5"], t0=1005)
    assert c.net == net("203.0.113.0/24") and c.rung == 1 and c.members == 5 and c.evidence == Evidence.PROVEN


def test_the_same_host_twice_counts_once():
    e = esc()
    assert bans(e, ["203.0.113.1"] * 10 + [f"203.0.113.{i}" for i in (2, 3, 4)]) == []


def test_hosts_that_left_the_window_are_forgotten():
    e = esc(window=600)
    bans(e, [f"203.0.113.{i}" for i in range(1, 5)], t0=0)
    assert bans(e, ["203.0.113.5"], t0=10_000) == []          # the first four expired
    assert e.tracked() == 1


@pytest.mark.parametrize("proto", ["TCP", "UDP", "ICMP", "47", "UDPLITE"])
@pytest.mark.parametrize("direction", ["IN", "in", "FWD", None])
def test_inbound_kernel_evidence_is_forgeable_whatever_its_protocol(proto, direction):
    """A logged inbound packet had no handshake: TCP too. It counts by default, marked
    forgeable; with spoofable=ignore it does not count at all."""
    e = esc()
    [c] = bans(e, [f"203.0.113.{i}" for i in range(1, 6)], proto=proto, direction=direction)
    assert c.evidence == Evidence.FORGEABLE
    e = esc(spoofable="ignore")
    assert bans(e, [f"203.0.113.{i}" for i in range(1, 9)], proto=proto, direction=direction) == []
    assert e.tracked() == 0


@pytest.mark.parametrize("direction", ["OUT", "out"])      # netfilter's F-DIR, ipfw's
@pytest.mark.parametrize("proto", ["UDP", "ICMP", "47", "TCP"])
def test_outbound_evidence_is_outbound_whatever_its_protocol(direction, proto):
    """An outbound line's remote is the destination this host chose: not spoofed, even
    with spoofable=ignore, yet not proven (any local process chose it)."""
    e = esc(spoofable="ignore")
    assert bans(e, [f"203.0.113.{i}" for i in range(1, 5)], proto=proto, direction=direction) == []
    [c] = bans(e, ["203.0.113.5"], t0=1010, proto=proto, direction=direction)
    assert c.evidence == Evidence.OUTBOUND


def test_mixed_evidence_rests_on_the_weakest_kind_it_needed():
    e = esc()
    bans(e, [f"203.0.113.{i}" for i in range(1, 5)])                      # four proven
    [c] = bans(e, ["203.0.113.5"], t0=1010, **INBOUND)
    assert c.evidence == Evidence.FORGEABLE
    e = esc(ladder=Ladder.parse("24:3", "64:3"))
    bans(e, ["203.0.113.1"], **INBOUND)
    # the third member needs the forgeable one; with the fourth, three proven suffice
    found = bans(e, ["203.0.113.2", "203.0.113.3", "203.0.113.4"], t0=1010)
    assert [c.evidence for c in found] == [Evidence.FORGEABLE, Evidence.PROVEN]


def test_a_banned_prefix_is_not_proposed_again_until_its_ban_ends():
    e = esc()
    [c] = bans(e, [f"203.0.113.{i}" for i in range(1, 6)])
    e.mark_banned(c.net, until=5000, now=1005)
    assert bans(e, ["203.0.113.6"], t0=1006) == []
    e2 = esc(window=10_000)
    [c] = bans(e2, [f"203.0.113.{i}" for i in range(1, 6)])
    e2.mark_banned(c.net, until=2000, now=1005)
    # the ban ended; the evidence was used up by it: it takes five new hosts again
    assert bans(e2, [f"203.0.113.{i}" for i in range(11, 15)], t0=2500) == []
    assert [x.net for x in bans(e2, ["203.0.113.15"], t0=2600)] == [c.net]


def test_three_escalated_24s_escalate_the_16():
    e = esc(window=86400)
    wider = []
    for third in (1, 2, 3):
        [c] = bans(e, [f"198.51.{third}.{i}" for i in range(1, 6)], t0=third * 100)
        wider += e.mark_banned(c.net, until=10**9, now=third * 100 + 10)
    [w] = wider
    assert w.net == net("198.51.0.0/16") and w.rung == 2 and w.members == 3


def test_ipv6_uses_64_and_48():
    e = esc()
    [c] = bans(e, [f"2001:db8:1:2::{i}" for i in range(1, 6)])
    assert c.net == net("2001:db8:1:2::/64")


def test_protected_address_narrows_or_blocks():
    safety = Safety(protected=parse_networks("203.0.113.200", "protect"), bogons=())
    e = Escalator(safety=safety)
    # offenders all in the lower half: /25 holds 5 of them and not the protected one
    [c] = bans(e, [f"203.0.113.{i}" for i in range(1, 6)])
    assert c.net == net("203.0.113.0/25") and "narrowed" in c.reason
    # offenders spread on both sides of the protected address: nothing safe holds 5
    e = Escalator(safety=safety)
    assert bans(e, ["203.0.113.1", "203.0.113.130", "203.0.113.199", "203.0.113.201", "203.0.113.250"]) == []


def test_bogons_are_never_escalated_by_default():
    e = Escalator()
    assert bans(e, [f"192.168.1.{i}" for i in range(1, 20)]) == []
    assert bans(e, [f"2001:db8::{i}" for i in range(1, 20)]) == []


def test_maxprefix_is_enforced_at_configuration():
    with pytest.raises(ConfigError, match="ladder4"):
        Escalator(ladder=Ladder.parse("24:5 8:3", "64:5"), safety=NO_BOGONS)


@pytest.mark.parametrize("bad,name", [("24:5 25:3", "ladder4"), ("24", "ladder4"), ("32:5", "ladder4"),
                                      ("24:1", "ladder4")])
def test_bad_ladders_name_the_parameter(bad, name):
    with pytest.raises(ConfigError, match=name):
        Ladder.parse(bad, "64:5")


def test_schedule_steps_repeat_the_last_and_cap():
    s = Schedule.parse("1h 6h 1d 1w", maxtime="2d")
    assert [s.ban_time(n) for n in range(6)] == [3600, 21600, 86400, 172800, 172800, 172800]
    assert s.ban_time(3, Evidence.FORGEABLE) == 1800 == s.ban_time(0, Evidence.FORGEABLE)   # flat, short
    assert s.ban_time(3, Evidence.OUTBOUND) == 172800
    f = Schedule.parse("1h 6h", forged="10m 20m")
    assert [f.ban_time(n, Evidence.FORGEABLE) for n in range(4)] == [600, 1200, 1200, 1200]
    j = Schedule.parse("1h", rndtime="10m")
    assert j.ban_time(0, rnd=0.5) == 3600 + 300


@pytest.mark.parametrize("text,name", [("1h -1", "schedule"), ("", "schedule"), ("1y", "schedule"),
                                       ("0", "schedule")])
def test_bad_schedules_name_the_parameter(text, name):
    with pytest.raises(ConfigError, match=name):
        Schedule.parse(text)


def test_durations():
    assert [parse_duration(x, "t") for x in ("90", "90s", "15m", "1h", "2d", "1w")] == \
        [90, 90, 900, 3600, 172800, 604800]


# -- properties --------------------------------------------------------------------

v4_in_doc = st.sampled_from(["198.51.100", "203.0.113", "192.0.2"]).flatmap(
    lambda p: st.integers(0, 255).map(lambda h: f"{p}.{h}"))
v6_in_doc = st.integers(0, 2**16 - 1).flatmap(
    lambda a: st.integers(0, 40).map(lambda h: f"2001:db8:{a % 3:x}:0::{h:x}"))
protect_lists = st.lists(st.one_of(v4_in_doc, v6_in_doc), max_size=4)


@settings(max_examples=300, deadline=None)
@given(addrs=st.lists(st.one_of(v4_in_doc, v6_in_doc), min_size=1, max_size=200),
       protect=protect_lists, spoof=st.sampled_from(["ignore", "count"]),
       widen=st.sampled_from(list(Evidence)),
       kinds=st.lists(st.sampled_from([PROVEN, INBOUND, OUTBOUND, dict(proto="47", direction=None)]),
                      min_size=1, max_size=4))
def test_no_decision_ever_covers_a_protected_address(addrs, protect, spoof, widen, kinds):
    """Whatever the evidence and the options: no candidate covers a protected network or
    a bogon or passes maxprefix; every escalation ends; forgeable evidence never earns
    more than the forged schedule, nor climbs a wide rung unless `widen` lets it; the
    breaker's bounds hold."""
    safety = Safety(protected=parse_networks(protect, "protect"), bogons=parse_networks("192.0.2.0/24", "b"))
    breaker = Breaker(maxrate=4, period=300, maxheld=6)
    e = Escalator(safety=safety, spoofable=spoof, window=600, widen=widen, breaker=breaker,
                  ladder=Ladder.parse("24:3 16:2", "64:3 48:2"))
    schedule = Schedule.parse("1h 6h 1d 1w", rndtime="1h", forged="20m")
    t, bounded = 0.0, []
    for n, a in enumerate(addrs):
        t += 7
        pending = e.observe(HostBan(ip(a), t, **kinds[n % len(kinds)]))
        while pending:
            c = pending.pop()
            assert safety.index.overlap(c.net) is None
            assert all(not c.net.overlaps(p) for p in safety.protected if p.version == c.net.version)
            assert not c.net.overlaps(net("192.0.2.0/24")) or c.net.version == 6
            assert c.net.prefixlen >= safety.maxprefix[c.net.version]
            assert c.rung == 1 or c.evidence >= widen
            assert spoof == "count" or c.evidence != Evidence.FORGEABLE
            length = schedule.ban_time(prior=n, evidence=c.evidence, rnd=(n % 10) / 10)
            assert 0 < length <= schedule.maxtime                  # every escalation ends
            if c.evidence == Evidence.FORGEABLE:
                assert length <= 1200 + 3600
            if c.evidence != Evidence.PROVEN:
                bounded = [x for x in bounded if x > t - 300] + [t]
                assert len(bounded) <= 4
            pending += e.mark_banned(c.net, until=t + length, now=t, evidence=c.evidence)
        held = sum(2.0 ** (24 - n.prefixlen if n.version == 4 else 64 - n.prefixlen)
                   for n, (u, ev) in e._banned.items() if u > t and ev != Evidence.PROVEN)
        assert held <= 6
    # memory follows the window: nothing older than it is held
    e.observe(HostBan(ip("203.0.113.1"), t + 10_000))
    assert e.tracked() <= 2


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 12), fam=st.sampled_from([4, 6]))
def test_threshold_is_exact(n, fam):
    e = esc()
    addrs = [f"203.0.113.{i}" if fam == 4 else f"2001:db8::{i:x}" for i in range(1, n + 1)]
    found = []
    for i, a in enumerate(addrs):
        for c in e.observe(HostBan(ip(a), 1000.0 + i)):
            found.append((i + 1, c.net))
            e.mark_banned(c.net, until=10**9, now=1000.0 + i)    # as the adapter does
    assert found == ([(5, net("203.0.113.0/24" if fam == 4 else "2001:db8::/64"))] if n >= 5 else [])


@pytest.mark.parametrize("spoofable,widen,widened", [("ignore", "proven", False), ("count", "proven", False),
                                                    ("count", "forgeable", True)])
def test_prefix_bans_a_filter_matched_climb_a_rung_only_with_the_opt_in(spoofable, widen, widened):
    """synrecv's /24 lines are bans of prefixes on forgeable evidence: three of them in a
    /16 make the /16 only when `widen` lets forgeable evidence climb (and the breaker
    lets a /16, 256 /24s, be held beside them), and then as forgeable (the forged schedule)."""
    e = Escalator(safety=NO_BOGONS, spoofable=spoofable, widen=widen, breaker=Breaker(maxheld=512))
    found = []
    for i, third in enumerate((1, 2, 3)):
        found += e.mark_banned(net(f"198.18.{third}.0/24"), until=10_000, now=100 + i, evidence=Evidence.FORGEABLE)
    assert [str(c.net) for c in found] == (["198.18.0.0/16"] if widened else [])
    assert all(c.evidence == Evidence.FORGEABLE for c in found)
    assert set(map(str, e.active(150))) >= {"198.18.1.0/24", "198.18.2.0/24", "198.18.3.0/24"}


@pytest.mark.parametrize("kind,climbs", [(PROVEN, True), (OUTBOUND, False), (INBOUND, False)])
def test_only_proven_evidence_climbs_the_wide_rung_by_default(kind, climbs):
    e = esc(window=86400, breaker=Breaker(0, 3600, 0))
    wider = []
    for third in (1, 2, 3):
        [c] = bans(e, [f"198.51.{third}.{i}" for i in range(1, 6)], t0=third * 100, **kind)
        wider += e.mark_banned(c.net, until=10**9, now=third * 100 + 10, evidence=c.evidence)
    assert [str(w.net) for w in wider] == (["198.51.0.0/16"] if climbs else [])


def test_the_breaker_pauses_unproven_escalations_and_says_why():
    e = esc(breaker=Breaker(maxrate=3, period=3600, maxheld=0))
    for third in range(1, 5):
        found = bans(e, [f"198.18.{third}.{i}" for i in range(1, 6)], t0=third * 10, **INBOUND)
        if third <= 3:
            [c] = found
            e.mark_banned(c.net, until=10**6, now=third * 10 + 5, evidence=c.evidence)
        else:
            assert found == [] and "maxrate 3/3600s" in e.paused
    # proven evidence is not bounded
    [c] = bans(e, [f"198.18.9.{i}" for i in range(1, 6)], t0=100)
    assert c.evidence == Evidence.PROVEN and e.paused is None
    # an hour later the rate has room again
    [c] = bans(e, [f"198.18.4.{i}" for i in range(10, 15)], t0=3700, **INBOUND)
    assert c.net == net("198.18.4.0/24")


def test_the_breaker_bounds_the_space_held():
    e = esc(breaker=Breaker(maxrate=0, period=3600, maxheld=2))
    for third in (1, 2):
        [c] = bans(e, [f"198.18.{third}.{i}" for i in range(1, 6)], t0=third * 10, **OUTBOUND)
        e.mark_banned(c.net, until=500, now=third * 10 + 5, evidence=c.evidence)
    assert bans(e, [f"198.18.3.{i}" for i in range(1, 6)], t0=100, **OUTBOUND) == []
    assert "maxheld 2" in e.paused
    assert e.bounded_state(200) == (2, 2.0)
    # the held bans ended: room again
    [c] = bans(e, ["198.18.3.9"], t0=600, **OUTBOUND)
    assert c.net == net("198.18.3.0/24")


def test_hold_proposes_nothing_but_keeps_counting():
    e = esc()
    e.hold("resolver unknown")
    assert bans(e, [f"203.0.113.{i}" for i in range(1, 6)]) == []
    assert e.tracked() == 5
    e.hold(None)
    [c] = bans(e, ["203.0.113.6"], t0=1010)
    assert c.members == 6


@settings(max_examples=300, deadline=None)
@given(nets=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=20),
       probe=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)))
def test_the_network_index_finds_exactly_the_overlaps(nets, probe):
    made = [ipaddress.ip_network((a, p), strict=False) for a, p in nets]
    index = NetworkIndex(made + [net("2001:db8::/64")])
    q = ipaddress.ip_network(probe, strict=False)
    got = index.overlap(q)
    assert (got is not None) == any(q.overlaps(n) for n in made)
    assert got is None or got.overlaps(q)
    holder = index.covering(4, int(q.network_address), int(q.broadcast_address))
    assert (holder is not None) == any(q.subnet_of(n) for n in made)
    assert holder is None or q.subnet_of(holder)


@settings(max_examples=300, deadline=None)
@given(offsets=st.lists(st.integers(0, 255), min_size=1, max_size=40), around=st.integers(0, 255),
       guard=st.integers(0, 255), need=st.integers(2, 8))
def test_narrowing_equals_the_plain_search(offsets, around, guard, need):
    """_safe_prefix (one pass over the members) answers what checking every sub-prefix
    against every member answers."""
    safety = Safety(protected=(net(f"203.0.113.{guard}/32"),), bogons=())
    e = Escalator(safety=safety)
    members = [net(f"203.0.113.{o}/32") for o in offsets]
    top, at = net("203.0.113.0/24"), ip(f"203.0.113.{around}")

    def plain():
        if safety.why_unsafe(top) is None:
            return top
        for plen in range(25, 32):
            sub = ipaddress.ip_network(f"{at}/{plen}", strict=False)
            if sum(m.subnet_of(sub) for m in members) < need:
                return None
            if safety.why_unsafe(sub) is None:
                return sub
        return None
    assert e._safe_prefix(top, at, [int(m.network_address) for m in members], 32, need) == plain()


def test_ban_end_and_left():
    from f2b_ext.core.escalation import ban_end, ban_left
    assert ban_end(100, 600) == 700 and ban_end(100, -1) is None and ban_end(100, None) is None
    assert ban_left(100, 600, 650) == 50 and ban_left(100, -1, 650) is None
