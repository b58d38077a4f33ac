"""found-limit.py: a jail writes at most `rate` of fail2ban's per-failure "Found" lines,
says how many it held back, and fail2ban still counts and bans every failure.

The window rules on plain data (f2b_ext.core.foundlog); then a real fail2ban-server (as
nobody) with two jails on one log, one with the action and one without: the first
writes fewer Found lines, its summaries account for every line it did not write, both
count every failure, and a source with three lines is banned by both."""
from __future__ import annotations

import ipaddress
import re
import time

import pytest

from conftest import is_root
from f2b_ext.core.escalation import ConfigError
from f2b_ext.core.foundlog import FoundLimit, FoundWindow


@pytest.mark.parametrize("text, limit", [("20/1s", FoundLimit(20, 1)), ("20", FoundLimit(20, 1)),
                                         ("100/10s", FoundLimit(100, 10)), (" 5 / 1m ", FoundLimit(5, 60)),
                                         ("none", FoundLimit(0, 1)), ("0", FoundLimit(0, 1))])
def test_rate_parses(text, limit):
    assert FoundLimit.parse(text) == limit


@pytest.mark.parametrize("text", ["", "-1", "20/0s", "twenty", "20/1s/2", "1.5/1s"])
def test_a_bad_rate_names_the_parameter(text):
    with pytest.raises(ConfigError, match="rate"):
        FoundLimit.parse(text)


def test_the_first_lines_of_a_window_pass_and_the_rest_are_reported_once():
    w = FoundWindow(FoundLimit(3, 1))
    assert [w.admit(100.0 + i / 100) for i in range(5)] == [(True, None)] * 3 + [(False, None)] * 2
    # the next window: its first line passes and brings the count held back, once
    assert w.admit(101.5) == (True, (2, 100.03))
    assert w.admit(101.6) == (True, None)


def test_held_lines_add_up_over_windows_until_one_line_is_written():
    w = FoundWindow(FoundLimit(1, 1))
    results = [w.admit(t) for t in (0.0, 0.1, 0.2, 1.0, 1.5, 2.5)]
    assert results == [(True, None), (False, None), (False, None), (True, (2, 0.1)), (False, None), (True, (1, 1.5))]
    written = sum(ok for ok, _ in results)
    assert written + sum(r[0] for _, r in results if r) == len(results)


def test_no_limit_writes_every_line():
    w = FoundWindow(FoundLimit.parse("none"))
    assert all(w.admit(0.0) == (True, None) for _ in range(1000))


def test_a_clock_going_back_starts_a_new_window():
    w = FoundWindow(FoundLimit(1, 60))
    assert w.admit(1000.0) == (True, None)
    assert w.admit(1001.0) == (False, None)
    assert w.admit(500.0) == (True, (1, 1001.0))


LINE = ("{stamp} lab kernel: [  444.910152] FINAL_REJECT: IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:86:dd "
        "SRC={src} DST=2001:0db8:0000:0000:0000:0000:0000:0001 LEN=60 TC=0 HOPLIMIT=64 FLOWLBL=1 PROTO=TCP "
        "SPT=40000 DPT={dpt} WINDOW=1024 RES=0x00 SYN URGP=0")
JAILS = """[DEFAULT]
ignoreself = false
usedns = no
filter = netfilter[direction=in]
backend = polling
logpath = {log}
maxretry = 3
findtime = 10m

[limited]
enabled = true
action = found-limit.py[rate=5/1s]

[whole]
enabled = true
action =
"""
SUMMARY = re.compile(r"\[limited\] (\d+) Found lines not written since \d\d:\d\d:\d\d \(found-limit: at most 5 per 1s\)")


@pytest.mark.fail2ban
@pytest.mark.skipif(not is_root(), reason="runs fail2ban-server as nobody (needs root to switch)")
def test_a_limited_jail_writes_fewer_found_lines_and_counts_and_bans_every_failure():
    from f2b_ext.lab.fail2ban_server import Fail2banServer

    def line(src: str, dpt: int = 23) -> str:
        return LINE.format(stamp=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), src=src, dpt=dpt)

    def counted(jail: str) -> int:
        return int(re.search(r"Total failed:\s*(\d+)", f2b.client("status", jail).stdout).group(1))

    forged = [ipaddress.IPv6Address((0x20010db8 << 96) | (i + 1) << 16).exploded for i in range(60)]
    scanner = ipaddress.IPv6Address("2001:db8:5ca::7").exploded
    f2b = Fail2banServer(JAILS)
    try:
        f2b.start(jail="whole")
        f2b.wait_for(lambda: "found-limit: at most 5 Found lines per 1s" in f2b.server_log(), what="found-limit")
        f2b.append(*(line(src) for src in forged), *(line(scanner, dpt) for dpt in (23, 25, 80)))
        for jail in ("limited", "whole"):
            f2b.wait_for(lambda: counted(jail) == 63, timeout=120, what=f"{jail} to count every line")
        time.sleep(1.5)             # a new window: the next Found line is written and reports the rest
        f2b.append(line(ipaddress.IPv6Address("2001:db8:ffff::1").exploded))
        f2b.wait_for(lambda: "[limited] Found 2001:db8:ffff::1 " in f2b.server_log(), timeout=60,
                     what="the last line's Found line")
        for jail in ("limited", "whole"):       # fail2ban logs a Found line before it counts the failure
            f2b.wait_for(lambda: counted(jail) == 64, timeout=60, what=f"{jail} to count the last line")
        for jail in ("limited", "whole"):       # each jail's actions thread bans in its own time
            f2b.wait_for(lambda: f"[{jail}] Ban 2001:db8:5ca::7" in f2b.server_log(), what=f"{jail}'s ban")
        log = f2b.server_log()
        written = log.count("[limited] Found ")
        held = sum(int(n) for n in SUMMARY.findall(log))
        assert log.count("[whole] Found ") == 64                 # another jail's lines are untouched
        assert written < 64 and held > 0, (written, held)
        assert written + held == 64, (written, held)              # every failure is written or accounted for
        for jail in ("limited", "whole"):                        # and bans are not affected
            assert f"[{jail}] Ban 2001:db8:5ca::7" in log
            assert "2001:db8:5ca::7" in f2b.client("status", jail).stdout
    finally:
        f2b.close()
