"""nftset: the nft text (pure), and the action against the real kernel in a namespace."""
from __future__ import annotations

import ipaddress
import re
import time

import pytest

from conftest import FakeJail, info, is_root
from f2b_ext.core import nftset
from f2b_ext.lab.netns import until


def test_sets_by_family_and_prefix_length():
    assert nftset.set_name("netfilter-in", "203.0.113.7") == "netfilter_in_h4"
    assert nftset.set_name("netfilter-in", "203.0.113.0/24") == "netfilter_in_n4_24"
    assert nftset.set_name("x", "2001:db8::/64") == "x_n6_64"
    assert nftset.set_name("9j", "2001:db8::1").endswith("_h6")


def test_a_jail_name_holding_n_keeps_its_prefix_sets_apart():
    name = nftset.set_name("my-n6", "203.0.113.0/24")
    assert name == "my_n6_n4_24" and nftset.prefix_set_family(name) == 4
    assert nftset.is_prefix_set_of("my-n6", name) and not nftset.is_prefix_set_of("my", name)
    script = nftset.setup_script("my-n6", "in", "drop", [name, "my_n6_n6_64"])
    assert "add set inet f2b_ext my_n6_n4_24 { type ipv4_addr; flags interval, timeout; }" in script
    assert "add set inet f2b_ext my_n6_n6_64 { type ipv6_addr; flags interval, timeout; }" in script


def test_jail_names_never_share_sets():
    """`a-b` and `a_b` (and other spellings nft cannot hold) get distinct keys; plain
    names keep theirs (set names of running installs do not change)."""
    names = ["a-b", "a_b", "a b", "a--b", "a-b-", "9j", "j-9j", "j_9j", "a.b", "A-b", "f2b-ext-inbound"]
    keys = {nftset.jail_key(n) for n in names}
    assert len(keys) == len(names)
    assert nftset.jail_key("f2b-ext-inbound") == "f2b_ext_inbound" and nftset.jail_key("a-b") == "a_b"
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", k) for k in keys)
    sets = {nftset.set_name(n, net) for n in names for net in ("192.0.2.1", "2001:db8::1", "192.0.2.0/24")}
    assert len(sets) == 3 * len(names)


def test_neighbour_discovery_passes_every_chain_first():
    for direction in ("in", "out"):
        script = nftset.setup_script("j", direction, "drop", ["j_n6_64"]).splitlines()
        nd = [i for i, line in enumerate(script) if "icmpv6 type" in line]
        assert len(nd) == 2
        for i in nd:
            assert script[i - 1].startswith("flush chain") and script[i].endswith(" accept")
            assert all(t in script[i] for t in ("nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit",
                                                "nd-neighbor-advert", "nd-redirect"))
    assert sorted(nftset.ND_TYPES) == [133, 134, 135, 136, 137]


def test_the_kernels_elements_read_from_json():
    from f2b_ext.core.nftset import elements
    answer = {"nftables": [{"metainfo": {}}, {"set": {"name": "j_n4_24", "elem": [
        {"elem": {"val": "198.51.100.5", "timeout": 600, "expires": 597}}, "198.51.100.6",
        {"elem": {"val": {"prefix": {"addr": "203.0.113.0", "len": 24}}, "timeout": 60, "expires": 59}},
        {"prefix": {"addr": "2001:db8::", "len": 64}}]}}]}
    assert elements(answer) == {ipaddress.ip_network("198.51.100.5/32"): 597.0,
                                ipaddress.ip_network("198.51.100.6/32"): None,
                                ipaddress.ip_network("203.0.113.0/24"): 59.0,
                                ipaddress.ip_network("2001:db8::/64"): None}


def test_setup_is_idempotent_text_and_directions():
    script = nftset.setup_script("j", "in", "drop", ["j_n4_24"])
    assert "flush chain inet f2b_ext j_input" in script and "ip saddr @j_n4_24 drop" in script
    out = nftset.setup_script("j", "out", "reject")
    assert "hook output" in out and "ip daddr @j_h4 reject" in out and "hook input" not in out
    with pytest.raises(ValueError, match="direction"):
        nftset.setup_script("j", "sideways")
    with pytest.raises(ValueError, match="blocktype"):
        nftset.setup_script("j", "in", "tarpit")


@pytest.mark.parametrize("left", [0.0, 0.2, 1.0, 1.000001, 59.5, 599.999, 600.0, 600.4, 86399.01])
def test_the_kernel_holds_a_ban_at_least_as_long_as_fail2ban(left):
    """Rounded up, never down: a timeout a fraction short let the kernel drop a ban while
    fail2ban still listed it (answered until fail2ban's Unban, and a repair WARNING)."""
    seconds = nftset.kernel_seconds(left)
    assert isinstance(seconds, int) and seconds >= max(1.0, left) and seconds < max(1.0, left) + 1


def test_elements_are_grouped_per_set_with_timeouts():
    script = nftset.add_elements_script("j", [(ipaddress.ip_network("203.0.113.7/32"), 600.4),
                                              (ipaddress.ip_network("203.0.113.0/24"), 60),
                                              (ipaddress.ip_network("203.0.113.8/32"), None)])
    # 600.4 s left: 601 s, rounded up (the kernel never drops a ban before fail2ban lifts it)
    assert "add element inet f2b_ext j_h4 { 203.0.113.7 timeout 601s, 203.0.113.8 }" in script
    assert "add element inet f2b_ext j_n4_24 { 203.0.113.0/24 timeout 60s }" in script


kernel = pytest.mark.skipif(not is_root(), reason="needs root for a network namespace")


@kernel
@pytest.mark.kernel
def test_hosts_and_subnets_coexist_and_time_out(lab_nft):
    lab, in_netns = lab_nft
    from f2b_ext.plugins.nftset import NftSetAction
    with in_netns(lab.server):
        act = NftSetAction(FakeJail("lab-jail"), "nftset", batch="0", checkinterval="0")
        act.start()
        act.start()                                             # idempotent
        for ip in ("203.0.113.7", "203.0.113.8", "203.0.113.0/24", "203.0.0.0/16", "2001:db8::7", "2001:db8::/64"):
            act.ban(info(ip, bantime=3))
        act.unban(info("203.0.113.99"))                         # not banned: no error
        act.unban(info("203.0.113.8"))
    listing = lab.server_sh("nft", "list", "table", "inet", "f2b_ext")
    for item in ("203.0.113.7 timeout", "203.0.113.0/24 timeout", "203.0.0.0/16 timeout", "2001:db8::7 timeout",
                 "2001:db8::/64 timeout"):
        assert item in listing, listing
    assert "203.0.113.8 " not in listing
    assert listing.count("hook input") == 1 and listing.count("ip saddr @lab_jail_h4 drop") == 2
    time.sleep(3.5)                                             # the kernel lifts them itself
    listing = lab.server_sh("nft", "list", "table", "inet", "f2b_ext")
    assert "203.0.113.7" not in listing and "203.0.113.0/24" not in listing
    with in_netns(lab.server):
        act.stop()
    assert "f2b_ext" not in lab.server_sh("nft", "list", "tables")


@kernel
@pytest.mark.kernel
def test_rebuilt_after_a_ruleset_flush(lab_nft):
    lab, in_netns = lab_nft
    from f2b_ext.plugins.nftset import NftSetAction
    jail = FakeJail("j")
    jail.add_ban("198.51.100.5")
    with in_netns(lab.server):
        act = NftSetAction(jail, "nftset", batch="0", checkinterval="0")
        act.start()
        act.ban(info("198.51.100.5"))
        lab.server_sh("nft", "flush", "ruleset")
        act.ban(info("198.51.100.6"))                           # finds the table gone
        listing = lab.server_sh("nft", "list", "table", "inet", "f2b_ext")
        assert "198.51.100.5 timeout" in listing and "198.51.100.6 timeout" in listing
        lab.server_sh("nft", "flush", "chain", "inet", "f2b_ext", "j_input")
        assert act.consistencyCheck() and "@j_h4" in lab.server_sh("nft", "list", "chain", "inet", "f2b_ext", "j_input")
        act.stop()


@kernel
@pytest.mark.kernel
def test_the_watchdog_repairs_without_a_ban(lab_nft):
    """`systemctl restart nftables` flushes the ruleset and no ban follows: the
    watchdog notices within checkinterval and refills from the ban list."""
    lab, in_netns = lab_nft
    from f2b_ext.plugins.nftset import NftSetAction
    jail = FakeJail("w")
    jail.add_ban("198.51.100.9")
    with in_netns(lab.server):
        act = NftSetAction(jail, "nftset", batch="0", checkinterval="0.2")
        act.start()
    try:
        lab.server_sh("nft", "flush", "ruleset")
        until(lambda: "198.51.100.9" in lab.server_sh("nft", "list", "ruleset"), 5)
        assert "198.51.100.9 timeout" in lab.server_sh("nft", "list", "set", "inet", "f2b_ext", "w_h4")
    finally:
        with in_netns(lab.server):
            act.stop()


@kernel
@pytest.mark.kernel
def test_flush_empties_every_set_at_once(lab_nft):
    """fail2ban's unban-all calls flush(); True means no per-ban unban follows."""
    lab, in_netns = lab_nft
    from f2b_ext.plugins.nftset import NftSetAction
    with in_netns(lab.server):
        act = NftSetAction(FakeJail("f"), "nftset", batch="0", checkinterval="0")
        act.start()
        for ip in ("203.0.113.1", "203.0.113.0/24", "2001:db8::1"):
            act.ban(info(ip))
        assert act.flush() is True
        listing = lab.server_sh("nft", "list", "table", "inet", "f2b_ext")
        assert "203.0.113" not in listing and "2001:db8::1" not in listing and "f_n4_24" in listing
        act.stop()


@pytest.mark.fail2ban          # imports the fail2ban action
def test_bad_parameters_name_themselves():
    from f2b_ext.plugins.nftset import NftSetAction
    for kwargs, text in ((dict(batch="soon"), "batch: 'soon'"), (dict(checkinterval="-1"), "checkinterval: '-1'"),
                         (dict(direction="up"), "direction: 'up'")):
        act = NftSetAction(FakeJail("b"), "nftset", **kwargs)
        assert text in act.fault
        act.start()                       # refuses (and stops the jail): no kernel call
        assert act._nft is None and act._watchdog is None


@kernel
@pytest.mark.kernel
def test_a_banned_host_gets_no_answer(lab_nft):
    """The kernel, not the listing: a SYN from a banned /24 gets no RST back."""
    lab, in_netns = lab_nft
    from scapy.layers.inet import IP, TCP
    from f2b_ext.plugins.nftset import NftSetAction
    log = lab.kernel_log()
    lab.server_sh("iptables", "-A", "OUTPUT", "-j", "LOG", "--log-prefix", "ANSWER: ")
    lab.send(IP(src="198.51.100.20", dst="192.0.2.1", id=3001) / TCP(sport=40000, dport=23, flags="S"))
    assert any("DST=198.51.100.20 " in r.message for r in log.read(timeout=10, until=lambda r: "DST=198.51.100.20 " in r.message))
    with in_netns(lab.server):
        act = NftSetAction(FakeJail("j"), "nftset", batch="0", checkinterval="0")
        act.start()
        act.ban(info("198.51.100.0/24"))
    lab.send(IP(src="198.51.100.21", dst="192.0.2.1", id=3002) / TCP(sport=40000, dport=23, flags="S"))
    assert not any("DST=198.51.100.21 " in r.message for r in log.read(settle=0.5))
    log.close()


@kernel
@pytest.mark.kernel
def test_reload_to_another_direction_moves_the_rules_and_keeps_the_bans(lab_nft):
    """fail2ban-client reload hands the action its new parameters: the input chains
    go, output chains come, the set and its elements stay."""
    lab, in_netns = lab_nft
    from f2b_ext.plugins.nftset import NftSetAction
    jail = FakeJail("r")
    jail.add_ban("203.0.113.66")                                # fail2ban lists a ban before any action sees it
    with in_netns(lab.server):
        act = NftSetAction(jail, "nftset", batch="0", checkinterval="0")
        act.start()
        act.ban(info("203.0.113.66"))
        act.reload(direction="out", blocktype="reject")
    listing = lab.server_sh("nft", "list", "table", "inet", "f2b_ext")
    assert "r_input" not in listing and "hook input" not in listing
    assert "ip daddr @r_h4 reject" in listing and "hook output" in listing
    assert "203.0.113.66 timeout" in listing
    with in_netns(lab.server):
        with pytest.raises(ValueError, match="direction: 'up'"):
            act.reload(direction="up")
        act.stop()


RACE = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from f2b_ext.plugins.nftset import NftSetAction

def action():
    a = object.__new__(NftSetAction)      # only _cmd is used: no jail, no fail2ban
    a._nft, a._writers = None, {}
    return a

action()._cmd("add table inet f2bx_race; add set inet f2bx_race s4 { type ipv4_addr; flags interval, timeout; }; "
              "add set inet f2bx_race s6 { type ipv6_addr; flags timeout; }")

def lister(name):
    a = action()                          # its own libnftables contexts, as each jail's action has
    for _ in range(6000):
        a._cmd(f"list set inet f2bx_race {name}", output="json")

threads = [threading.Thread(target=lister, args=(n,)) for n in ("s4", "s6", "s4", "s6")]
[t.start() for t in threads]
[t.join() for t in threads]
print("survived")
"""


@pytest.mark.kernel
@pytest.mark.skipif(not is_root(), reason="needs root for a network namespace")
def test_two_jails_listing_their_sets_at_once_never_abort_fail2ban(lab_nft):
    """libnftables aborts its process when two threads list sets as JSON at the same time
    (strtok in json.c: `set_dtype_json: Assertion __out failed`), which two jails'
    watchdogs do; every call in the process goes through one lock. Four threads, each
    with its own contexts, list sets 6,000 times in a subprocess (an abort would kill it)."""
    import subprocess
    import sys
    from conftest import ROOT
    lab, _ = lab_nft
    r = subprocess.run(["ip", "netns", "exec", lab.server, sys.executable, "-c", RACE, str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "survived", (r.returncode, r.stderr[-500:])


def test_a_jails_elements_are_read_from_its_sets_only():
    """jail_elements reads `nft -j list sets` and keeps the jail's host and prefix sets."""
    from f2b_ext.core.nftset import jail_elements, jail_key, set_name
    import ipaddress
    import json
    net = ipaddress.ip_network("203.0.113.0/24")
    listing = {"nftables": [
        {"set": {"name": f"{jail_key('web')}_h4", "elem": [{"elem": {"val": "192.0.2.7", "expires": 90}}]}},
        {"set": {"name": set_name("web", net), "elem": [{"prefix": {"addr": "203.0.113.0", "len": 24}}]}},
        {"set": {"name": f"{jail_key('mail')}_h4", "elem": ["198.51.100.1"]}},
    ]}
    asked = []
    held = jail_elements("web", lambda *args: asked.append(args) or json.dumps(listing))
    assert asked == [("-j", "list", "sets", "table", "inet", "f2b_ext")]
    assert held == {ipaddress.ip_network("192.0.2.7/32"): 90.0, net: None}
