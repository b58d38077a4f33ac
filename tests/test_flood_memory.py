"""The shipped jails bound what a flood of forged sources makes fail2ban hold.

fail2ban's FailManager keeps one ticket (about 1.6 KB, its line included) for every
address with a line and no ban yet, and drops it `findtime` after its last line; a
first line is kept whole whatever `maxmatches` says. So a random-source flood holds
rate x findtime tickets: the shipped jails' findtime is the bound. First the jails'
effective settings as fail2ban's own JailsReader resolves them; then a real
fail2ban-server (as nobody) reads a log of 3,000 forged sources spread over the last
three minutes with the shipped [f2b-ext-inbound] and, beside it on the same log, the
same filter with fail2ban's defaults: the shipped jail holds only the last minute's
sources, the defaults hold all. Memory over time under a 10-minute flood is a benchmark
(bench/flood_memory.py, BENCHMARKS.md), not a test."""
from __future__ import annotations

import ipaddress
import re
import shutil
import time

import pytest

from conftest import ROOT, is_root

MAX_FINDTIME = {"f2b-ext-inbound": 60, "f2b-ext-firewalld": 60, "f2b-ext-ufw": 60, "f2b-ext-ipfw": 60,
                "f2b-ext-synrecv": 60, "f2b-ext-gre": 120}
ONE_LINE_BANS = ("f2b-ext-outbound",)       # maxretry 1: every line bans, no ticket is held


def shipped_settings(tmp_path) -> dict[str, dict[str, str]]:
    """{jail: {option: value}} of every shipped jail, enabled, as fail2ban's
    JailsReader turns them into server commands (stock jail.conf underneath)."""
    from fail2ban.client.jailsreader import JailsReader
    from f2b_ext.system.filter_runner import config_dir
    conf = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf)
    for stock in (conf / "jail.d").glob("*"):
        stock.unlink()
    config_dir(conf)
    jails = list(MAX_FINDTIME) + list(ONE_LINE_BANS)
    (conf / "jail.local").write_text("".join(f"[{j}]\nenabled = true\n" for j in jails))
    reader = JailsReader(basedir=str(conf), force_enable=False)
    assert reader.read() and reader.getOptions()
    settings: dict[str, dict[str, str]] = {}
    for cmd in reader.convert(allow_no_files=True):
        if cmd[0] == "set" and len(cmd) == 4 and cmd[2] in ("findtime", "maxretry", "maxmatches"):
            settings.setdefault(cmd[1], {})[cmd[2]] = str(cmd[3])
    assert set(settings) == set(jails), settings
    return settings


def test_shipped_jails_hold_a_forged_source_for_at_most_two_minutes(tmp_path):
    from fail2ban.server.mytime import MyTime
    settings = shipped_settings(tmp_path)
    for jail, bound in MAX_FINDTIME.items():
        assert MyTime.str2seconds(settings[jail]["findtime"]) <= bound, (jail, settings[jail])
    assert settings["f2b-ext-inbound"]["findtime"] in ("60", "1m")
    for jail in ONE_LINE_BANS:
        assert settings[jail]["maxretry"] == "1", (jail, settings[jail])


LINE = ("{stamp} lab kernel: [  444.910152] FINAL_REJECT: IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:86:dd "
        "SRC={src} DST=2001:0db8:0000:0000:0000:0000:0000:0001 LEN=60 TC=0 HOPLIMIT=64 FLOWLBL=1 PROTO=TCP "
        "SPT=40000 DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0")
SOURCES, SPAN = 3000, 180.0            # forged sources, one line each, over the last 3 minutes
MARKER = "2001:db8:ffff::1"             # the last line: both jails have read everything


def failed(f2b, jail: str) -> tuple[int, int]:
    """(currently failed, total failed) of `fail2ban-client status JAIL`."""
    out = f2b.client("status", jail).stdout
    return tuple(int(re.search(rf"{what}:\s*(\d+)", out).group(1)) for what in ("Currently failed", "Total failed"))


@pytest.mark.skipif(not is_root(), reason="runs fail2ban-server as nobody (needs root to switch)")
def test_a_forged_flood_is_held_for_findtime_only():
    from f2b_ext.lab.fail2ban_server import Fail2banServer
    local = """[DEFAULT]
ignoreself = false
usedns = no

[f2b-ext-inbound]
enabled = true
backend = polling
logpath = {log}
action =

# the same filter with fail2ban's defaults (findtime 10m, maxmatches = maxretry)
[defaults]
enabled = true
filter = netfilter[direction=in]
backend = polling
logpath = {log}
maxretry = 3
action =
"""
    f2b = Fail2banServer(local)
    try:
        now = time.time()
        stamps = [now - SPAN + SPAN * i / SOURCES for i in range(SOURCES)]
        lines = [LINE.format(stamp=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t)),
                             src=ipaddress.IPv6Address((0x20010db8 << 96) | (i + 1) << 16).exploded)
                 for i, t in enumerate(stamps)]
        lines.append(LINE.format(stamp=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now)),
                                 src=ipaddress.IPv6Address(MARKER).exploded))
        f2b.start(jail="defaults")
        f2b.append(*lines)
        for jail in ("f2b-ext-inbound", "defaults"):
            f2b.wait_for(lambda: f"[{jail}] Found {MARKER}" in f2b.server_log(), timeout=120,
                         what=f"{jail} to read the whole flood")
        held, total = failed(f2b, "f2b-ext-inbound")
        held_by_defaults, _ = failed(f2b, "defaults")
        # fail2ban's defaults hold every source (the workload fills what it is not bounded)
        assert held_by_defaults == SOURCES + 1
        # the shipped jail: only lines of the last minute entered, and each leaves a
        # minute after it came; the read happened after `now`, so at most this many
        within = sum(1 for t in stamps if t > now - 60) + 1
        assert 0 < held <= total <= within, (held, total, within)
        assert held < SOURCES / 2
    finally:
        f2b.close()
