"""Faults in the live lab (real kernel, rsyslog, fail2ban-server; nftset under an nft
firewall and ipset-net under iptables-nft): kill -9, restart, reload, reload without
the ban action and back, a bad parameter on restart, `nft flush set` / `ipset flush`.
A prober sends SYNs every 5 ms from a banned host, a member of a banned /24 and a member
of a banned /16 for the whole test; after each step fail2ban's list, its database and
the kernel's sets are compared, and the prober must have had no answer (except while the
admin's configuration has no ban action at all). The table printed at the end is the
one in the report (pytest -s shows it)."""
from __future__ import annotations

import time

import pytest

from f2b_ext.lab.live import (LiveLab, LiveSettings, Prober, database_bans, environment_problems, kernel_elements,
                          listed_with_ends)

problems = environment_problems()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(bool(problems), reason="; ".join(problems))]

BANS = {"198.51.100.7": "host", "203.0.113.0/24": "/24", "198.18.0.0/16": "/16"}
PROBES = ["198.51.100.7", "203.0.113.77", "198.18.44.5"]
CONTROL = "198.51.100.8"     # never banned: its answers prove the prober sees answers at all
JAIL = "netfilter-in"
TOLERANCE = 3          # seconds between fail2ban's expiry and the kernel's (whole-second timeouts, reading time)


def compare(live) -> str:
    """'' when fail2ban's list, its database and the kernel agree, else what differs."""
    listed = listed_with_ends(live.f2b, JAIL)
    stored = database_bans(live.f2b, JAIL)
    held = kernel_elements(live.lab, live.settings.banaction, JAIL)
    problems = []
    if set(listed) != set(held):
        problems.append(f"list-kernel: listed only {sorted(map(str, set(listed) - set(held)))}, "
                        f"kernel only {sorted(map(str, set(held) - set(listed)))}")
    if not set(listed) <= set(stored):
        problems.append(f"not in the database: {sorted(map(str, set(listed) - set(stored)))}")
    for net, left in listed.items():
        have = held.get(net, "absent")
        if have != "absent" and (left is None) != (have is None) or (
                left is not None and have not in (None, "absent") and abs(left - have) > TOLERANCE):
            problems.append(f"expiry of {net}: fail2ban {left}, kernel {have}")
    return "; ".join(problems)


def settle(live, timeout=15):
    """Wait until the three sides agree (the watchdog runs every second); the difference
    when they never do."""
    last = []
    ok = live.until(lambda: not last.append(compare(live)) and not last[-1], timeout, every=0.3)
    return "" if ok else last[-1]


def write_jails(live, text: str):
    (live.f2b.conf / "jail.local").write_text(text)


@pytest.mark.parametrize("setup", [("nft", "nftset"), ("iptables-nft", "ipset-net")], ids=["nftset", "ipset-net"])
def test_no_fault_opens_a_window(setup, capsys):
    firewall, banaction = setup
    settings = LiveSettings(firewall=firewall, banaction=banaction, bantime=3600, checkinterval=1)
    rows = []
    with LiveLab(settings) as live:
        good = live.jails()
        for target in BANS:
            live.f2b.client("set", JAIL, "banip", target)
        assert settle(live) == ""
        with Prober(live.lab, PROBES + [CONTROL]) as prober:
            def banned_answers(name):
                return len([src for src in prober.answers[name] if src != CONTROL])

            def step(name, act, expect_open=False):
                prober.phase(name)
                try:
                    act()
                except Exception as exc:
                    lines = [x[:300] for x in live.f2b.server_log().splitlines() if "ERROR" in x or "nftset" in x or "ipset" in x or "Jail" in x]
                    raise AssertionError(f"{name}: {exc}\n" + "\n".join(lines[-40:])) from None
                differs = settle(live)
                count = len(live.f2b.client("get", JAIL, "banip", check=False).stdout.split())
                answers = banned_answers(name)
                rows.append((name, prober.sent[name], answers, count, differs or "agree"))
                if not expect_open:
                    assert answers == 0, f"{name}: {answers} answers to banned sources"
                assert differs == "", f"{name}: {differs}"

            def kill_restart():
                live.kill_fail2ban()
                live.start_fail2ban()

            def restart():
                live.f2b.stop()
                live.start_fail2ban()

            def reload():
                live.f2b.client("reload")

            def drop_action():
                write_jails(live, good.replace(f"action = {banaction}.py[direction=in, checkinterval=1]\n         ",
                                               "action = "))
                live.f2b.client("reload")

            def back():
                write_jails(live, good)
                live.f2b.client("reload")

            def bad_parameter():
                write_jails(live, good.replace("[direction=in, checkinterval=1]", "[direction=in, checkinterval=1, batch=soon]"))
                live.f2b.stop()
                live.start_fail2ban()
                live.f2b.wait_for(lambda: "Jail 'netfilter-in' stopped: " in live.f2b.server_log(), what="the jail stopped")
                assert "batch: 'soon'" in live.f2b.server_log()
                live.f2b.wait_for(lambda: live.f2b.client("status", JAIL, check=False).returncode != 0,
                                  what="the jail gone from fail2ban-client status")

            def fixed():
                write_jails(live, good)
                live.f2b.stop()
                live.start_fail2ban()

            def flush_set():
                if banaction == "nftset":
                    live.lab.server_sh("nft", "flush", "set", "inet", "f2b_ext", "netfilter_in_n4_24")
                    live.lab.server_sh("nft", "flush", "set", "inet", "f2b_ext", "netfilter_in_h4")
                else:
                    live.lab.server_sh("ipset", "flush", "f2bx-netfilter-in-4")

            step("baseline", lambda: live.until(lambda: CONTROL in prober.answers["baseline"], 5))
            assert CONTROL in prober.answers["baseline"], "the prober sees no answer even from an unbanned source"
            step("kill -9, start", kill_restart)
            step("restart", restart)
            step("reload", reload)
            # the admin's config has no ban action: nothing enforces (fail2ban's choice, not a fault)
            prober.phase("reload without the action")
            drop_action()
            rows.append(("reload without the action", prober.sent["reload without the action"],
                         banned_answers("reload without the action"),
                         len(live.f2b.client("get", JAIL, "banip").stdout.split()), "(no ban action configured)"))
            # answered until the reload that brings the action back returns (the kernel was
            # empty by the admin's choice); from then on, never
            step("reload with it again", back, expect_open=True)
            step("1 s after it is back", lambda: time.sleep(1))
            # a bad parameter: the jail stops with one line; the kernel keeps the bans it had
            prober.phase("restart with a bad parameter")
            bad_parameter()
            time.sleep(2)                       # the prober keeps knocking while the jail is down
            answers = banned_answers("restart with a bad parameter")
            rows.append(("restart with a bad parameter", prober.sent["restart with a bad parameter"], answers, 0,
                         "jail stopped, one ERROR line"))
            assert answers == 0
            assert len(kernel_elements(live.lab, banaction, JAIL)) == 3, "the kernel keeps the bans while the jail is stopped"
            step("fixed, restart", fixed)
            restored = live.f2b.client("get", JAIL, "banip").stdout.split()
            assert sorted(restored) == sorted(BANS), f"bans restored: {restored}"
            step("flush set", flush_set, expect_open=True)   # open until the watchdog's next round (1 s)
            step("1 s after the repair", lambda: time.sleep(1))
    with capsys.disabled():
        print(f"\n{banaction}: step | probes sent (4 sources) | answers to banned sources | bans listed | list/db/kernel")
        for row in rows:
            print(" | ".join(str(c) for c in row))
