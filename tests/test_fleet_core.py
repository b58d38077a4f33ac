"""The fleet's pure core: event schema, the receiver's decision table, the ledger,
rate limit and quarantine, fleet-wide escalation (f2b_ext/core/fleet.py)."""
from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from f2b_ext.core import fleet
from f2b_ext.core.escalation import Escalator, Ladder, Safety
from f2b_ext.core.fleet import (Event, EventError, FleetDecision, FleetEscalator, Policy, RateLimit,
                           Receiver, make_event, parse_event, subject_for)

NOW = 1_800_000_000.0
A, B, C = "srv-a", "srv-b", "srv-c"


def raw(**over) -> dict:
    base = {"v": 1, "kind": "ban", "target": "203.0.113.7", "evidence": "proven", "proto": "TCP",
            "dir": "in", "jail": "f2b-ext-inbound", "origin": A, "at": NOW, "end": NOW + 3600, "id": "srv-a:1:1"}
    base.update(over)
    return base


def ev(**over) -> Event:
    obj = raw(**over)
    return parse_event(json.dumps(obj).encode(), subject_for(obj["origin"]), NOW)


def receiver(**kw) -> Receiver:
    kw.setdefault("bogons", "none")
    protected = kw.pop("protected", ["192.0.2.1"])
    return Receiver(Policy.parse(C, protected, **kw))


# -- the schema --

def test_round_trip():
    e = ev()
    assert parse_event(e.to_json(), subject_for(A), NOW) == e
    assert e.address == "203.0.113.7" and e.is_host


def test_make_event_derives_evidence():
    """evidence.classify's kinds: an inbound LOG line is forgeable whatever its protocol,
    an outbound one is outbound, an application's log (no captures) proven."""
    assert make_event("ban", "203.0.113.7", A, "j", NOW, NOW + 60, proto="TCP", direction="IN").evidence == "forgeable"
    assert make_event("ban", "203.0.113.7", A, "j", NOW, NOW + 60, proto="UDP").evidence == "forgeable"
    assert make_event("ban", "203.0.113.7", A, "j", NOW, NOW + 60, proto="UDP", direction="OUT").evidence == "outbound"
    assert make_event("ban", "203.0.113.7", A, "j", NOW, NOW + 60).evidence == "proven"


HOSTILE = [
    (b"\xff\xfe", "not JSON"),
    (b"[1,2]", "not a JSON object"),
    (b"x" * 2000, "bytes"),
    (json.dumps(raw(v=2)).encode(), "schema version"),
    (json.dumps(raw(v=True)).encode(), "schema version"),
    (json.dumps({**raw(), "extra": 1}).encode(), "unknown 'extra'"),
    (json.dumps({k: v for k, v in raw().items() if k != "end"}).encode(), "missing end"),
    (json.dumps(raw(kind="nuke")).encode(), "kind"),
    (json.dumps(raw(evidence="trust-me")).encode(), "evidence"),
    (json.dumps(raw(dir="sideways")).encode(), "dir"),
    (json.dumps(raw(proto="TCP; rm -rf")).encode(), "proto"),
    (json.dumps(raw(jail="../../etc")).encode(), "jail"),
    (json.dumps(raw(target="203.0.113.0/24 0.0.0.0/0")).encode(), "target"),
    (json.dumps(raw(target="203.0.113.7/24")).encode(), "host bits"),
    (json.dumps(raw(target="example.org")).encode(), "target"),
    (json.dumps(raw(target="::ffff:203.0.113.7")).encode(), "IPv4-mapped"),
    (json.dumps(raw(at=NOW + 3600, end=NOW + 7200)).encode(), "future"),
    (json.dumps(raw(end=NOW + 400 * 86400)).encode(), "within a year"),
    (json.dumps(raw(end=NOW - 10)).encode(), "within a year"),
    (json.dumps(raw(end="soon")).encode(), "end: str"),
    (json.dumps(raw(at=True)).encode(), "at: bool"),
    (b'{"v":1,"kind":"ban","target":"203.0.113.7","evidence":"proven","proto":"TCP","dir":"in",'
     b'"jail":"j","origin":"srv-a","at":NaN,"end":1,"id":"x"}', "not JSON"),
]


@pytest.mark.parametrize("data,reason", HOSTILE)
def test_hostile_events_are_refused_with_a_reason(data, reason):
    with pytest.raises(EventError, match=reason):
        parse_event(data, subject_for(A), NOW)


def test_origin_must_own_the_subject():
    with pytest.raises(EventError, match="published under 'srv-c'"):
        parse_event(json.dumps(raw()).encode(), subject_for(C), NOW)
    with pytest.raises(EventError, match="not a fleet ban subject"):
        parse_event(json.dumps(raw()).encode(), "f2bx.bans.srv-a.x", NOW)


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 2 ** 40), st.floats(allow_nan=False),
                   st.text(max_size=60), st.lists(st.integers(), max_size=2))
SLOW_OK = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(fleet.FIELDS)), VALUES)
def test_any_one_field_changed_parses_or_fails_with_event_error(key, value):
    """One field of a good event replaced by anything: an EventError, or an event whose
    fields are all within the schema."""
    try:
        e = parse_event(json.dumps(raw(**{key: value})).encode(), subject_for(A), NOW)
    except EventError:
        return
    assert e.origin == A and e.kind in fleet.KINDS and e.evidence in fleet.EVIDENCE
    assert e.direction in (None, *fleet.DIRECTIONS) and e.at <= e.end <= e.at + fleet.MAX_BAN


@SLOW_OK
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data):
    try:
        parse_event(data, subject_for(A), NOW)
    except EventError:
        pass


# -- the decision table --

def test_a_single_server_host_ban_is_capped():
    r = receiver(single_cap=600)
    d = r.decide(ev(end=NOW + 86400), NOW)
    assert d.verdict == "apply" and d.until == NOW + 600 and "1 server" in d.reason


def test_a_second_reporter_lifts_the_cap():
    r = receiver(single_cap=600)
    r.decide(ev(end=NOW + 86400), NOW)
    d = r.decide(ev(origin=B, id="b1", end=NOW + 86400), NOW + 1)
    assert d.verdict == "apply" and d.until == NOW + 86400


def test_forgeable_evidence_gets_the_forged_cap_even_from_many():
    r = receiver(forged_cap=300)
    for origin in (A, B):
        d = r.decide(ev(origin=origin, evidence="forgeable", end=NOW + 86400), NOW)
    assert d.verdict == "duplicate"
    assert r.ledger.applied[ipaddress.ip_network("203.0.113.7/32")] == NOW + 300


@pytest.mark.parametrize("over,verdict,reason", [
    (dict(origin=C), "refuse", "our own event"),
    (dict(end=NOW - 1, at=NOW - 100), "expired", "ended"),
    (dict(target="192.0.2.1"), "refuse", "protected here"),
    (dict(target="192.0.2.0/24"), "refuse", "prefix"),
    (dict(target="0.0.0.0/0"), "refuse", "wider than /24"),
    (dict(target="2001:db8::/32"), "refuse", "wider than /64"),
    (dict(target="198.51.100.53"), "refuse", "protected by fleet server srv-b"),
    (dict(end=NOW + 2), "expired", "less than"),
])
def test_refusals(over, verdict, reason):
    r = receiver()
    r.set_protected(B, ["198.51.100.53", "198.51.100.1/32"])
    d = r.decide(ev(**over), NOW)
    assert d.verdict == verdict and reason in d.reason


def test_bogons_are_refused_by_default():
    r = Receiver(Policy.parse(C, []))
    assert "bogon" in r.decide(ev(), NOW).reason


def test_a_server_cannot_shield_the_internet():
    r = receiver()
    assert r.set_protected(B, ["0.0.0.0/0", "10.0.0.0/8", "nonsense", "203.0.113.9"]) != []
    assert r.fleet_protected[B] == (ipaddress.ip_network("203.0.113.9/32"),)


def test_repeats_are_duplicates_and_unbans_lift_only_the_senders_report():
    r = receiver(min_servers=1)
    assert r.decide(ev(), NOW).verdict == "apply"
    assert r.decide(ev(), NOW + 1).verdict == "duplicate"            # redelivered
    assert r.decide(ev(origin=B, id="b1", end=NOW + 7200), NOW + 2).verdict == "apply"   # extends
    d = r.decide(ev(kind="unban", id="u1"), NOW + 3)                 # A lifts its own
    assert d.verdict == "duplicate" and "still reported by srv-b" in d.reason
    assert r.decide(ev(kind="unban", origin=C, id="u2"), NOW + 3).verdict == "refuse"     # our own
    assert r.decide(ev(kind="unban", origin=B, id="u3"), NOW + 4).verdict == "unban"
    assert r.decide(ev(kind="unban", origin=B, id="u3"), NOW + 5).verdict == "duplicate"


def test_an_unban_from_another_server_lifts_nothing():
    r = receiver()
    r.decide(ev(), NOW)
    assert r.decide(ev(kind="unban", origin=B, id="x"), NOW + 1).verdict == "duplicate"
    assert ipaddress.ip_network("203.0.113.7/32") in r.ledger.applied


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([A, B, "srv-d"]), st.sampled_from(["ban", "unban"]),
                          st.integers(0, 3), st.integers(-100, 100_000), st.booleans()), max_size=40))
def test_no_decision_ever_covers_protected_or_outlives_its_caps(steps):
    """Whatever the fleet sends, in any order: nothing protected is applied, no applied
    ban is longer than max_ban, a single reporter's proven host ban never longer than
    single_cap, forgeable evidence never longer than forged_cap."""
    r = receiver(single_cap=600, forged_cap=120, max_ban=7200)
    r.set_protected(B, ["203.0.113.3"])
    t = NOW
    for i, (origin, kind, host, length, forged) in enumerate(steps):
        t += 1
        e = ev(origin=origin, kind=kind, target=f"203.0.113.{host}", at=t, end=t + max(length, 0), id=f"e{i}",
               evidence="forgeable" if forged else "proven")
        d = r.decide(e, t)
        if d.verdict == "apply":
            assert e.target != ipaddress.ip_network("203.0.113.3/32")
            assert d.until - t <= 7200
            origins = set(r.ledger.standing(e.target, t))
            if forged:
                assert min(e.end, t + 120) <= d.until
            if len(origins) == 1:
                assert d.until - t <= 600


# -- rate limit and quarantine --

def test_a_flooding_sender_is_quarantined_the_others_not():
    rl = RateLimit(rate=10, burst=20, quarantine=60)
    assert all(rl.allow(A, NOW) for _ in range(20))
    assert not rl.allow(A, NOW) and rl.newly_quarantined == [A]
    assert rl.allow(B, NOW)
    assert not rl.allow(A, NOW + 59)                 # still quarantined, even when slow
    assert rl.allow(A, NOW + 61)
    assert rl.quarantined(NOW + 30) == {A: NOW + 60}


@SLOW_OK
@given(st.lists(st.floats(0, 10), min_size=1, max_size=200))
def test_a_sender_within_its_rate_is_never_quarantined(gaps):
    rl = RateLimit(rate=10, burst=5, quarantine=60)
    t = NOW
    for g in gaps:
        t += max(g, 0.1)                             # at most 10/s
        assert rl.allow(A, t)


def test_receiver_refuses_a_quarantined_sender():
    r = Receiver(Policy.parse(C, [], bogons="none"), RateLimit(rate=1, burst=3, quarantine=600))
    verdicts = [r.decide(ev(target=f"203.0.113.{i}", id=f"i{i}"), NOW).verdict for i in range(1, 6)]
    assert verdicts[:3] == ["apply"] * 3 and verdicts[3:] == ["refuse"] * 2
    assert "quarantined" in r.decide(ev(target="203.0.113.99"), NOW + 10).reason
    assert r.decide(ev(origin=B, target="203.0.113.99", id="b"), NOW + 10).verdict == "apply"


# -- fleet escalation --

def fleet_escalator(min_servers=2, hosts=6, protect=()):
    safety = Safety(protected=tuple(ipaddress.ip_network(p) for p in protect), bogons=())
    return FleetEscalator(Escalator(Ladder.parse(f"24:{hosts} 16:3", "64:5 48:3"), 3600, safety), min_servers)


def host_events(origin, hosts, t=NOW):
    return [ev(origin=origin, target=f"203.0.113.{h}", at=t, id=f"{origin}{h}") for h in hosts]


def test_two_hosts_on_each_of_three_servers_escalate_the_24():
    fe = fleet_escalator()
    out = []
    for origin, hosts in ((A, (1, 2)), (B, (3, 4)), (C, (5, 6))):
        for e in host_events(origin, hosts):
            out += fe.observe(e)
    assert [c.net for c in out] == [ipaddress.ip_network("203.0.113.0/24")]
    assert out[0].reporters == (A, B, C)
    assert fe.supports(out[0].net, NOW) is None


def test_one_server_alone_with_six_hosts_does_not():
    fe = fleet_escalator()
    assert [c for e in host_events(A, range(1, 7)) for c in fe.observe(e)] == []
    assert "1 server(s)" in fe.supports(ipaddress.ip_network("203.0.113.0/24"), NOW)


def test_the_same_host_from_many_servers_counts_once():
    fe = fleet_escalator()
    out = [c for o in (A, B, C) for e in host_events(o, (1, 2)) for c in fe.observe(e)]
    assert out == []


def test_a_protected_address_narrows_or_stops_the_fleet_escalation():
    fe = fleet_escalator(protect=["203.0.113.200"])
    out = [c for o, hs in ((A, (1, 2, 3)), (B, (4, 5, 6))) for e in host_events(o, hs) for c in fe.observe(e)]
    assert out and all(not c.net.overlaps(ipaddress.ip_network("203.0.113.200/32")) for c in out)


def test_a_decision_written_by_one_server_is_not_supported_by_others():
    fe = fleet_escalator()
    for e in host_events(C, (1, 2, 3, 4, 5, 6)):
        fe.observe(e)
    assert fe.supports(ipaddress.ip_network("203.0.113.0/24"), NOW) is not None
    assert fe.supports(ipaddress.ip_network("0.0.0.0/0"), NOW) is not None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([A, B, C]), st.integers(0, 40)), max_size=60), st.integers(1, 3))
def test_fleet_candidates_always_have_min_servers_reporters(reports, min_servers):
    fe = fleet_escalator(min_servers=min_servers, hosts=3)
    for i, (origin, host) in enumerate(reports):
        e = ev(origin=origin, target=f"203.0.113.{host}", at=NOW + i, id=f"x{i}")
        for c in fe.observe(e):
            assert len(c.reporters) >= min_servers
            assert set(c.reporters) <= {o for o, h in reports[:i + 1]
                                        if ipaddress.ip_address(f"203.0.113.{h}") in c.net}


def test_decision_round_trip_and_hostile_decisions():
    d = FleetDecision(ipaddress.ip_network("203.0.113.0/24"), NOW + 3600, A, (A, B), NOW)
    assert FleetDecision.parse(d.to_json()) == d
    for bad in (b"{}", b"nonsense", json.dumps({**json.loads(d.to_json()), "net": "203.0.113.1/24"}).encode(),
                json.dumps({**json.loads(d.to_json()), "until": NOW + 10 ** 9}).encode(),
                json.dumps({**json.loads(d.to_json()), "by": "a b"}).encode()):
        with pytest.raises(EventError):
            FleetDecision.parse(bad)
    assert fleet.decision_key(ipaddress.ip_network("2001:db8::/64")) == "2001-db8--_64"


def test_reporters_of_a_wider_and_a_narrower_prefix():
    fe = fleet_escalator()
    fe.observe(ev(origin=A, target="203.0.113.1", id="1"))
    fe.observe(ev(origin=B, target="203.0.113.200", id="2"))
    fe.observe(ev(origin=C, target="203.0.112.5", id="3"))
    assert fe.reporters(ipaddress.ip_network("203.0.113.0/24"), NOW) == (A, B)
    assert fe.reporters(ipaddress.ip_network("203.0.113.0/25"), NOW) == (A,)
    assert fe.reporters(ipaddress.ip_network("203.0.0.0/16"), NOW) == (A, B, C)
    assert fe.reporters(ipaddress.ip_network("203.0.113.0/24"), NOW + 3601) == ()


# -- growing schedules for fleet escalations (escalation.Schedule, as subnet-escalate's) --

def candidate(evidence="proven"):
    from f2b_ext.core.escalation import Candidate
    from f2b_ext.core.evidence import parse as parse_evidence
    net = ipaddress.ip_network("203.0.113.0/24")
    return fleet.FleetCandidate(net, (A, B), Candidate(net, 1, 6, parse_evidence(evidence), "6 hosts"))


SCHEDULE = __import__("f2b_ext.core.escalation", fromlist=["Schedule"]).Schedule.parse("1h 6h 1d", forget="30d",
                                                                                  forged="30m")


def test_a_prefix_escalated_again_after_its_ban_ended_gets_the_next_step():
    first = fleet.next_decision(None, candidate(), A, NOW, SCHEDULE)
    assert (first.count, first.until - NOW, first.decided_by) == (1, 3600, A)
    assert fleet.next_decision(first, candidate(), B, NOW + 100, SCHEDULE) is None     # still holds
    second = fleet.next_decision(first, candidate(), B, NOW + 7200, SCHEDULE)
    assert (second.count, second.until - second.at) == (2, 6 * 3600)
    third = fleet.next_decision(second, candidate(), C, second.until + 1, SCHEDULE)
    fourth = fleet.next_decision(third, candidate(), C, third.until + 1, SCHEDULE)
    assert (third.until - third.at, fourth.until - fourth.at, fourth.count) == (86400, 86400, 4)  # the last repeats


def test_the_schedule_starts_anew_after_forget_and_forgeable_evidence_stays_short():
    old = fleet.FleetDecision(ipaddress.ip_network("203.0.113.0/24"), NOW + 3600, A, (A, B), NOW, 3)
    fresh = fleet.next_decision(old, candidate(), B, NOW + 31 * 86400, SCHEDULE)
    assert (fresh.count, fresh.until - fresh.at) == (1, 3600)
    forged = fleet.next_decision(old, candidate("forgeable"), B, NOW + 7200, SCHEDULE)
    assert (forged.count, forged.until - forged.at, forged.evidence) == (4, 1800, "forgeable")


def test_a_receiver_never_applies_longer_than_its_own_schedule_says():
    d = fleet.FleetDecision(ipaddress.ip_network("203.0.113.0/24"), NOW + 300 * 86400, C, (A, C), NOW, 2)
    assert fleet.decision_until(d, SCHEDULE) == NOW + 6 * 3600
    assert fleet.decision_until(fleet.FleetDecision(d.net, NOW + 60, C, (A, C), NOW, 2), SCHEDULE) == NOW + 60
    forged = fleet.FleetDecision(d.net, NOW + 86400, C, (A, C), NOW, 3, "forgeable")
    assert fleet.decision_until(forged, SCHEDULE) == NOW + 1800


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 40 * 86400), max_size=12))
def test_escalation_numbers_grow_by_one_and_lengths_follow_the_steps(gaps):
    previous, t = None, NOW
    for gap in gaps:
        t += gap
        d = fleet.next_decision(previous, candidate(), A, t, SCHEDULE)
        if previous is not None and previous.until > t:
            assert d is None
            continue
        within = previous is not None and t - previous.at <= SCHEDULE.forget
        assert d.count == (previous.count + 1 if within else 1)
        assert d.until - d.at == SCHEDULE.steps[min(d.count - 1, len(SCHEDULE.steps) - 1)]
        assert fleet.decision_until(d, SCHEDULE) == d.until
        previous = d


def test_decisions_round_trip_with_count_and_read_the_older_form():
    d = FleetDecision(ipaddress.ip_network("203.0.113.0/24"), NOW + 3600, A, (A, B), NOW, 3, "forgeable")
    assert FleetDecision.parse(d.to_json()) == d
    older = {k: v for k, v in json.loads(d.to_json()).items() if k not in ("count", "evidence")}
    assert FleetDecision.parse(json.dumps(older).encode()).count == 1
    for bad in (dict(count=0), dict(count=True), dict(count="2"), dict(evidence="trust-me"), dict(extra=1)):
        with pytest.raises(EventError):
            FleetDecision.parse(json.dumps({**json.loads(d.to_json()), **bad}).encode())


def test_fleet_create_checks_every_setting_it_gives_an_existing_stream():
    """What `fleet create` makes (bus_layout) against what nats-server reports: equal
    settings agree (float seconds, lists), each different one is named."""
    layout = fleet.bus_layout(3, 7 * 86400, 30 * 86400)
    assert layout["KV_f2bx-decisions"]["max_age"] == 30 * 86400 and layout["KV_f2bx-protected"]["max_age"] == 0
    stream = {"subjects": ["f2bx.bans.>"], "max_age": 604800.0, "replicas": 3, "duplicate_window": 120.0,
              "history": -1}
    assert fleet.layout_conflicts("F2BX_BANS", layout["F2BX_BANS"], stream) == []
    assert fleet.layout_conflicts("KV_f2bx-protected", layout["KV_f2bx-protected"],
                                  {"history": 1, "replicas": 3, "max_age": 0.0}) == []
    assert fleet.layout_conflicts("KV_f2bx-decisions", layout["KV_f2bx-decisions"],
                                  {"history": 5, "replicas": 1, "max_age": 604800.0}) == [
        "bucket f2bx-decisions has history 5, this configuration asks 1",
        "bucket f2bx-decisions has replicas 1, this configuration asks 3",
        "bucket f2bx-decisions has ttl 7d00h, this configuration asks 30d00h"]
    assert fleet.layout_conflicts("F2BX_BANS", layout["F2BX_BANS"], {**stream, "subjects": ["x.>"]}) == [
        "stream F2BX_BANS has subjects x.>, this configuration asks f2bx.bans.>"]
