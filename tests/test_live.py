"""The live end-to-end test: the seeds' firewall on the real kernel (as iptables-nft rules
and as a pure nftables ruleset), a real rsyslog (imklog) writing the log, a real
fail2ban-server in the server namespace with the netfilter filter, subnet-escalate and
nftset. Every scenario is judged by the kernel's behaviour: does the server still
answer a probe from that host (Lab.probe, on the wire)? Run three times: nftset under
the nft and the iptables-nft firewall, and ipset-net under iptables-nft.

Addresses per scenario, so scenarios never count towards each other's /24s:
203.0.113.10, 2001:db8:bad::10 scan; 203.0.113.80/.43 backscatter; 198.18.0.47 GRE;
198.51.100.0/24 escalates; 198.18.7.0/24 holds an ignoreip address; 203.0.113.66 is
called home to; 198.18.9.0/24 survives kill -9; 198.18.200.x mark "fail2ban has read
everything up to here"."""
from __future__ import annotations

import itertools
import time

import pytest

from f2b_ext.lab.live import PROBE_PORT, SETUPS, LiveLab, LiveSettings, apply_firewall, environment_problems

problems = environment_problems()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(bool(problems), reason="; ".join(problems))]

PROTECTED = "198.18.7.250"
SCHEDULE_FIRST = 12           # seconds an escalated /24 stays banned the first time
_markers = itertools.count(1)


@pytest.fixture(scope="module", params=SETUPS, ids=["+".join(s) for s in SETUPS])
def live(request):
    firewall, banaction = request.param
    settings = LiveSettings(firewall=firewall, banaction=banaction, bantime=600, schedule=f"{SCHEDULE_FIRST}s 1m", hosts=6,
                            ignoreip=PROTECTED, checkinterval=1)
    with LiveLab(settings) as lab:
        yield lab


PATIENCE = 15                 # seconds a wait for fail2ban or the kernel may take on a loaded machine


def banned_on_the_wire(live, src: str, timeout: float = PATIENCE) -> bool:
    return bool(live.until(lambda: not live.answered(src), timeout))


def answered(live, src: str) -> bool:
    """The server answers `src` (retried: a loaded machine may deliver one answer late;
    a banned source is never answered however often it knocks)."""
    return live.lab.answered_within(src, PROBE_PORT, timeout=PATIENCE)


def read_so_far(live):
    """Wait until fail2ban has read every line logged so far: a fresh marker host's
    scan, logged after them, gets banned."""
    marker = f"198.18.200.{next(_markers)}"
    live.syn_scan(marker, ports=(23,))
    live.f2b.wait_for(lambda: marker in live.bans(), what=f"marker {marker} banned")


def test_1_a_syn_scan_is_banned_and_unanswered_within_2_seconds(live):
    for src in ("203.0.113.10", "2001:db8:bad::10"):
        assert answered(live, src), f"{src} must get an answer before it attacks"
        start = time.monotonic()
        live.syn_scan(src)
        assert banned_on_the_wire(live, src, timeout=2.0), f"{src} still answered 2 s after its scan"
        elapsed = time.monotonic() - start
        assert elapsed <= 2.0
        assert src in live.bans()
        assert live.kernel_holds("netfilter-in", src) == 1
    assert live.log_lines("SRC=203.0.113.10 "), "the kernel's line reached netfilter.log through rsyslog"


def test_2_backscatter_bans_nobody(live):
    live.backscatter("203.0.113.80", sport=80)
    live.backscatter("203.0.113.43", sport=443)
    # seed 001, reproduced: the SYN-ACK is logged on input, and the server's own RST
    # answering it leaves through the output LOG rule
    assert live.until(lambda: live.log_lines("SRC=203.0.113.80 "), PATIENCE), "the SYN-ACK was logged on input"
    assert live.until(lambda: [line for line in live.log_lines("DST=203.0.113.80 ")
                               if "UNKNOWN_OUTGOING: " in line and "SPT=3594 DPT=80 " in line and " RST " in line], PATIENCE)
    read_so_far(live)
    inbound, outbound = live.bans("netfilter-in"), live.bans("netfilter-out")
    for victim in ("203.0.113.80", "203.0.113.43"):
        assert victim not in inbound and victim not in outbound
        assert answered(live, victim)


def test_3_gre_is_banned(live):
    src = "198.18.0.47"
    assert answered(live, src)
    live.gre(src)
    assert banned_on_the_wire(live, src)
    assert src in live.bans()
    assert any("PROTO=47 " in line for line in live.log_lines(f"SRC={src} "))


def test_4_and_6_six_hosts_escalate_their_24_until_the_schedule_ends(live):
    seventh = "198.51.100.17"
    for i in range(11, 16):
        live.syn_scan(f"198.51.100.{i}")
    live.f2b.wait_for(lambda: all(f"198.51.100.{i}" in live.bans() for i in range(11, 16)), what="five host bans")
    assert "198.51.100.0/24" not in live.bans()
    assert answered(live, seventh), "five hosts are not enough for the /24"

    live.syn_scan("198.51.100.16")
    bans = live.f2b.wait_for(lambda: "198.51.100.0/24" in live.bans() and live.bans(), what="the /24 banned")
    assert bans["198.51.100.0/24"] == SCHEDULE_FIRST
    assert banned_on_the_wire(live, seventh), "a seventh host of the /24 still gets an answer"
    assert live.kernel_holds("netfilter-in", "198.51.100.0/24") == 1

    # 6. the /24's schedule ends: the seventh host is answered again, the six stay banned
    assert live.until(lambda: live.answered(seventh), SCHEDULE_FIRST + 5), "the /24 was not released on schedule"
    # the kernel's element timeout lifts it first; fail2ban's own unban follows
    live.f2b.wait_for(lambda: "198.51.100.0/24" not in live.bans(), timeout=PATIENCE, what="fail2ban's unban of the /24")
    assert not live.answered("198.51.100.11")


def test_4_a_24_holding_an_ignoreip_address_is_never_banned(live):
    """The escalation narrows to the widest prefix that leaves the ignoreip address
    out: the attackers' /25, never the /24."""
    hosts = [f"198.18.7.{i}" for i in range(1, 8)]
    for host in hosts:
        live.syn_scan(host)
    live.f2b.wait_for(lambda: all(h in live.bans() for h in hosts), what="seven host bans")
    # the seventh host's ban queues the escalation (putFailTicket): it follows the host bans
    live.f2b.wait_for(lambda: "198.18.7.0/25" in live.bans(), what="the /25 escalation")
    read_so_far(live)
    bans = live.bans()
    assert "198.18.7.0/24" not in bans and "198.18.7.0/25" in bans
    assert answered(live, PROTECTED) and answered(live, "198.18.7.200"), "the ignoreip half must stay reachable"
    assert not live.answered("198.18.7.8")


def test_5_an_outbound_call_home_blocks_egress_to_that_remote(live):
    home, other = "203.0.113.66", "203.0.113.67"
    listeners = [live.lab.listen(443), live.lab.listen(4444)]
    try:
        assert live.call_home(home, 443), "443 is the server's allowed egress"
        assert live.call_home(home, 4444)                  # logged UNKNOWN_OUTGOING, policy accept
        assert live.until(lambda: not live.call_home(home, 443), PATIENCE), "egress to the remote still open"
        assert home in live.bans("netfilter-out") and home not in live.bans("netfilter-in")
        assert live.call_home(other, 443), "only that remote is blocked"
    finally:
        for sock in listeners:
            sock.close()


def test_7_kill_9_and_restart_keep_the_bans_and_a_ruleset_flush_is_repaired(live):
    hosts = ("198.18.9.1", "198.18.9.2")
    for host in hosts:
        live.syn_scan(host)
    live.f2b.wait_for(lambda: all(h in live.bans() for h in hosts), what="two host bans")
    before = {jail: set(live.bans(jail)) for jail in ("netfilter-in", "netfilter-out")}
    assert "203.0.113.66" in before["netfilter-out"]

    live.kill_fail2ban()
    assert not live.answered(hosts[0]), "the kernel holds the ban while fail2ban is dead"
    live.start_fail2ban()
    for jail, addresses in before.items():
        # "Jail started" comes once the restored tickets are queued; the actions thread
        # bans them a moment later, so the lists must become equal (not be equal at once)
        listed = lambda: sorted(live.f2b.client("get", jail, "banip").stdout.split())
        live.f2b.wait_for(lambda: listed() == sorted(addresses), timeout=10,
                          what=f"{jail}: the bans restored exactly, none lost or doubled across kill -9")
    assert live.kernel_holds("netfilter-in", "198.18.9.1") == 1
    read_so_far(live)
    assert "198.51.100.0/24" not in live.bans(), "restored host bans re-escalated a /24 already served"

    listener = live.lab.listen(443)
    try:
        repairs = live.f2b.server_log().count("rebuilding from the ban list")
        live.flush_ruleset()
        live.f2b.wait_for(lambda: live.f2b.server_log().count("rebuilding from the ban list") >= repairs + 2,
                          timeout=PATIENCE, what="both jails' nftset to notice the flush")
        assert banned_on_the_wire(live, hosts[0]), "the ban was not repaired"
        assert not live.answered(hosts[1])
        assert live.until(lambda: not live.call_home("203.0.113.66", 443), PATIENCE), "the egress ban was not repaired"
        assert live.call_home("203.0.113.67", 443)
    finally:
        listener.close()
        apply_firewall(live.lab, live.settings.firewall)    # as the admin's firewall service would
