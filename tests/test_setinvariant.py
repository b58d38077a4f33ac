"""The set actions' invariant on the real kernel (nftset and ipset-net, in a namespace):
what fail2ban lists is what the jail's sets hold, with the same expiry, whatever
happens to either side; judged by the kernel's sets and on the wire (Lab.probe)."""
from __future__ import annotations

import ipaddress
import logging

import pytest

from conftest import FakeJail, info, is_root
from f2b_ext.core import ipset, nftset
from f2b_ext.plugins.set_action import BackendError
from f2b_ext.lab.netns import until

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(not is_root(), reason="needs root for a network namespace")]
BACKENDS = ("nftset", "ipset-net")
N = ipaddress.ip_network


def make(backend, jail, **params):
    params = dict(dict(batch="0", checkinterval="0"), **params)
    if backend == "nftset":
        from f2b_ext.plugins.nftset import NftSetAction
        return NftSetAction(jail, "nftset", **params)
    from f2b_ext.plugins.ipset_net import IpsetNetAction
    return IpsetNetAction(jail, "ipset-net", **params)


def flush_set(lab, backend, jail, net):
    if backend == "nftset":
        lab.server_sh("nft", "flush", "set", "inet", "f2b_ext", nftset.set_name(jail, net))
    else:
        lab.server_sh("ipset", "flush", ipset.set_name(jail, N(net).version))


def held(lab, in_netns, act) -> dict:
    with in_netns(lab.server):
        return act._held()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_flushed_set_is_refilled_and_a_stray_element_removed_by_the_watchdog(lab_nft, backend, caplog, monkeypatch):
    """`nft flush set` / `ipset flush` (and an element added by hand): the watchdog
    compares elements, not only that the set exists, and logs what it fixed. (The
    nftables event listener, which would repair the flush sooner, is kept out: this is
    the watchdog's test; tests/test_nftevents_live.py is the listener's.)"""
    from f2b_ext.plugins import set_action
    monkeypatch.setattr(set_action, "open_socket", lambda: (_ for _ in ()).throw(OSError("kept out by the test")))
    lab, in_netns = lab_nft
    jail = FakeJail("inv")
    for ip in ("198.51.100.9", "198.51.100.10", "203.0.113.0/24"):
        jail.add_ban(ip)
    jail.add_ban("999.0.2.7")                    # banip of a text that is no address
    with in_netns(lab.server):
        # 3 s between rounds, not less: at load 20 a 0.2 s watchdog refilled the set before
        # the probe below could see the gap it must close
        act = make(backend, jail, checkinterval="3")
        act.start()
    try:
        assert set(held(lab, in_netns, act)) == {N("198.51.100.9/32"), N("198.51.100.10/32"), N("203.0.113.0/24")}
        assert not lab.probe("203.0.113.50")
        caplog.set_level(logging.WARNING)
        # the watchdog's round waits for the action's lock, which the test holds until the
        # probe has seen the gap (a round due meanwhile would close it before the probe)
        with act._io:
            flush_set(lab, backend, "inv", "198.51.100.9")
            if backend == "nftset":
                flush_set(lab, backend, "inv", "203.0.113.0/24")
                lab.server_sh("nft", "add", "element", "inet", "f2b_ext", "inv_h4", "{ 192.0.2.99 timeout 600s }")
            else:
                lab.server_sh("ipset", "add", "f2bx-inv-4", "192.0.2.99", "timeout", "600")
            assert lab.probe("203.0.113.50") or backend == "ipset-net"      # the gap the watchdog must close
        assert until(lambda: set(held(lab, in_netns, act)) == {N("198.51.100.9/32"), N("198.51.100.10/32"),
                                                               N("203.0.113.0/24")}, 15)
        with act._io:
            pass                    # the round that refilled the sets has logged what it fixed
        assert not lab.probe("203.0.113.50") and not lab.probe("198.51.100.9")
        fixed = [r.getMessage() for r in caplog.records if "differed from fail2ban's list" in r.getMessage()]
        assert any("added" in m and "198.51.100.9/32" in m for m in fixed), fixed
        assert any("removed 1 (192.0.2.99/32)" in m for m in fixed), fixed
        assert [r for r in caplog.records if "999.0.2.7" in r.getMessage()], "the bad text is named once"
    finally:
        with in_netns(lab.server):
            act.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wrong_expiry_is_set_to_fail2bans(lab_nft, backend):
    """fail2ban says 1 h, the kernel 4 h (kill -9, a re-read log): the kernel follows."""
    lab, in_netns = lab_nft
    jail = FakeJail("exp")
    jail.add_ban("198.51.100.20", bantime=3600)
    with in_netns(lab.server):
        act = make(backend, jail)
        act.start()
        act._write([(N("198.51.100.20/32"), 14400)])
        assert act._held()[N("198.51.100.20/32")] > 14000
        plan = act.sync()
        assert [str(n) for n, _ in plan.retime] == ["198.51.100.20/32"]
        assert abs(act._held()[N("198.51.100.20/32")] - 3600) <= 3
        assert not act.sync()                             # and then nothing differs
        act.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_after_kill_9_the_kernels_bans_hold_from_the_first_moment(lab_nft, backend, tmp_path):
    """A new fail2ban process lists nothing at its action's start (the database restores
    bans later): the prefix sets keep their rules in setup's own transaction, and what the
    database holds is kept; what it does not hold goes."""
    lab, in_netns = lab_nft
    old = FakeJail("k9").use_database(tmp_path / "f2b.sqlite3")
    for ip in ("198.51.100.0/24", "198.18.0.0/16", "203.0.113.5"):
        old.add_ban(ip)
    with in_netns(lab.server):
        first = make(backend, old)
        first.start()
        first._write([(N("192.0.2.77/32"), 600)])          # in the kernel, in no list: a leftover
    assert not lab.probe("198.51.100.20") and not lab.probe("198.18.3.4")
    # kill -9: no stop(); the new process's jail lists nothing yet
    new = FakeJail("k9").use_database(tmp_path / "f2b.sqlite3")
    with in_netns(lab.server):
        second = make(backend, new)
        second.start()
    try:
        if backend == "nftset":
            chain = lab.server_sh("nft", "list", "chain", "inet", "f2b_ext", "k9_input")
            assert "@k9_n4_24 drop" in chain and "@k9_n4_16 drop" in chain
        assert not lab.probe("198.51.100.20") and not lab.probe("198.18.3.4") and not lab.probe("203.0.113.5")
        assert set(held(lab, in_netns, second)) == {N("198.51.100.0/24"), N("198.18.0.0/16"), N("203.0.113.5/32")}
    finally:
        with in_netns(lab.server):
            second.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_action_started_again_refills_what_fail2ban_lists(lab_nft, backend):
    """reload to a config without the action (stop: its sets go), then back: the new
    action's start enforces the 3 bans fail2ban still lists."""
    lab, in_netns = lab_nft
    jail = FakeJail("back")
    for ip in ("198.51.100.30", "198.51.100.31", "203.0.113.0/24"):
        jail.add_ban(ip)
    with in_netns(lab.server):
        act = make(backend, jail)
        act.start()
        act.stop()
        assert not act._held()
        again = make(backend, jail)
        again.start()
        assert len(again._held()) == 3
        again.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_jail_that_stops_with_a_database_leaves_its_bans_in_the_kernel(lab_nft, backend, tmp_path):
    """fail2ban keeps the bans in its database across stop/restart; so does the kernel
    (no window during a restart); unban --all (actions still running) empties it."""
    lab, in_netns = lab_nft
    jail = FakeJail("keep").use_database(tmp_path / "f2b.sqlite3")
    jail.add_ban("198.51.100.40")
    jail.actions.active = True
    with in_netns(lab.server):
        act = make(backend, jail)
        act.start()
        jail.actions.active = False                         # fail2ban's jail stop
        assert act.flush() is True
        act.stop()
    assert not lab.probe("198.51.100.40")
    with in_netns(lab.server):
        again = make(backend, jail)
        jail.actions.active = True
        again.start()
        assert again.flush() is True                        # unban --all
        assert not again._held()
        jail.database = None
        again.stop()
    assert lab.probe("198.51.100.40")


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_error_on_the_batch_timer_goes_to_the_log_and_loses_no_ban(lab_nft, backend, caplog):
    lab, in_netns = lab_nft
    jail = FakeJail("tmr")
    with in_netns(lab.server):
        act = make(backend, jail, batch="0.05")
        act.start()
        real_write, failures = act._write, []

        def failing(entries):                               # the backend fails once (a repair's BackendError)
            if not failures:
                failures.append(entries)
                raise BackendError("setup failed: Operation not permitted")
            return real_write(entries)
        act._write = failing
        caplog.set_level(logging.ERROR)
        jail.add_ban("198.51.100.50")
        act.ban(info("198.51.100.50"))
        assert until(lambda: failures, 15)
        assert until(lambda: any("writing a batch failed" in r.getMessage() for r in caplog.records), 15)
        assert act._pending, "the batch is queued again"
        jail.add_ban("198.51.100.51")
        act.ban(info("198.51.100.51"))
        assert until(lambda: {N("198.51.100.50/32"), N("198.51.100.51/32")} <= set(act._held()), 15)
        act.stop()


def test_a_missing_library_refuses_to_start(lab_nft, monkeypatch, caplog):
    """python3-nftables missing: one clear ERROR, no watchdog, no ban pretended."""
    lab, in_netns = lab_nft
    import sys
    monkeypatch.setitem(sys.modules, "nftables", None)          # `import nftables` raises ImportError
    caplog.set_level(logging.ERROR)
    with in_netns(lab.server):
        act = make("nftset", FakeJail("nolib"))
        act.start()
        act.ban(info("198.51.100.60"))
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert lines == ["Jail 'nolib' stopped: nftset cannot enforce bans: python3-nftables is not installed "
                     "(import of nftables halted; None in sys.modules)"]
    assert act.fault and act._watchdog is None


def neighbour_answered(lab, src: str) -> bool:
    """Does the server answer a neighbour solicitation (ICMPv6 type 135) from `src`
    with an advertisement (136)? Seen on the wire at the remote end."""
    import select
    import socket
    import time
    from scapy.layers.inet6 import IPv6, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr
    from scapy.layers.l2 import Ether
    from f2b_ext.lab.netns import SERVER_V6, in_netns
    target = ipaddress.ip_address(SERVER_V6)
    group = "ff02::1:ff" + target.exploded[-7:].replace(":", "")[:2] + ":" + target.exploded[-4:]
    mac = "33:33:ff:" + ":".join(target.exploded.replace(":", "")[-6:][i:i + 2] for i in (0, 2, 4))
    with in_netns(lab.remote):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    try:
        s.bind((lab.remote_if, 0))
        lab.send(IPv6(src=src, dst=group, hlim=255) / ICMPv6ND_NS(tgt=SERVER_V6) / ICMPv6NDOptSrcLLAddr(lladdr=lab.remote_mac),
                 dst_mac=mac)
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([s], [], [], left)[0]:
                break
            pkt = Ether(s.recv(65535))
            if ICMPv6ND_NA in pkt and pkt[ICMPv6ND_NA].tgt == SERVER_V6:
                return True
        return False
    finally:
        s.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_banned_neighbour_still_gets_neighbour_discovery(lab_nft, backend):
    """Issue 13: banning the neighbour's address (or its /64) must not cut the link:
    ICMPv6 types 133-137 pass the jail's rules; everything else from it is dropped."""
    from f2b_ext.lab.netns import REMOTE_V6
    lab, in_netns = lab_nft
    jail = FakeJail("nd")
    for net in (REMOTE_V6, "2001:db8:f2b::/64"):
        jail.add_ban(net)
    with in_netns(lab.server):
        act = make(backend, jail)
        act.start()
    try:
        lab.server_sh("ip", "-6", "neigh", "flush", "all")
        assert not lab.probe(REMOTE_V6), "the neighbour is banned"
        assert neighbour_answered(lab, REMOTE_V6)
    finally:
        with in_netns(lab.server):
            act.stop()
