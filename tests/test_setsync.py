"""setsync: the set actions' invariant as a plain function (pure)."""
from __future__ import annotations

import ipaddress

from f2b_ext.core import ipset, setsync

N = ipaddress.ip_network


def test_what_fail2ban_lists_and_the_kernel_lacks_is_added():
    p = setsync.plan({N("192.0.2.7/32"): 600.0, N("198.51.100.0/24"): None}, {})
    assert sorted(map(str, (n for n, _ in p.add))) == ["192.0.2.7/32", "198.51.100.0/24"]
    assert not p.remove and not p.retime and p


def test_equal_sides_need_nothing_within_the_tolerance():
    listed = {N("192.0.2.7/32"): 600.0, N("2001:db8::/64"): None}
    assert not setsync.plan(listed, {N("192.0.2.7/32"): 598.5, N("2001:db8::/64"): None}, tolerance=2)


def test_a_wrong_expiry_is_retimed_to_fail2bans():
    """kill -9 then a re-read log: the kernel said 4 h while fail2ban said 1 h."""
    p = setsync.plan({N("192.0.2.7/32"): 3600.0, N("192.0.2.8/32"): None, N("192.0.2.9/32"): 60.0},
                     {N("192.0.2.7/32"): 14400.0, N("192.0.2.8/32"): 60.0, N("192.0.2.9/32"): None})
    assert sorted((str(n), t) for n, t in p.retime) == [("192.0.2.7/32", 3600.0), ("192.0.2.8/32", None),
                                                        ("192.0.2.9/32", 60.0)]
    assert not p.add and not p.remove


def test_kernel_extras_go_unless_the_database_is_about_to_restore_them():
    held = {N("192.0.2.7/32"): 60.0, N("198.51.100.0/24"): 60.0}
    assert setsync.plan({}, held).remove == list(held)
    assert setsync.plan({}, held, keep={N("198.51.100.0/24")}).remove == [N("192.0.2.7/32")]


def test_listed_sets_aside_texts_that_are_not_addresses():
    nets, bad = setsync.listed([("999.0.2.7", 0, 600), ("192.0.2.7", 0, 600), ("198.51.100.0/24", 0, -1),
                                ("192.0.2.8", 0, 10)], now=100)
    assert bad == ["999.0.2.7"]
    assert nets == {N("192.0.2.7/32"): 500, N("198.51.100.0/24"): None}     # .8 expired


def test_summary_names_what_was_fixed():
    p = setsync.plan({N(f"192.0.2.{i}/32"): 60.0 for i in range(7)}, {N("198.51.100.1/32"): 5.0})
    text = p.summary()
    assert text.startswith("added 7 (192.0.2.0/32, ") and ", ...)" in text and "removed 1 (198.51.100.1/32)" in text


def test_ipset_save_is_read_back():
    text = ("create f2bx-j-4 hash:net family inet hashsize 1024 maxelem 1048576 timeout 0\n"
            "add f2bx-j-4 192.0.2.7 timeout 597\nadd f2bx-j-4 198.51.100.0/24 timeout 0\n")
    assert ipset.parse_save(text) == {N("192.0.2.7/32"): 597.0, N("198.51.100.0/24"): None}


def test_ipset_names_never_collide():
    names = ["a-b", "a_b", "a b", "a/b", "x" * 40, "x" * 41]
    assert len({ipset.set_name(n, 4) for n in names}) == len(names)
    assert all(len(ipset.set_name(n, 6)) <= ipset.SET_NAME_MAX for n in names)
