"""The escalation core: ladder, window, safety, schedule. Pure: time is passed in."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from f2b_ext.escalation import (ConfigError, Escalator, HostBan, Ladder, Safety, Schedule,
                                parse_duration, parse_networks)

ip = ipaddress.ip_address
net = ipaddress.ip_network
# tests live on documentation ranges, which are bogons: narrow the bogon list
NO_BOGONS = Safety(bogons=())


def esc(**kw):
    kw.setdefault("safety", NO_BOGONS)
    return Escalator(**kw)


def bans(e, addrs, t0=1000.0, step=1.0, proto="TCP", direction=None):
    out = []
    for i, a in enumerate(addrs):
        out += e.observe(HostBan(ip(a), t0 + i * step, proto, direction))
    return out


def test_fifth_distinct_host_escalates_the_24():
    e = esc()
    assert bans(e, [f"203.0.113.{i}" for i in range(1, 5)]) == []
    [c] = bans(e, ["203.0.113.5"], t0=1005)
    assert c.net == net("203.0.113.0/24") and c.rung == 1 and c.members == 5 and not c.forged


def test_the_same_host_twice_counts_once():
    e = esc()
    assert bans(e, ["203.0.113.1"] * 10 + [f"203.0.113.{i}" for i in (2, 3, 4)]) == []


def test_hosts_that_left_the_window_are_forgotten():
    e = esc(window=600)
    bans(e, [f"203.0.113.{i}" for i in range(1, 5)], t0=0)
    assert bans(e, ["203.0.113.5"], t0=10_000) == []          # the first four expired
    assert e.tracked() == 1


def test_forgeable_evidence_does_not_count_by_default():
    e = esc()
    assert bans(e, [f"203.0.113.{i}" for i in range(1, 9)], proto="UDP") == []
    assert e.tracked() == 0
    e = esc(spoofable="count")
    [c] = bans(e, [f"203.0.113.{i}" for i in range(1, 6)], proto="47")
    assert c.forged


@pytest.mark.parametrize("direction", ["OUT", "out"])      # netfilter's F-DIR, ipfw's
@pytest.mark.parametrize("proto", ["UDP", "ICMP", "47", "TCP"])
def test_outbound_evidence_is_never_forged(direction, proto):
    """An outbound line's remote is the destination this host chose: whatever the
    protocol, it counts (spoofable=ignore) and is not marked forged."""
    e = esc()
    assert bans(e, [f"203.0.113.{i}" for i in range(1, 5)], proto=proto, direction=direction) == []
    [c] = bans(e, ["203.0.113.5"], t0=1010, proto=proto, direction=direction)
    assert not c.forged
    for inbound in ("IN", "in", None):
        assert HostBan(ip("203.0.113.1"), 0, proto, inbound).forgeable == (proto != "TCP")


def test_mixed_evidence_marks_the_candidate_forged():
    e = esc(spoofable="count")
    bans(e, [f"203.0.113.{i}" for i in range(1, 5)], proto="TCP")
    [c] = bans(e, ["203.0.113.5"], proto="ICMP", t0=1010)
    assert c.forged


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
    assert s.ban_time(3, forged=True) == 3600
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
       protos=st.lists(st.sampled_from(["TCP", "UDP", "ICMP", "47"]), min_size=1, max_size=4))
def test_no_decision_ever_covers_a_protected_address(addrs, protect, spoof, protos):
    safety = Safety(protected=parse_networks(protect, "protect"), bogons=parse_networks("192.0.2.0/24", "b"))
    e = Escalator(safety=safety, spoofable=spoof, window=600)
    schedule = Schedule.parse("1h 6h 1d 1w", rndtime="1h")
    t = 0.0
    for n, a in enumerate(addrs):
        t += 7
        pending = e.observe(HostBan(ip(a), t, protos[n % len(protos)]))
        while pending:
            c = pending.pop()
            assert all(not c.net.overlaps(p) for p in safety.protected if p.version == c.net.version)
            assert not c.net.overlaps(net("192.0.2.0/24")) or c.net.version == 6
            assert c.net.prefixlen >= safety.maxprefix[c.net.version]
            length = schedule.ban_time(prior=n, forged=c.forged, rnd=(n % 10) / 10)
            assert 0 < length <= schedule.maxtime                  # every escalation ends
            pending += e.mark_banned(c.net, until=t + length, now=t, forged=c.forged)
    # memory follows the window: nothing older than it is held
    e.observe(HostBan(ip("203.0.113.1"), t + 10_000, "TCP"))
    assert e.tracked() <= 2


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 12), fam=st.sampled_from([4, 6]))
def test_threshold_is_exact(n, fam):
    e = esc()
    addrs = [f"203.0.113.{i}" if fam == 4 else f"2001:db8::{i:x}" for i in range(1, n + 1)]
    found = []
    for i, a in enumerate(addrs):
        for c in e.observe(HostBan(ip(a), 1000.0 + i, "TCP")):
            found.append((i + 1, c.net))
            e.mark_banned(c.net, until=10**9, now=1000.0 + i)    # as the adapter does
    assert found == ([(5, net("203.0.113.0/24" if fam == 4 else "2001:db8::/64"))] if n >= 5 else [])


@pytest.mark.parametrize("spoofable,widened", [("ignore", False), ("count", True)])
def test_prefix_bans_a_filter_matched_climb_a_rung_only_when_forgeable_evidence_counts(spoofable, widened):
    """synrecv's /24 lines are bans of prefixes on forgeable evidence: three of them in a
    /16 make the /16 only with spoofable=count, and then as forged (shortest step)."""
    e = Escalator(safety=NO_BOGONS, spoofable=spoofable)
    found = []
    for i, third in enumerate((1, 2, 3)):
        found += e.mark_banned(ipaddress.ip_network(f"198.18.{third}.0/24"), until=10_000, now=100 + i, forged=True)
    assert [str(c.net) for c in found] == (["198.18.0.0/16"] if widened else [])
    assert all(c.forged for c in found)
    assert set(map(str, e.active(150))) >= {"198.18.1.0/24", "198.18.2.0/24", "198.18.3.0/24"}
