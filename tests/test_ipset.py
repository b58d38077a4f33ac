"""ipset-net: the ipset/iptables text (pure), and the action against the real kernel
(ipset hash:net, iptables-nft) in a namespace, judged on the wire with Lab.probe."""
from __future__ import annotations

import time

import pytest

from conftest import FakeJail, info, is_root
from f2b_ext.core import ipset
from f2b_ext.lab.netns import until

kernel = pytest.mark.skipif(not is_root(), reason="needs root for a network namespace")


def test_set_names_fit_ipset_and_stay_distinct():
    assert ipset.set_name("netfilter-in", 4) == "f2bx-netfilter-in-4"
    long_a, long_b = "x" * 40 + "a", "x" * 40 + "b"
    for name in (ipset.set_name(long_a, 6), ipset.set_name(long_b, 6), ipset.set_name("jail with spaces", 4)):
        assert len(name) <= ipset.SET_NAME_MAX and " " not in name
    assert ipset.set_name(long_a, 6) != ipset.set_name(long_b, 6)


def test_elements_and_timeouts():
    script = ipset.add_script("j", [("203.0.113.7", 600.4), ("203.0.113.0/24", 0.2), ("2001:db8::/64", None),
                                    ("198.51.100.1", 10 ** 9)])
    assert script.splitlines() == ["add f2bx-j-4 203.0.113.7 timeout 601", "add f2bx-j-4 203.0.113.0/24 timeout 1",
                                   "add f2bx-j-6 2001:db8::/64 timeout 0",
                                   f"add f2bx-j-4 198.51.100.1 timeout {ipset.MAX_TIMEOUT}"]
    assert ipset.delete_args("j", "2001:db8::7") == ["-exist", "del", "f2bx-j-6", "2001:db8::7"]


def test_rules_per_direction():
    inbound = ipset.rules("j", "in", "drop")
    assert ("iptables", ["INPUT", "-m", "set", "--match-set", "f2bx-j-4", "src", "-j", "DROP"]) in inbound
    # IPv6: everything but ICMPv6, and ICMPv6 but neighbour discovery (133-137)
    v6 = [rule for tool, rule in inbound if tool == "ip6tables" and rule[0] == "FORWARD"]
    assert v6[0] == ["FORWARD", "-m", "set", "--match-set", "f2bx-j-6", "src", "!", "-p", "ipv6-icmp", "-j", "DROP"]
    assert v6[1][:8] == ["FORWARD", "-m", "set", "--match-set", "f2bx-j-6", "src", "-p", "ipv6-icmp"]
    assert [int(v6[1][i + 1]) for i, a in enumerate(v6[1]) if a == "--icmpv6-type"] == [133, 134, 135, 136, 137]
    assert v6[1].count("!") == 5 and v6[1][-2:] == ["-j", "DROP"]
    outbound = ipset.rules("j", "out", "reject")
    assert {rule[0] for _, rule in outbound} == {"OUTPUT", "FORWARD"} and all("dst" in r for _, r in outbound)
    for bad in (("up", "drop"), ("in", "tarpit")):
        with pytest.raises(ValueError):
            ipset.rules("j", *bad)


@pytest.mark.fail2ban          # imports the fail2ban action
def test_bad_parameters_name_themselves():
    from f2b_ext.plugins.ipset_net import IpsetNetAction
    for kwargs, text in ((dict(batch="soon"), "batch: 'soon'"), (dict(blocktype="tarpit"), "blocktype: 'tarpit'")):
        act = IpsetNetAction(FakeJail("b"), "ipset-net", **kwargs)
        assert text in act.fault
        act.start()                       # refuses (and stops the jail): no kernel call
        assert act._watchdog is None and act.applied == 0


def listing(lab, name):
    return lab.server_sh("ipset", "list", name, check=False)


SHORT = 6      # seconds the /24 is banned: the checks before its end take about 1 s idle, longer loaded


@kernel
@pytest.mark.kernel
def test_hosts_and_subnets_coexist_block_and_time_out(lab_nft):
    lab, in_netns = lab_nft
    from f2b_ext.plugins.ipset_net import IpsetNetAction
    lab.server_sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "ACCEPT")   # the admin's own
    with in_netns(lab.server):
        act = IpsetNetAction(FakeJail("lab-jail"), "ipset-net", batch="0", checkinterval="0")
        act.start()
        act.start()                                                   # idempotent
        for ip in ("203.0.113.7", "203.0.113.8", "2001:db8::7"):
            act.ban(info(ip, bantime=600))
        act.ban(info("198.51.100.0/24", bantime=SHORT))         # batch=0: in the kernel when ban() returns
        written = time.monotonic()
        act.ban(info("198.51.100.5", bantime=600))                   # inside the /24: coexists
        act.unban(info("203.0.113.99"))                               # never banned: no error
        act.unban(info("203.0.113.8"))
    v4 = listing(lab, "f2bx-lab-jail-4")
    for item in ("203.0.113.7 timeout", "198.51.100.0/24 timeout", "198.51.100.5 timeout"):
        assert item in v4, v4
    assert "203.0.113.8 " not in v4 and "2001:db8::7 timeout" in listing(lab, "f2bx-lab-jail-6")
    rules = lab.server_sh("iptables", "-S", "INPUT")
    assert rules.count("--match-set f2bx-lab-jail-4 src -j DROP") == 1
    assert rules.index("--match-set") < rules.index("--dport 2222"), "the ban rule goes first"
    assert not lab.probe("198.51.100.77") and not lab.probe("203.0.113.7") and lab.answered_within("203.0.113.9")
    # the kernel lifts the /24 itself, SHORT s after it was written (whatever the checks above took)
    time.sleep(max(0.0, written + SHORT + 1 - time.monotonic()))
    assert lab.probe("198.51.100.77") and not lab.probe("198.51.100.5")
    with in_netns(lab.server):
        act.stop()
    assert "f2bx-" not in lab.server_sh("ipset", "list", "-n")
    rules = lab.server_sh("iptables", "-S", "INPUT")
    assert "match-set" not in rules and "--dport 2222" in rules, "stop removes its own rules only"


@kernel
@pytest.mark.kernel
def test_an_outbound_jail_blocks_egress(lab_nft):
    lab, in_netns = lab_nft
    from f2b_ext.plugins.ipset_net import IpsetNetAction
    listener = lab.listen(443)
    try:
        assert lab.connect_from_server("203.0.113.66", 443)
        with in_netns(lab.server):
            act = IpsetNetAction(FakeJail("out"), "ipset-net", direction="out", batch="0", checkinterval="0")
            act.start()
            act.ban(info("203.0.113.66"))
        assert not lab.connect_from_server("203.0.113.66", 443) and lab.connect_from_server("203.0.113.67", 443)
        with in_netns(lab.server):
            act.stop()
    finally:
        listener.close()


@kernel
@pytest.mark.kernel
def test_rules_flushed_are_repaired_by_the_watchdog_and_flush_empties_the_sets(lab_nft):
    lab, in_netns = lab_nft
    from f2b_ext.plugins.ipset_net import IpsetNetAction
    jail = FakeJail("w")
    jail.add_ban("198.51.100.9")
    jail.add_ban("203.0.113.0/24")
    with in_netns(lab.server):
        act = IpsetNetAction(jail, "ipset-net", batch="0", checkinterval="0.2")
        act.start()
    try:
        lab.server_sh("iptables", "-F")                               # a firewall reload
        lab.server_sh("ipset", "destroy", "f2bx-w-4")
        until(lambda: "203.0.113.0/24" in listing(lab, "f2bx-w-4"), 5)
        assert "198.51.100.9 timeout" in listing(lab, "f2bx-w-4") and "203.0.113.0/24 timeout" in listing(lab, "f2bx-w-4")
        assert "--match-set f2bx-w-4 src" in lab.server_sh("iptables", "-S", "INPUT")
        assert not lab.probe("203.0.113.50")
        with in_netns(lab.server):
            assert act.flush() is True
        assert "198.51.100.9" not in listing(lab, "f2bx-w-4") and lab.probe("203.0.113.50")
    finally:
        with in_netns(lab.server):
            act.stop()


@kernel
@pytest.mark.kernel
def test_reload_to_another_direction_moves_the_rules_and_keeps_the_bans(lab_nft):
    lab, in_netns = lab_nft
    from f2b_ext.plugins.ipset_net import IpsetNetAction
    jail = FakeJail("r")
    jail.add_ban("203.0.113.66")                                # fail2ban lists a ban before any action sees it
    with in_netns(lab.server):
        act = IpsetNetAction(jail, "ipset-net", batch="0", checkinterval="0")
        act.start()
        act.ban(info("203.0.113.66"))
        act.reload(direction="out", blocktype="reject")
    assert "match-set" not in lab.server_sh("iptables", "-S", "INPUT")
    assert "--match-set f2bx-r-4 dst -j REJECT" in lab.server_sh("iptables", "-S", "OUTPUT")
    assert "--match-set f2bx-r-4 dst -j REJECT" in lab.server_sh("iptables", "-S", "FORWARD")
    assert "src" not in lab.server_sh("iptables", "-S", "FORWARD")
    assert "203.0.113.66 timeout" in listing(lab, "f2bx-r-4")
    with in_netns(lab.server):
        act.stop()
