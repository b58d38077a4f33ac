"""The set actions hear the kernel's nf_tables notifications (real kernel, a lab
namespace): with the watchdog's interval at 600 s, `nft flush set`, a deleted rule, a
flushed chain and `nft flush ruleset` are each repaired long before the interval could
have done it (waited for up to 30 s, so a slow machine cannot fail it; the log proves the
event did it); the action's own writes are not heard; the listener starts and stops with
the action, survives an overrun and falls back to the interval when it cannot listen."""
from __future__ import annotations

import gc
import ipaddress
import logging
import os
import threading
import time

import pytest

from conftest import FakeJail, info, is_root
from f2b_ext.lab.netns import until

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(not is_root(), reason="needs root for a network namespace")]
N = ipaddress.ip_network
LONG = "600"             # checkinterval: the watchdog cannot be what repairs within the test
PATIENCE = 30            # seconds to wait for an event-driven repair (it takes about 0.2 s)
BANS = {"198.51.100.9": 3600, "198.51.100.10": 600, "203.0.113.0/24": 1800}


def make(backend, jail, **params):
    params = dict(dict(batch="0", checkinterval=LONG), **params)
    if backend == "nftset":
        from f2b_ext.plugins.nftset import NftSetAction
        return NftSetAction(jail, "nftset", **params)
    from f2b_ext.plugins.ipset_net import IpsetNetAction
    return IpsetNetAction(jail, "ipset-net", **params)


def banned_jail(name):
    jail = FakeJail(name)
    for ip, bantime in BANS.items():
        jail.add_ban(ip, bantime=bantime)
    return jail


def held(lab, in_netns, act) -> dict:
    with in_netns(lab.server):
        return act._held()


def enforced(lab, in_netns, act) -> bool:
    """Every ban fail2ban lists is in the kernel with its remaining time (within 3 s),
    and the jail's rules are in place."""
    from fail2ban.server.mytime import MyTime
    with in_netns(lab.server):
        kernel, intact = act._held(), act._intact()
    want = act._listed(MyTime.time())
    assert len(want) == len(BANS)
    return intact and set(kernel) == set(want) and all(abs(kernel[n] - want[n]) <= 3 for n in want)


@pytest.fixture
def nft_jail(lab_nft):
    lab, in_netns = lab_nft
    jail = banned_jail("ev")
    with in_netns(lab.server):
        act = make("nftset", jail)
        act.start()
    assert act._events is not None, "the listener runs"
    try:
        yield lab, in_netns, act
    finally:
        with in_netns(lab.server):
            act.stop()


FAULTS = {
    "flush set (hosts)": ("nft", "flush", "set", "inet", "f2b_ext", "ev_h4"),
    "flush set (/24s)": ("nft", "flush", "set", "inet", "f2b_ext", "ev_n4_24"),
    "flush chain": ("nft", "flush", "chain", "inet", "f2b_ext", "ev_input"),
    "flush ruleset": ("nft", "flush", "ruleset"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_an_nft_fault_is_repaired_by_the_event_not_the_interval(nft_jail, fault, caplog):
    lab, in_netns, act = nft_jail
    caplog.set_level(logging.WARNING)
    assert enforced(lab, in_netns, act)
    assert not lab.probe("198.51.100.9") and not lab.probe("203.0.113.50")
    began = time.monotonic()
    lab.server_sh(*FAULTS[fault])

    def repairs():
        return [r.getMessage() for r in caplog.records if "(after " in r.getMessage()]
    # a refilled set is logged after the write (a rebuild before it): wait for both
    assert until(lambda: enforced(lab, in_netns, act) and repairs(), PATIENCE), "repaired, with fail2ban's expiry"
    took = time.monotonic() - began
    assert took < float(LONG) / 10
    assert not lab.probe("198.51.100.9") and not lab.probe("203.0.113.50")
    assert all(" by nft (pid " in m for m in repairs()), repairs()
    print(f"{fault}: repaired in {took:.2f} s: {repairs()[0]}")


def test_a_deleted_rule_is_repaired(nft_jail, caplog):
    lab, in_netns, act = nft_jail
    caplog.set_level(logging.WARNING)
    listing = lab.server_sh("nft", "-a", "list", "chain", "inet", "f2b_ext", "ev_input")
    handle = next(line.rsplit("handle ", 1)[1] for line in listing.splitlines() if "@ev_n4_24" in line)
    # the listener's check waits for the action's lock, which the test holds until the
    # probe has seen the gap (else a repair 0.2 s later may close it before the probe)
    with act._io:
        lab.server_sh("nft", "delete", "rule", "inet", "f2b_ext", "ev_input", "handle", handle)
        assert lab.probe("203.0.113.50"), "the gap the listener must close"
    assert until(lambda: enforced(lab, in_netns, act), PATIENCE)
    assert not lab.probe("203.0.113.50")
    assert any("rule deleted: inet f2b_ext ev_input" in r.getMessage() for r in caplog.records)


def test_the_actions_own_bans_unbans_and_repairs_are_not_heard(nft_jail):
    """Each unban deletes an element (a DELSETELEM the kernel multicasts): the listener
    knows the transaction is the action's own and compares nothing."""
    from f2b_ext.system.nftevents import thread_ids_comparable
    if not thread_ids_comparable():
        pytest.skip("in a nested pid namespace NEWGEN's thread ids are not ours to compare: own changes are heard")
    lab, in_netns, act = nft_jail
    time.sleep(1)
    before = act._events.checks
    with in_netns(lab.server):
        for i in range(20):
            ip = f"192.0.2.{i + 1}"
            act._jail.add_ban(ip)
            act.ban(info(ip))
        for i in range(20):
            act.unban(info(f"192.0.2.{i + 1}"))
        act._repair()                          # flushes and refills its chains
    time.sleep(2)                              # the listener's debounce is 0.2 s
    assert act._events.checks == before


def test_another_jails_flush_in_the_shared_table_is_not_this_jails(nft_jail):
    lab, in_netns, act = nft_jail
    other_jail = FakeJail("other")
    other_jail.add_ban("192.0.2.50")
    with in_netns(lab.server):
        other = make("nftset", other_jail, checkinterval="0")
        other.start()
    try:
        time.sleep(1)
        before = act._events.checks
        lab.server_sh("nft", "flush", "set", "inet", "f2b_ext", "other_h4")
        time.sleep(2)
        assert act._events.checks == before
    finally:
        with in_netns(lab.server):
            other.stop()


def listeners() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("f2b-nftset"))


def test_the_listener_starts_and_stops_with_the_action_and_leaks_no_thread(lab_nft):
    lab, in_netns = lab_nft
    before, fds = listeners(), len(os.listdir("/proc/self/fd"))
    jail = banned_jail("life")
    with in_netns(lab.server):
        for _ in range(5):
            act = make("nftset", jail)
            act.start()
            assert listeners() == sorted(before + ["f2b-nftset-events-life", "f2b-nftset-life"])
            act.reload(checkinterval="0")              # checks off: both threads end
            assert until(lambda: listeners() == before, PATIENCE)
            act.reload(checkinterval=LONG)             # on again
            assert listeners() == sorted(before + ["f2b-nftset-events-life", "f2b-nftset-life"])
            act.reload()                               # a plain reload keeps one of each
            assert listeners() == sorted(before + ["f2b-nftset-events-life", "f2b-nftset-life"])
            act.stop()
            assert until(lambda: listeners() == before, PATIENCE)
    del act                                     # its libnftables contexts hold sockets of their own
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= fds, "no socket or pipe left open"


def test_an_overrun_leads_to_a_compare_not_a_crash(lab_nft, monkeypatch, caplog):
    """While a compare waits (here: for the action's lock, which the test holds), a flush
    of 400 elements overruns the socket's buffer (ENOBUFS; the buffer is the kernel's
    smallest here): the listener then compares everything, and keeps listening."""
    from f2b_ext.system import nftevents
    monkeypatch.setattr(nftevents, "RECEIVE_BUFFER", 1)
    lab, in_netns = lab_nft
    jail = FakeJail("big")
    for i in range(400):
        jail.add_ban(f"198.18.{i // 250}.{i % 250 + 1}")
    with in_netns(lab.server):
        act = make("nftset", jail)
        reasons = []
        real_check = act._event_check

        def check(reason):
            reasons.append(reason)
            real_check(reason)
        act._event_check = check
        act.start()
    try:
        caplog.set_level(logging.WARNING)
        with act._io:
            lab.server_sh("nft", "delete", "element", "inet", "f2b_ext", "big_h4", "{ 198.18.0.1 }")
            assert until(lambda: reasons, PATIENCE), "the listener's check is waiting for the lock"
            lab.server_sh("nft", "flush", "set", "inet", "f2b_ext", "big_h4")     # 400 notifications, unread
        assert until(lambda: any("lost (receive buffer overrun)" in r for r in reasons), PATIENCE), reasons
        assert until(lambda: len(held(lab, in_netns, act)) == 400, PATIENCE)
        assert act._events.thread.is_alive()
        lab.server_sh("nft", "flush", "set", "inet", "f2b_ext", "big_h4")         # and again: still listening
        assert until(lambda: len(held(lab, in_netns, act)) == 400, PATIENCE)
    finally:
        with in_netns(lab.server):
            act.stop()


def test_without_the_socket_one_line_and_the_interval_remains(lab_nft, monkeypatch, caplog):
    from f2b_ext.plugins import set_action

    def refused():
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(set_action, "open_socket", refused)       # where the action looks it up
    lab, in_netns = lab_nft
    caplog.set_level(logging.INFO)
    jail = banned_jail("fall")
    with in_netns(lab.server):
        act = make("nftset", jail, checkinterval="1")
        act.start()
    try:
        lines = [r.getMessage() for r in caplog.records if "nftables events" in r.getMessage()]
        assert lines == ["nftset: cannot listen to nftables events ([Errno 1] Operation not permitted); repairs wait"
                         " for the next check (every 1 s)"]
        assert act._events is None and act._watchdog is not None
        lab.server_sh("nft", "flush", "set", "inet", "f2b_ext", "fall_h4")
        assert until(lambda: len(held(lab, in_netns, act)) == 3, PATIENCE)
    finally:
        with in_netns(lab.server):
            act.stop()


def test_ipset_net_hears_iptables_nft_rules_but_not_ipset_flush(lab_nft, caplog):
    """iptables-nft keeps its rules in nf_tables: `iptables -F INPUT` is repaired by the
    event. ipset is not nf_tables: `ipset flush` sends nothing, so it waits for the
    interval (checked here for 3 s)."""
    lab, in_netns = lab_nft
    caplog.set_level(logging.WARNING)
    with in_netns(lab.server):
        act = make("ipset-net", banned_jail("ips"))
        act.start()
    try:
        assert act._events is not None
        assert not lab.probe("198.51.100.9")
        lab.server_sh("iptables", "-F", "INPUT")
        assert until(lambda: not lab.probe("198.51.100.9", timeout=0.2), PATIENCE)
        assert any("rule deleted: ip filter INPUT by iptables" in r.getMessage() for r in caplog.records)
        before = act._events.checks
        lab.server_sh("ipset", "flush", "f2bx-ips-4")
        time.sleep(3)
        assert act._events.checks == before and len(held(lab, in_netns, act)) == 0
    finally:
        with in_netns(lab.server):
            act.stop()


def test_inside_fail2ban_server_a_flush_is_repaired_by_the_event(capsys):
    """The real fail2ban-server in the lab's namespace, the shipped-style jail with
    nftset at checkinterval 600: `nft flush set` of the host and /24 sets, then `nft
    flush ruleset`, each enforced again within seconds (waited for up to 30 s), fail2ban's
    log naming the event; a prober (a SYN every 5 ms from a banned host and a member of
    the banned /24) says how long they were answered."""
    from f2b_ext.lab.live import LiveLab, LiveSettings, Prober, environment_problems, kernel_elements
    if environment_problems():
        pytest.skip("; ".join(environment_problems()))
    settings = LiveSettings(firewall="nft", banaction="nftset", bantime=3600, checkinterval=600)
    rows = []
    with LiveLab(settings) as live:
        for target in ("198.51.100.7", "203.0.113.0/24"):
            live.f2b.client("set", "netfilter-in", "banip", target)
        assert live.until(lambda: len(kernel_elements(live.lab, "nftset", "netfilter-in")) == 2, PATIENCE)
        with Prober(live.lab, ["198.51.100.7", "203.0.113.77"]) as prober:
            time.sleep(0.5)
            assert not prober.answered_at, "banned: no answer"
            for fault, command in (("flush set", ("nft", "flush", "set", "inet", "f2b_ext", "netfilter_in_h4")),
                                   ("flush set /24", ("nft", "flush", "set", "inet", "f2b_ext", "netfilter_in_n4_24")),
                                   ("flush ruleset", ("nft", "flush", "ruleset"))):
                start = time.monotonic()
                live.lab.server_sh(*command)
                assert live.until(lambda: len(kernel_elements(live.lab, "nftset", "netfilter-in")) == 2
                                  and "@netfilter_in_h4" in live.lab.server_sh(
                                      "nft", "list", "chain", "inet", "f2b_ext", "netfilter_in_input", check=False),
                                  PATIENCE, every=0.05), fault
                took = time.monotonic() - start
                time.sleep(0.5)
                late = [t for t, _ in prober.answered_at if t >= start]
                rows.append((fault, took, len(late), max(late) - start if late else 0.0))
                assert not any(t > start + took + 0.3 for t in late), f"{fault}: answered after the repair"
        log = live.f2b.server_log()
        assert "(after element deleted: inet f2b_ext netfilter_in_h4 by nft (pid " in log, log[-2000:]
        assert "(after element deleted: inet f2b_ext netfilter_in_n4_24 (x3) by nft (pid " in log, log[-2000:]
        assert "missing (after rule deleted: inet f2b_ext netfilter_in_input" in log, log[-2000:]
        assert "Traceback" not in log and "ERROR" not in log
    with capsys.disabled():
        for fault, took, answers, window in rows:
            print(f"\nfail2ban-server, {fault}: enforced again after {took:.2f} s; {answers} SYNs answered, "
                  f"the last {window:.3f} s after the flush")
