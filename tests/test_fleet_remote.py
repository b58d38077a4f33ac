"""Remote host bans written by the fleet agent itself (issue 17's scale part): the
ledger's bound and provenance (f2b_ext/core/fleet.py), its SQLite store (fleet_ledger.py),
the nft text that retimes and removes without failing (nftset.py), the agent's batch
path with a recording kernel (fleet_agent.py), and the real kernel sets in a namespace
(fleet_sets.py; marked kernel)."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import is_root
from f2b_ext.core import nftset, setsync
from f2b_ext.core.fleet import Ledger, Policy, Receiver, make_event, parse_event, subject_for
from f2b_ext.system.fleet_agent import Agent, AgentConfig
from f2b_ext.system.fleet_ledger import LedgerStore

NOW = 1_800_000_000.0
net = ipaddress.ip_network


def ev(origin="a", target="203.0.113.7", kind="ban", end_in=3600, at=NOW, seq="1", proto="TCP"):
    return make_event(kind, target, origin, "sshd", at, at + end_in, proto=proto, seq=seq)


def receiver(limit=1_000_000, **kw) -> Receiver:
    return Receiver(Policy.parse("c", [], "none", min_servers=2, **kw), limit=limit)


# -- the ledger: bound, provenance, what it lists --

def test_the_ledger_remembers_where_each_report_came_from():
    r = receiver()
    r.decide(ev("a"), NOW)
    r.decide(ev("b", proto=None, seq="2"), NOW + 1)
    about = r.ledger.about[net("203.0.113.7/32")]
    assert about == {"a": ("sshd", "forgeable", NOW), "b": ("sshd", "proven", NOW)}
    # a's forgeable report is capped at 10 min; b's proven one, a second reporter, is not
    assert r.ledger.reports[net("203.0.113.7/32")] == {"a": NOW + 600, "b": NOW + 3600}
    assert r.ledger.listed(NOW + 10) == {net("203.0.113.7/32"): 3590}


def test_a_full_ledger_refuses_new_targets_but_keeps_extending_held_ones():
    r = receiver(limit=2)
    assert [r.decide(ev(target=f"203.0.113.{i}", seq=str(i)), NOW).verdict for i in (1, 2, 3)] == \
        ["apply", "apply", "refuse"]
    assert "limit" in r.decide(ev(target="203.0.113.3", seq="x"), NOW).reason
    assert r.decide(ev("b", target="203.0.113.1", seq="y", proto=None), NOW).verdict == "apply"   # held: extended
    # once the held ones ended, there is room again (expired entries are dropped first)
    assert r.decide(ev(target="203.0.113.9", seq="z", at=NOW + 4000), NOW + 4000).verdict == "apply"
    assert len(r.ledger.applied) == 1


def test_an_unban_forgets_the_target_and_marks_it_touched():
    r = receiver()
    r.decide(ev(), NOW)
    r.ledger.touched.clear()
    assert r.decide(ev(kind="unban", seq="u"), NOW + 1).verdict == "unban"
    assert r.ledger.applied == {} and r.ledger.about == {} and r.ledger.touched == {net("203.0.113.7/32")}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from("abd"), st.sampled_from(["ban", "unban"]), st.integers(1, 6),
                          st.integers(0, 5000), st.integers(0, 50)), max_size=40), st.integers(1, 4))
def test_the_ledger_never_exceeds_its_limit_and_lists_only_what_it_applied(steps, limit):
    r = receiver(limit=limit, single_cap=600)
    t = NOW
    for i, (origin, kind, host, length, gap) in enumerate(steps):
        t += gap
        d = r.decide(ev(origin, f"203.0.113.{host}", kind, length, at=t, seq=str(i)), t)
        assert len(r.ledger.applied) <= limit
        if d.verdict == "apply":
            assert r.ledger.listed(t)[net(f"203.0.113.{host}/32")] == pytest.approx(d.until - t)
        assert set(r.ledger.listed(t)) <= set(r.ledger.applied)
        assert all(left > 0 for left in r.ledger.listed(t).values())


# -- the ledger on disk --

def test_the_store_round_trips_prunes_and_lists_provenance(tmp_path):
    r = receiver()
    r.decide(ev("a"), NOW)
    r.decide(ev("b", seq="2"), NOW)
    r.decide(ev("a", target="203.0.113.8", end_in=60, seq="3"), NOW)
    store = LedgerStore(str(tmp_path / "ledger.sqlite3"))
    store.save(store.snapshot(r.ledger))
    assert r.ledger.touched == set()
    again = Ledger()
    assert store.load(again, NOW + 1) == 2
    assert again.applied == r.ledger.applied and again.reports == r.ledger.reports and again.about == r.ledger.about
    assert store.load(Ledger(), NOW + 100) == 1          # the 60 s ban ended: pruned
    bans = LedgerStore(str(tmp_path / "ledger.sqlite3"), readonly=True).bans(NOW + 100)
    assert [(t, [o for o, *_ in reports]) for t, _, reports in bans] == [("203.0.113.7/32", ["a", "b"])]
    assert bans[0][2][0][2:4] == ("sshd", "forgeable")


def test_an_unban_saved_deletes_the_rows(tmp_path):
    r = receiver()
    r.decide(ev(), NOW)
    store = LedgerStore(str(tmp_path / "l.sqlite3"))
    store.save(store.snapshot(r.ledger))
    r.decide(ev(kind="unban", seq="u"), NOW + 1)
    store.save(store.snapshot(r.ledger))
    assert store.load(Ledger(), NOW + 2) == 0 and store.bans(NOW + 2) == []


def test_the_ledger_lives_beside_its_own_spool():
    from f2b_ext.system.fleet_ledger import default_path
    assert default_path("/var/lib/f2b-ext/fleet-spool.sqlite3") == "/var/lib/f2b-ext/fleet-ledger.sqlite3"
    assert default_path("/x/spool-b.sqlite3") == "/x/ledger-b.sqlite3"
    assert default_path("/x/queue.db") == "/x/queue-ledger.sqlite3"


# -- the nft text: retime and remove never fail on a missing element --

def test_retime_adds_deletes_and_adds_again_in_order():
    text = nftset.retime_elements_script("fleet-agent", [(net("203.0.113.7/32"), 500), (net("2001:db8::1/128"), 90)])
    lines = text.splitlines()
    assert [line.split()[0] for line in lines] == ["add", "add", "delete", "delete", "add", "add"]
    assert "fleet_agent_h4 { 203.0.113.7 timeout 500s }" in lines[-2]
    assert "fleet_agent_h6 { 2001:db8::1 timeout 90s }" in lines[-1]
    removal = nftset.remove_elements_script("fleet-agent", [net("203.0.113.7/32")]).splitlines()
    assert removal == ["add element inet f2b_ext fleet_agent_h4 { 203.0.113.7 timeout 1s }",
                       "delete element inet f2b_ext fleet_agent_h4 { 203.0.113.7 }"]


# -- the agent's batch path, with a kernel that records (the real one: below and the fleet lab) --

class RecordingSets:
    def __init__(self):
        self.kernel: dict = {}               # network -> absolute end
        self.writes, self.fail = 0, False

    def write(self, add=(), retime=(), remove=()):
        if self.fail:
            from f2b_ext.system.fleet_sets import KernelError
            raise KernelError("Could not process rule: No such file or directory")
        now = time.time()
        for n, left in list(add) + list(retime):
            self.kernel[n] = now + left
        for n in remove:
            self.kernel.pop(n, None)
        self.writes += 1

    def intact(self):
        return not self.fail

    def setup(self):
        if self.fail:
            from f2b_ext.system.fleet_sets import KernelError
            raise KernelError("Operation not permitted")

    def held(self):
        now = time.time()
        return {n: e - now for n, e in self.kernel.items() if e > now}


def agent(tmp_path, sets):
    cfg = AgentConfig(server="b", nats=["tls://198.18.0.2:4222"], spool=str(tmp_path / "spool"),
                      status=str(tmp_path / "status"), bogons="none", protect=["198.51.100.53"])
    return Agent(cfg, inbox=SimpleNamespace(ban=None, unban=None), sets=sets)


def msgs(*events):
    return [SimpleNamespace(data=e.to_json(), subject=subject_for(e.origin)) for e in events]


def live(origin, target, seq, kind="ban", end_in=600):
    now = time.time()
    return make_event(kind, target, origin, "sshd", now, now + end_in, proto=None, seq=seq)


def test_a_batch_is_one_kernel_write_with_remaining_times(tmp_path):
    sets = RecordingSets()
    a = agent(tmp_path, sets)
    batch = msgs(*(live("a", f"203.0.113.{i}", str(i)) for i in range(1, 101)), live("c", "198.51.100.53", "x"))
    asyncio.run(a._handle(batch, []))
    assert sets.writes == 1 and len(sets.kernel) == 100          # the protected one refused before the write
    assert net("198.51.100.53/32") not in sets.kernel and a.verdicts["refuse"] == 1
    assert all(595 < left <= 600 for left in sets.held().values())   # each with its remaining time


def test_a_second_report_retimes_and_an_unban_removes(tmp_path):
    sets = RecordingSets()
    a = agent(tmp_path, sets)
    asyncio.run(a._handle(msgs(live("a", "203.0.113.7", "1", end_in=60)), []))
    asyncio.run(a._handle(msgs(live("c", "203.0.113.7", "2", end_in=3000)), []))
    assert 2990 < sets.held()[net("203.0.113.7/32")] <= 3000
    asyncio.run(a._handle(msgs(live("a", "203.0.113.7", "3", "unban"), live("c", "203.0.113.7", "4", "unban")), []))
    assert sets.kernel == {}


def test_a_batch_the_kernel_refused_is_undone_and_applied_when_redelivered(tmp_path):
    sets = RecordingSets()
    a = agent(tmp_path, sets)
    batch = msgs(live("a", "203.0.113.7", "1"))
    sets.fail = True
    undo = []
    with pytest.raises(Exception):
        asyncio.run(a._handle(batch, undo))
    a._undo(undo)
    assert a.receiver.ledger.listed(time.time()) == {}
    sets.fail = False
    asyncio.run(a._handle(batch, []))
    assert net("203.0.113.7/32") in sets.kernel


def test_idempotency_survives_an_agent_restart(tmp_path):
    """The ledger is saved before the batch is acknowledged: a new agent (after kill -9)
    takes a redelivered event for a duplicate, and an admin's unban still lifts it."""
    sets = RecordingSets()
    first = agent(tmp_path, sets)
    ban = live("a", "203.0.113.7", "1")
    asyncio.run(first._handle(msgs(ban), []))
    del first                                   # no clean stop
    second = agent(tmp_path, sets)
    writes = sets.writes
    asyncio.run(second._handle(msgs(ban), []))
    assert second.verdicts["duplicate"] == 1 and sets.writes == writes
    asyncio.run(second._handle(msgs(live("a", "203.0.113.7", "2", "unban")), []))
    assert second.verdicts["unban"] == 1 and sets.kernel == {}


def test_the_check_repairs_a_flushed_kernel_and_takes_over_at_start(tmp_path):
    sets = RecordingSets()
    a = agent(tmp_path, sets)
    asyncio.run(a._handle(msgs(*(live("a", f"203.0.113.{i}", str(i)) for i in range(1, 11))), []))
    sets.kernel.clear()                                     # nft flush set
    sets.kernel[net("198.51.100.9/32")] = time.time() + 99  # added by hand: not listed
    asyncio.run(a.check())
    assert set(sets.kernel) == {net(f"203.0.113.{i}/32") for i in range(1, 11)} and a.repairs == 11
    assert a.kernel_count == 10 and a.status()["remote_bans"] == 10
    b = agent(tmp_path, RecordingSets())                    # a new agent, an empty kernel
    asyncio.run(b.check("takeover"))
    assert set(b.sets.kernel) == set(sets.kernel)


# -- the real kernel: the agent's sets in a namespace --

@pytest.mark.kernel
@pytest.mark.skipif(not is_root(), reason="needs root and network namespaces")
def test_agent_sets_in_the_kernel(lab_nft):
    from f2b_ext.system.fleet_sets import AgentSets
    lab, in_netns = lab_nft
    h, g = net("203.0.113.7/32"), net("2001:db8::7/128")
    with in_netns(lab.server):
        sets = AgentSets()
        sets.setup()
        sets.setup()                                         # idempotent, keeps elements
        sets.write(add=[(h, 600), (g, 300)])
        held = sets.held()
        assert 590 < held[h] <= 600 and 290 < held[g] <= 300
        sets.write(retime=[(h, 3000), (net("203.0.113.8/32"), 50)])     # one of them not there yet
        assert 2990 < sets.held()[h] <= 3000 and net("203.0.113.8/32") in sets.held()
        sets.write(remove=[g, net("203.0.113.99/32")])        # one of them never there
        assert g not in sets.held()
        lab.server_sh("nft", "flush", "set", "inet", "f2b_ext", "fleet_agent_h4")
        listed = {h: 3000.0, net("203.0.113.8/32"): 40.0}
        plan = sets.sync(listed)
        assert [n for n, _ in plan.add] == list(listed) and setsync.plan(listed, sets.held()) == setsync.Plan()
        lab.server_sh("nft", "flush", "ruleset")
        assert not sets.intact()
        sets.setup()
        sets.sync(listed)
        assert sets.intact() and set(sets.held()) == set(listed)
        sets.teardown()


# -- this server's dependencies, published: peers included --

def test_peers_are_remembered_across_restarts_and_published_after_the_others(tmp_path, monkeypatch):
    from f2b_ext.core import dependencies as deps
    from f2b_ext.system import fleet_agent, host
    seen = {"peers": ["198.51.100.80"]}
    monkeypatch.setattr(host, "gather", lambda: host.Gathered(
        found=deps.dependencies("resolver", ["192.0.2.53"]) + deps.dependencies("this-host", ["198.18.0.1"]),
        names={"ntp.example": "ntp"}, peers=list(seen["peers"])))
    monkeypatch.setattr(host, "resolve", lambda name: ["192.0.2.123"])
    state = tmp_path / "fleet-peers.json"
    d = fleet_agent.LocalDependencies(str(state), protect=["203.0.113.0/28"], ignoreip=lambda: ["198.51.100.7", "office"])
    mine = d.gather(NOW)
    assert mine == ["192.0.2.123/32", "192.0.2.53/32", "198.18.0.1/32", "198.51.100.7/32", "203.0.113.0/28",
                    "198.51.100.80/32"]              # always-protected first, then peers
    seen["peers"] = []                               # the connection closed; the agent restarts
    again = fleet_agent.LocalDependencies(str(state), ignoreip=None)
    assert "198.51.100.80/32" in again.gather(NOW + 3600)
    assert "198.51.100.80/32" not in again.gather(NOW + 8 * 86400)      # forgotten after the retention


def test_a_dependency_that_cannot_be_read_is_a_problem_not_a_crash(tmp_path, monkeypatch):
    from f2b_ext.system import fleet_agent, host
    monkeypatch.setattr(host, "gather", lambda: host.Gathered(problems=["routes (ip route): boom"]))

    def down():
        raise ConnectionRefusedError("fail2ban is restarting")
    d = fleet_agent.LocalDependencies(str(tmp_path / "p.json"), ignoreip=down)
    assert d.gather(NOW) == []
    assert d.problems == ["routes (ip route): boom", "fail2ban's ignoreip: fail2ban is restarting"]


def test_published_lists_are_capped_peers_first_to_go(tmp_path, monkeypatch):
    from f2b_ext.core import dependencies as deps
    from f2b_ext.system import fleet_agent, host
    monkeypatch.setattr(fleet_agent, "PUBLISHED_MAX", 3)
    monkeypatch.setattr(host, "gather", lambda: host.Gathered(found=deps.dependencies("gateway", ["192.0.2.1"]),
                                                              peers=[f"198.51.100.{i}" for i in range(1, 9)]))
    assert fleet_agent.LocalDependencies(str(tmp_path / "p.json")).gather(NOW)[0] == "192.0.2.1/32"
    assert len(fleet_agent.LocalDependencies(str(tmp_path / "p.json")).gather(NOW)) == 3


def test_local_and_fleet_protection_are_looked_up_by_index():
    r = receiver()
    r.set_local(["198.51.100.80"])
    r.set_protected("a", [f"192.0.2.{i}" for i in range(1, 200)] + ["198.18.7.0/24"])
    r.set_protected("b", ["198.18.7.9"])
    assert "protected here" in r.decide(ev("d", "198.51.100.80"), NOW).reason
    assert "protected by fleet server a" in r.decide(ev("d", "192.0.2.150", seq="2"), NOW).reason
    assert "covers 198.18.7.0/24, protected by fleet server a" in r.decide(ev("d", "198.18.7.9", seq="3"), NOW).reason
    assert r.decide(ev("d", "198.51.100.81", seq="4"), NOW).verdict == "apply"
    r.set_local([])
    assert r.decide(ev("d", "198.51.100.80", seq="5"), NOW).verdict == "apply"


# -- `f2b-ext schedule` shows where a remote ban came from --

def test_schedule_rows_for_the_agents_remote_bans(tmp_path):
    from f2b_ext.core import schedule
    r = receiver()
    r.decide(ev("a"), NOW)
    r.decide(ev("b", proto=None, seq="2"), NOW + 1)
    store = LedgerStore(str(tmp_path / "l.sqlite3"))
    store.save(store.snapshot(r.ledger))
    rows = schedule.remote_bans(store.bans(NOW + 10))
    assert rows == [schedule.Ban("fleet-agent", "203.0.113.7", NOW, 3600, NOW + 3600, False, False,
                                 "from a (sshd, forgeable); b (sshd, proven)")]
    text = "\n".join(schedule.render(rows, NOW + 10, ["fleet-agent"]))
    assert "fleet-agent 203.0.113.7" in text and "from a (sshd, forgeable); b (sshd, proven)" in text
    assert schedule.as_json(rows, NOW + 10)["bans"][0]["origin"].startswith("from a")
