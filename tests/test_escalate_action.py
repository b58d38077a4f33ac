"""The subnet-escalate action inside a real fail2ban-server: start-up validation, reload,
admin bans, what fail2ban-client shows."""
from __future__ import annotations

import contextlib
import re
import time

import pytest

from conftest import ROOT, is_root
from f2b_ext.plugins.subnet_escalate import build
from f2b_ext.system.host import own_addresses
from f2b_ext.core.escalation import ConfigError

pytestmark = pytest.mark.skipif(not is_root(), reason="runs fail2ban-server as nobody (needs root to switch)")

def server(params: str):
    from f2b_ext.lab.fail2ban_server import Fail2banServer
    from conftest import escalate_jail
    return Fail2banServer(escalate_jail(params))


@contextlib.contextmanager
def running(params: str):
    """A started server with jail `escalate` running subnet-escalate.py[params]."""
    s = server(params)
    try:
        yield s.start()
    finally:
        s.close()


def prop(s, name: str) -> str:
    return s.client("get", "escalate", "action", "subnet-escalate", name).stdout


@pytest.mark.parametrize("params,named", [
    ('hosts="many"', "hosts"), ('schedule="1h forever"', "schedule"), ('window="-5"', "window"),
    ('spoofable="yes"', "spoofable"), ('protect="203.0.113.0/33"', "protect"),
    ('ladder4="24:5 8:2"', "ladder4"), ('hots="5"', "unknown parameter")])
def test_bad_parameters_stop_the_jail_with_the_parameter_named(params, named):
    """fail2ban refuses the configuration at start-up and says which parameter is wrong."""
    s = server(params + ', bogons="none"')
    try:
        with pytest.raises(RuntimeError, match="fail2ban-server exited"):
            s.start(timeout=15)
        nok = [line for line in s.server_log().splitlines() if "ERROR   NOK:" in line]
        assert len(nok) == 1 and re.search(rf"""\(["']subnet-escalate: {named}""", nok[0]), s.server_log()[-2000:]
        # one line from us; fail2ban's own shutdown may race and print its traceback, but
        # none may come from this suite's code
        blocks = s.server_log().split("Traceback (most recent call last):")[1:]
        ours = [b for b in blocks if "f2b_ext" in re.split(r"\n\d{4}-\d\d-\d\d ", b, maxsplit=1)[0]]
        assert not ours, s.server_log()[-3000:]
    finally:
        s.close()


def test_build_names_the_parameter():
    with pytest.raises(ConfigError, match="maxprefix4"):
        build({"maxprefix4": "40"}, [])
    with pytest.raises(ConfigError, match="nets"):
        build({"nets": "1"}, [])


def test_own_addresses_are_read_from_the_interfaces():
    assert "127.0.0.1" in own_addresses()


def test_reload_keeps_the_action_its_bans_and_its_counts():
    from conftest import kernel_line
    with running('hosts="3", schedule="1h", bogons="none"') as s:
        s.append(*[kernel_line(f"203.0.113.{i}") for i in (1, 2, 3)], kernel_line("198.51.100.7"))
        s.wait_for(lambda: "203.0.113.0/24" in s.bans("escalate"), what="escalation")
        before = prop(s, "counting")
        s.client("reload")
        time.sleep(1.0)
        assert "subnet-escalate" in s.client("get", "escalate", "actions").stdout
        assert "203.0.113.0/24" in s.bans("escalate")
        assert "203.0.113.0/24" in prop(s, "escalations")
        assert "198.51.100.0/24 1" in before
        assert prop(s, "counting") == before


def test_an_admins_subnet_ban_is_respected_and_not_doubled():
    from conftest import kernel_line
    with running('hosts="3", schedule="1h", bogons="none"') as s:
        s.client("set", "escalate", "banip", "203.0.113.0/24")
        s.append(*[kernel_line(f"203.0.113.{i}") for i in (1, 2, 3, 4)])
        s.wait_for(lambda: len(s.bans("escalate")) >= 5, what="host bans")
        time.sleep(1.5)
        assert "] Escalate " not in s.server_log()
        assert prop(s, "status").startswith("escalated 0")


def test_what_fail2ban_client_shows():
    from conftest import kernel_line
    with running('hosts="3", schedule="1h 6h", forgedschedule="50m", bogons="none"') as s:
        s.append(*[kernel_line(f"2001:db8:5::{i}") for i in (1, 2, 3)])
        s.wait_for(lambda: "2001:db8:5::/64" in s.bans("escalate"), what="escalation")
        assert prop(s, "status").startswith("escalated 1, active 1")
        assert "2001:db8:5::/64 until " in prop(s, "escalations")
        # soonest first: the three host bans (600 s) end before the /64 (3000 s: a kernel
        # line is forgeable evidence, so the forged schedule)
        unbans = prop(s, "unbans").splitlines()
        assert sorted(line.rsplit(" ", 1)[1] for line in unbans[:3]) == [f"2001:db8:5::{i}" for i in (1, 2, 3)]
        assert len(unbans) == 4 and unbans[3].endswith(" 2001:db8:5::/64")
        assert "2001:db8:5::/64" in s.client("status", "escalate").stdout
        assert s.bans("escalate")["2001:db8:5::/64"] == 3000
        assert ("Escalate 2001:db8:5::/64 for 3000s (3 hosts banned within 3600s; escalation #1; "
                "forgeable evidence)") in s.server_log()


def test_a_forged_flood_over_many_24s_stays_within_the_breaker_and_every_escalation_ends():
    """Forged lines from 5 hosts in each of 40 /24s: the breaker lets 4 escalations
    through (maxrate=4/1h), each on the short forged schedule, says why it paused in the
    status and the log, and every escalated prefix is released on time. The forged
    schedule is 15 s, not shorter: on a loaded machine (load 20) a 4 s ban was released
    before the test had listed it."""
    from conftest import kernel_line
    with running('hosts="5", maxrate="4/1h", forgedschedule="15s", schedule="1h", bogons="none"') as s:
        s.append(*[kernel_line(f"198.18.{third}.{h}") for third in range(40) for h in range(1, 6)])
        s.wait_for(lambda: "Total failed:\t200" in s.client("status", "escalate").stdout, what="200 failures read")
        s.wait_for(lambda: prop(s, "status").startswith("escalated 4"), what="four escalations")
        time.sleep(1.5)
        escalated = [line for line in s.server_log().splitlines() if "] Escalate " in line]
        assert len(escalated) == 4 and all(" for 15s (" in line and "forgeable evidence" in line for line in escalated)
        status = prop(s, "status")
        assert "paused: " in status and "maxrate 4/3600s" in status, status
        assert "unproven 4/4 in 3600s" in status
        prefixes = [p for p in s.bans("escalate") if "/" in p]
        assert len(prefixes) == 4 and all(s.bans("escalate")[p] == 15 for p in prefixes)
        s.wait_for(lambda: not any("/" in p for p in s.bans("escalate")), timeout=40, what="the prefixes released")
        assert prop(s, "escalations").strip() == "none"


def test_dependencies_are_in_fail2bans_ignore_list_and_never_banned():
    """The machine's own addresses and its gateways (whatever this machine has) are in the
    jail's ignore list at start; a line from one is ignored by fail2ban itself."""
    from conftest import kernel_line
    from f2b_ext.system.host import gather
    found = {str(d.net.network_address): d.source for d in gather().found if d.net.version == 4}
    target = next((a for a, src in found.items() if src == "gateway"), None) or \
        next(a for a, src in found.items() if src == "this-host" and not a.startswith("127."))
    with running('hosts="5", bogons="none"') as s:
        assert target in s.client("get", "escalate", "ignoreip").stdout
        assert f"{target} {found[target]}" in prop(s, "dependencies")
        s.append(kernel_line(target), kernel_line("198.51.100.7"))
        s.wait_for(lambda: "198.51.100.7" in s.bans("escalate"), what="the other host banned")
        assert target not in s.bans("escalate")
        assert f"Ignore {target} by ip" in s.server_log()


def test_the_default_schedule_has_one_home():
    """Schedule()'s defaults are the parameters' defaults (escalation.DEFAULT_*), which the
    action's DEFAULTS and action.d/subnet-escalate.py's header state."""
    from f2b_ext.core.escalation import DEFAULT_FORGED_SCHEDULE, DEFAULT_FORGET, DEFAULT_SCHEDULE, Schedule
    from f2b_ext.plugins.subnet_escalate import DEFAULTS
    assert Schedule() == Schedule.parse(DEFAULT_SCHEDULE, None, None, DEFAULT_FORGET, DEFAULT_FORGED_SCHEDULE)
    assert Schedule().steps == (3600, 6 * 3600, 86400, 7 * 86400) and Schedule().forged == (1800,)
    assert (DEFAULTS["schedule"], DEFAULTS["forget"], DEFAULTS["forgedschedule"]) == \
        (DEFAULT_SCHEDULE, DEFAULT_FORGET, DEFAULT_FORGED_SCHEDULE)
    header = (ROOT / "action.d" / "subnet-escalate.py").read_text()
    assert f'schedule="{DEFAULT_SCHEDULE}"' in header and f"forget={DEFAULT_FORGET}" in header

