"""core.nftevents: which nf_tables notifications may have removed a jail's enforcement,
and when to compare (pure: real datagrams captured from the kernel, and built ones)."""
from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings, strategies as st

from f2b_ext.core import nftevents as ev
from f2b_ext.core import nftset

# Datagrams the kernel (Linux 6.18) sent to NFNLGRP_NFTABLES in a namespace, captured with
# a socket like f2b_ext.system.nftevents.open_socket(), for these commands on this ruleset:
#   table inet f2b_ext { set j_h4 (timeout), j_n4_24 (interval, timeout), j_h6;
#     chain j_input: ip saddr @j_h4 drop, ip saddr @j_n4_24 drop; chain j_forward: ip saddr @j_h4 drop }
# and a table `ip other` with a chain c and a set s; iptables-nft with a rule in INPUT.
CAPTURED = {
    # nft flush set inet f2b_ext j_h4 (2 elements)
    "flushset": [
        "580000000e0a000000000000c4420000010000030c0001006632625f65787400090002006a5f6834000000002c000300"
        "280001000c00010008000100c00002010c00040000000000000927c00c0005000000000000092628580000000e0a0000"
        "00000000c4420000010000030c0001006632625f65787400090002006a5f6834000000002c000300280001000c000100"
        "08000100c00002020c00040000000000000927c00c0005000000000000092628",
        "2c0000000f0a000001000000c442000000000003080001000000000308000200000042c4080003006e667400",
    ],
    # nft flush set inet f2b_ext j_n4_24 (203.0.113.0/24: start, end, 0.0.0.0 end)
    "flushinterval": [
        "480000000e0a0000000000001b430000010000040c0001006632625f657874000c0002006a5f6e345f3234001c000300"
        "180001000c00010008000100cb0072000800030000000001580000000e0a0000000000001b430000010000040c000100"
        "6632625f657874000c0002006a5f6e345f3234002c000300280001000c00010008000100cb0071000c00040000000000"
        "000927c00c0005000000000000091f40480000000e0a0000000000001b430000010000040c0001006632625f65787400"
        "0c0002006a5f6e345f3234001c000300180001000c00010008000100000000000800030000000001",
        "2c0000000f0a0000010000001b430000000000040800010000000004080002000000431b080003006e667400",
    ],
    # nft delete element inet f2b_ext j_h6 { 2001:db8::1 }
    "delelem6": [
        "640000000e0a00000000000072430000010000050c0001006632625f65787400090002006a5f68360000000038000300"
        "34000100180001001400010020010db80000000000000000000000010c00040000000000000927c00c00050000000000"
        "0009184c",
        "2c0000000f0a000001000000724300000000000508000100000000050800020000004372080003006e667400",
    ],
    # nft delete rule inet f2b_ext j_input handle <the @j_h4 rule>
    "delrule": [
        "20010000080a00000100000018440000010000060c0001006632625f657874000c0002006a5f696e707574000c000300"
        "0000000000000006e800040024000100090001006d6574610000000014000200080002000000000f0800010000000001"
        "2c00010008000100636d700020000200080001000000000108000200000000000c000300050001000200000034000100"
        "0c0001007061796c6f6164002400020008000100000000010800020000000001080003000000000c0800040000000004"
        "300001000b0001006c6f6f6b7570000020000200090001006a5f68340000000008000200000000010800050000000000"
        "300001000e000100696d6d6564696174650000001c0002000800010000000000100002000c0002000800010000000000",
        "2c0000000f0a000001000000184400000000000608000100000000060800020000004418080003006e667400",
    ],
    # nft flush chain inet f2b_ext j_forward
    "flushchain": [
        "24010000080a0000010000007f440000010000070c0001006632625f657874000e0002006a5f666f7277617264000000"
        "0c0003000000000000000008e800040024000100090001006d6574610000000014000200080002000000000f08000100"
        "000000012c00010008000100636d700020000200080001000000000108000200000000000c0003000500010002000000"
        "340001000c0001007061796c6f6164002400020008000100000000010800020000000001080003000000000c08000400"
        "00000004300001000b0001006c6f6f6b7570000020000200090001006a5f683400000000080002000000000108000500"
        "00000000300001000e000100696d6d6564696174650000001c0002000800010000000000100002000c00020008000100"
        "00000000",
        "2c0000000f0a0000010000007f440000000000070800010000000007080002000000447f080003006e667400",
    ],
    # nft delete chain inet f2b_ext j_forward
    "delchain": [
        "3c000000050a000001000000eb440000010000080c0001006632625f657874000e0003006a5f666f7277617264000000"
        "0c0002000000000000000002",
        "2c0000000f0a000001000000eb44000000000008080001000000000808000200000044eb080003006e667400",
    ],
    # nft add element inet f2b_ext j_h4 { 192.0.2.7 timeout 600s }
    "addelem": [
        "580000000c0a00040000000042450000010000090c0001006632625f65787400090002006a5f6834000000002c000300"
        "280001000c00010008000100c00002070c00040000000000000927c00c00050000000000000927c0",
        "2c0000000f0a000001000000424500000000000908000100000000090800020000004542080003006e667400",
    ],
    # nft delete set inet f2b_ext j_h6
    "delset": [
        "380000000b0a000001000000994500000100000a0c0001006632625f65787400090002006a5f6836000000000c001000"
        "0000000000000005",
        "2c0000000f0a000001000000994500000000000a080001000000000a0800020000004599080003006e667400",
    ],
    # nft flush ruleset (j_h4, j_n4_24, j_input left)
    "flushruleset": [
        "20010000080a000001000000844600000100000b0c0001006632625f657874000c0002006a5f696e707574000c000300"
        "0000000000000007e800040024000100090001006d6574610000000014000200080002000000000f0800010000000001"
        "2c00010008000100636d700020000200080001000000000108000200000000000c000300050001000200000034000100"
        "0c0001007061796c6f6164002400020008000100000000010800020000000001080003000000000c0800040000000004"
        "300001000b0001006c6f6f6b75700000200002000c0001006a5f6e345f32340008000200000000010800050000000000"
        "300001000e000100696d6d6564696174650000001c0002000800010000000000100002000c0002000800010000000000"
        "380000000b0a000001000000844600000100000b0c0001006632625f65787400090002006a5f6834000000000c001000"
        "0000000000000003380000000b0a000001000000844600000100000b0c0001006632625f657874000c0002006a5f6e34"
        "5f3234000c001000000000000000000438000000050a000001000000844600000100000b0c0001006632625f65787400"
        "0c0003006a5f696e707574000c000200000000000000000134000000020a000001000000844600000100000b0c000100"
        "6632625f6578740008000300000000000c0004000000000000000001",
        "2c0000000f0a000001000000844600000000000b080001000000000b0800020000004684080003006e667400",
    ],
    # nft flush set ip other s
    "othertable": [
        "3c0000000e0a000000000000f2460000020000100a0001006f7468657200000006000200730000001400030010000100"
        "0c00010008000100c0000203",
        "2c0000000f0a000001000000f246000000000010080001000000001008000200000046f2080003006e667400",
    ],
    # nft delete table ip other
    "deltable": [
        "340000000b0a00000100000055470000020000110a0001006f7468657200000006000200730000000c00100000000000"
        "0000000234000000050a00000100000055470000020000110a0001006f7468657200000006000300630000000c000200"
        "000000000000000134000000020a00000100000055470000020000110a0001006f746865720000000800030000000000"
        "0c0004000000000000000002",
        "2c0000000f0a000001000000554700000000001108000100000000110800020000004755080003006e667400",
    ],
    # iptables -F INPUT (iptables-nft)
    "iptflush": [
        "f8000000080a000002000000c2470000020000130b00010066696c74657200000a000200494e5055540000000c000300"
        "0000000000000002c0000400340001000c0001007061796c6f6164002400020008000100000000010800020000000001"
        "080003000000000c08000400000000042c00010008000100636d70002000020008000100000000010800020000000000"
        "0c00030008000100c00002052c0001000c000100636f756e746572001c0002000c00010000000000000000000c000200"
        "0000000000000000300001000e000100696d6d6564696174650000001c0002000800010000000000100002000c000200"
        "0800010000000000",
        "340000000f0a000002000000c247000000000013080001000000001308000200000047c20d00030069707461626c6573"
        "00000000",
    ],
}


def datagrams(name):
    return [bytes.fromhex(x) for x in CAPTURED[name]]


def events(name):
    return [e for d in datagrams(name) for e in ev.parse(d)]


def nftset_scope(jail="j", direction="in"):
    """The scope NftSetAction gives (its _event_scope), for a jail `j` with one prefix set."""
    key = nftset.jail_key(jail)
    own = {f"{key}_h4", f"{key}_h6"} | {f"{key}_{hook}" for hook, _ in nftset.HOOKS[direction]}
    return ev.Scope(frozenset({(1, "f2b_ext")}), lambda n: n in own or nftset.is_prefix_set_of(jail, n))


IPSET_SCOPE = ev.Scope(frozenset({(2, "filter"), (10, "filter")}), lambda chain: chain in {"INPUT", "FORWARD"})


def verdict(name, scope, ours=lambda pid: False):
    t = ev.Transactions(scope, ours)
    reasons = [r for e in events(name) for r in [t.feed(e)] if r]
    assert len(reasons) <= 1
    return reasons[0] if reasons else None


# what each capture holds: (NFT_MSG name, family, table, object) per message, NEWGEN last
PARSED = {
    "flushset": [("DELSETELEM", 1, "f2b_ext", "j_h4")] * 2,
    "flushinterval": [("DELSETELEM", 1, "f2b_ext", "j_n4_24")] * 3,
    "delelem6": [("DELSETELEM", 1, "f2b_ext", "j_h6")],
    "delrule": [("DELRULE", 1, "f2b_ext", "j_input")],
    "flushchain": [("DELRULE", 1, "f2b_ext", "j_forward")],
    "delchain": [("DELCHAIN", 1, "f2b_ext", "j_forward")],
    "addelem": [("NEWSETELEM", 1, None, None)],
    "delset": [("DELSET", 1, "f2b_ext", "j_h6")],
    "flushruleset": [("DELRULE", 1, "f2b_ext", "j_input"), ("DELSET", 1, "f2b_ext", "j_h4"),
                     ("DELSET", 1, "f2b_ext", "j_n4_24"), ("DELCHAIN", 1, "f2b_ext", "j_input"),
                     ("DELTABLE", 1, "f2b_ext", None)],
    "othertable": [("DELSETELEM", 2, "other", "s")],
    "deltable": [("DELSET", 2, "other", "s"), ("DELCHAIN", 2, "other", "c"), ("DELTABLE", 2, "other", None)],
    "iptflush": [("DELRULE", 2, "filter", "INPUT")],
}


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_every_captured_message_is_read_as_the_kernel_meant_it(name):
    got = events(name)
    assert [(ev.NFT_MSG_NAMES[e.type], e.family, e.table, e.name) for e in got[:-1]] == PARSED[name]
    gen = got[-1]
    assert ev.NFT_MSG_NAMES[gen.type] == "NEWGEN" and gen.pid > 0
    assert gen.command == ("iptables" if name == "iptflush" else "nft")
    assert not any(e.unreadable for e in got)


# the captures that take enforcement away from jail `j` of nftset, and from an ipset-net
# jail (direction in) under iptables-nft; every other capture must not wake a compare
REMOVES_FOR_NFTSET = {"flushset", "flushinterval", "delelem6", "delrule", "flushchain", "delchain", "delset",
                      "flushruleset"}
REMOVES_FOR_IPSET = {"iptflush"}


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_each_capture_wakes_a_compare_exactly_when_it_removed_the_jails_enforcement(name):
    assert (verdict(name, nftset_scope()) is not None) == (name in REMOVES_FOR_NFTSET)
    assert (verdict(name, IPSET_SCOPE) is not None) == (name in REMOVES_FOR_IPSET)


def test_another_jails_sets_and_chains_in_the_shared_table_are_not_this_jails():
    other = nftset_scope("k")
    for name in ("flushset", "flushinterval", "delrule", "flushchain", "delchain", "delset"):
        assert verdict(name, other) is None, name
    assert verdict("flushruleset", other) is not None          # the table itself went


def test_the_reason_names_what_went_and_who_did_it():
    assert verdict("flushset", nftset_scope()) == "element deleted: inet f2b_ext j_h4 (x2) by nft (pid 17092)"
    assert verdict("flushruleset", nftset_scope()) == (
        "rule deleted: inet f2b_ext j_input, set deleted: inet f2b_ext j_h4, set deleted: inet f2b_ext "
        "j_n4_24, 2 more by nft (pid 18052)")
    assert verdict("iptflush", IPSET_SCOPE) == "rule deleted: ip filter INPUT by iptables (pid 18370)"


def test_a_transaction_this_actions_own_thread_committed_is_not_heard():
    pid = events("flushset")[-1].pid
    assert verdict("flushset", nftset_scope(), ours=lambda p: p == pid) is None
    assert verdict("flushset", nftset_scope(), ours=lambda p: p == pid + 1) is not None


def test_a_transaction_split_over_datagrams_is_judged_at_its_newgen():
    t = ev.Transactions(nftset_scope())
    first, second = datagrams("flushset")
    assert [t.feed(e) for e in ev.parse(first)] == [None, None]
    assert [bool(t.feed(e)) for e in ev.parse(second)] == [True]
    assert t.feed(ev.parse(second)[0]) is None            # nothing pending after it


def test_a_huge_transaction_holds_a_count_not_its_messages():
    t = ev.Transactions(nftset_scope())
    element = events("flushset")[0]
    for _ in range(100_000):
        t.feed(element)
    assert len(t.shown) == 1 and t.count == 100_000
    assert "(x100000)" in t.feed(events("flushset")[-1])


# -- built messages: every type, every scope case --
def attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def message(msg: int, family: int = 1, attrs: bytes = b"", subsys: int = ev.NFNL_SUBSYS_NFTABLES) -> bytes:
    body = struct.pack("=BBH", family, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), (subsys << 8) | msg, 0, 0, 4242) + body


def named(msg: int, family: int, table: str, name: str | None) -> bytes:
    """A message of type `msg` whose table attribute (1 in every removing type) and
    object-name attribute are set as the kernel sets them."""
    attrs = attr(1, table.encode() + b"\0")
    name_attr = ev.REMOVES.get(msg, (None, None, 2))[2]
    if name is not None and name_attr is not None:
        attrs += attr(name_attr, name.encode() + b"\0")
    return message(msg, family, attrs)


def gen(pid: int, command: str = "nft") -> bytes:
    return message(ev.NEWGEN, 0, attr(ev.NFTA_GEN_PROC_PID, struct.pack(">I", pid)) + attr(3, command.encode() + b"\0"))


# written from nf_tables.h and nf_tables_api.c independently of the module's table
REMOVING = {"DELTABLE", "DELCHAIN", "DELRULE", "DELSET", "DELSETELEM",
            "DESTROYTABLE", "DESTROYCHAIN", "DESTROYRULE", "DESTROYSET", "DESTROYSETELEM"}


def test_the_removing_types_are_exactly_the_deletions_of_tables_chains_rules_sets_and_elements():
    assert {ev.NFT_MSG_NAMES[t] for t in ev.REMOVES} == REMOVING
    assert ev.NFT_MSG["DELSETELEM"] == 14 and ev.NFT_MSG["NEWGEN"] == 15 and ev.NFT_MSG["DESTROYSETELEM"] == 30


@pytest.mark.parametrize("msg", range(256))
def test_every_message_type_in_and_out_of_the_jails_scope(msg):
    scope = nftset_scope()
    removing = ev.NFT_MSG_NAMES.get(msg) in REMOVING
    kind = ev.REMOVES.get(msg, ("",))[0]
    cases = [((1, "f2b_ext", "j_h4"), removing),                     # the jail's own set / chain name
             ((1, "f2b_ext", "j_input"), removing),
             ((1, "f2b_ext", "j_n4_24"), removing),
             ((1, "f2b_ext", "k_h4"), removing and kind == "table"),  # another jail's (a table is everyone's)
             ((2, "f2b_ext", "j_h4"), False),                        # another family's table of that name
             ((1, "filter", "j_h4"), False)]                         # another table
    if msg == ev.NEWGEN:
        return                                                      # ends a transaction (below)
    for (family, table, name), expected in cases:
        t = ev.Transactions(scope)
        assert t.feed(ev.parse(named(msg, family, table, name))[0]) is None
        assert (t.feed(ev.parse(gen(77))[0]) is not None) == expected, (msg, family, table, name)
    # a removing message that does not say where: compare (cannot tell)
    t = ev.Transactions(scope)
    t.feed(ev.parse(message(msg, 1))[0])
    assert (t.feed(ev.parse(gen(77))[0]) is not None) == removing


def test_other_netfilter_subsystems_are_left_out():
    for subsys in (0, 1, 2, 3, 6, 11, 255):               # ctnetlink, queue, ipset ...
        assert ev.parse(message(ev.NFT_MSG["DELSETELEM"], subsys=subsys)) == []


def test_attribute_flags_do_not_hide_the_attribute():
    nested = struct.pack("=HH", 12, 1 | 0x8000) + b"f2b_ext\0"    # NLA_F_NESTED set
    assert ev.parse(message(ev.NFT_MSG["DELTABLE"], 1, nested))[0].table == "f2b_ext"


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_every_truncation_of_a_real_datagram_is_read_safely(name):
    """A short read never raises: the whole messages before the cut are kept and an
    unreadable one ends the datagram, which wakes a compare."""
    for data in datagrams(name):
        whole = ev.parse(data)
        ends, offset = set(), 0
        while offset < len(data):                               # where each message ends
            offset += (struct.unpack_from("=I", data, offset)[0] + 3) & ~3
            ends.add(offset)
        for cut in set(range(1, len(data))) - ends:
            got = ev.parse(data[:cut])
            assert got and got[-1].unreadable
            assert got[:-1] == whole[:len(got) - 1]
            assert ev.Transactions(nftset_scope()).feed(got[-1]) == "an unreadable nftables message"


@pytest.mark.parametrize("bad", [
    struct.pack("=IHHII", 0, 0x0a0e, 0, 0, 0),                    # nlmsg_len 0
    struct.pack("=IHHII", 15, 0x0a0e, 0, 0, 0),                   # shorter than its header
    struct.pack("=IHHII", 400, 0x0a0e, 0, 0, 0) + b"\0" * 8,      # longer than the datagram
    message(14, 1, struct.pack("=HH", 2, 1)),                     # attribute shorter than its header
    message(14, 1, struct.pack("=HH", 64, 1) + b"f2b_ext\0"),     # attribute past the message
    struct.pack("=IHHII", 18, 0x0a0e, 0, 0, 0) + b"\x01\0",       # no room for nfgenmsg
])
def test_malformed_messages_are_unreadable_not_errors(bad):
    assert ev.parse(bad)[-1].unreadable


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data):
    for event in ev.parse(data):
        ev.removes_enforcement(event, nftset_scope())
        event.describe()


# -- when to compare --
def simulate(times: list[float], check_time: float = 0.0) -> list[float]:
    """The listener's schedule (system.nftevents.EventWatch._loop) on removals arriving
    at `times`: when each compare starts."""
    checks, first = [], None
    last_check, last, cost = -math.inf, None, 0.0
    pending = sorted(times)
    now = 0.0
    while pending or first is not None:
        wake = ev.due(first, last, last_check, cost) if first is not None else math.inf
        if pending and pending[0] < wake:
            now = pending.pop(0)
            first = now if first is None else first
            last = now
        else:
            now = max(now, wake)
            checks.append(now)
            first = None
            last_check, cost = now, check_time
            now += check_time
    return checks


def test_one_flush_is_compared_after_the_debounce():
    assert simulate([10.0]) == [10.0 + ev.DEBOUNCE]
    assert simulate([10.0, 10.05, 10.1]) == [pytest.approx(10.1 + ev.DEBOUNCE)]


def test_a_slow_compare_spaces_the_next_to_keep_its_share():
    """A compare of a big jail that took 0.4 s: the next starts 0.4 / MAX_SHARE s after
    it began."""
    storm = [i * 0.01 for i in range(1000)]
    checks = simulate(storm, check_time=0.4)
    assert checks[0] == pytest.approx(ev.MAX_DELAY)
    assert checks[1] - checks[0] == pytest.approx(0.4 / ev.MAX_SHARE)


def test_a_steady_storm_cannot_postpone_the_compare_beyond_max_delay():
    storm = [i * 0.01 for i in range(1000)]                         # 10 s, 100 a second
    checks = simulate(storm)
    assert checks[0] == pytest.approx(ev.MAX_DELAY)
    assert all(b - a <= ev.MAX_DELAY + 1 / ev.MAX_PER_SECOND for a, b in zip(checks, checks[1:]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), min_size=1, max_size=400),
       st.floats(min_value=0, max_value=2))
def test_no_storm_causes_more_than_max_per_second_compares_nor_more_than_max_share(times, check_time):
    checks = simulate(times, check_time)
    assert all(b - a >= 1 / ev.MAX_PER_SECOND - 1e-9 for a, b in zip(checks, checks[1:]))
    assert all(b - a >= check_time / ev.MAX_SHARE - 1e-9 for a, b in zip(checks, checks[1:]))
    # and every removal is followed by a compare that starts after it
    assert all(any(c >= t for c in checks) for t in times)
