"""tests/scenarios/escalation.yaml, through the pure core and through a real fail2ban-server."""
from __future__ import annotations

import ipaddress
import time

import pytest
import yaml

from conftest import ROOT, is_root
from f2b_ext.core.escalation import on_ban
from f2b_ext.plugins.subnet_escalate import build

SCENARIOS = yaml.safe_load((ROOT / "tests/scenarios/escalation.yaml").read_text())
HOST_BANTIME = 600
IDS = [s["name"] for s in SCENARIOS]


def action_params(scenario) -> dict:
    params = {k: str(v) for k, v in scenario.get("action", {}).items()}
    params.setdefault("bogons", "none")          # scenarios live on documentation ranges
    params.setdefault("peers", "allow")          # this machine's own connections are not the scenario's
    return params


def attack_of(step):
    a = step["attack"]
    return (a, "TCP") if isinstance(a, list) else (a["hosts"], str(a.get("proto", "TCP")))


class CoreDriver:
    """Plays a scenario on the pure core with simulated time. Every ban fail2ban would
    hand the action (a host from the filter, a prefix the action queued, each restored
    after a restart) goes through escalation.on_ban, the same decision the action makes
    (BAN_KINDS); what stands in for fail2ban here is its bookkeeping: the live bans, their
    tickets' data and its database's ban counts."""

    def __init__(self, scenario):
        self.params = action_params(scenario)
        self.ignore = [ipaddress.ip_network(n, strict=False) for n in ["127.0.0.1/8", "::1"] + scenario.get("ignoreip", [])]
        self.now = 1_000_000.0
        self.bans: dict = {}           # address or prefix -> (start, length, the ticket's data)
        self.history: dict = {}        # prefix -> (ban count, time of last ban): fail2ban's db
        self.core, self.schedule = build(self.params, [str(n) for n in self.ignore])

    def attack(self, hosts, proto):
        for h in hosts:
            if any(ipaddress.ip_address(h) in n for n in self.ignore):
                continue
            self.ban(h, HOST_BANTIME, {"proto": proto, "dir": "IN"})

    def ban(self, target, length, data, restored=False):
        """fail2ban bans `target` and calls the action; the action bans what the core proposes."""
        start = self.bans[target][0] if restored else self.now
        self.bans[target] = (start, length, data)
        last = float("-inf")
        if restored and "/" not in target:
            around = ipaddress.ip_network(f"{target}/{self.core.ladder.rungs[4][0][0]}", strict=False)
            last = self.history.get(around, (0, float("-inf")))[1]
        kind, pending = on_ban(self.core, target, data, restored, start, start + length, self.now, last)
        assert kind == ("host" if "/" not in target else "ours-restored" if restored else "ours")
        while pending:                          # the action's _escalate: a ticket for fail2ban
            c = pending.pop(0)
            prior = self.history.get(c.net, (0, 0))[0]
            length = self.schedule.ban_time(prior, c.evidence, 0.0)
            self.history[c.net] = (prior + 1, self.now)
            pending += self.core.mark_banned(c.net, self.now + length, self.now, c.evidence)
            # ... which fail2ban bans, calling the action again with the ticket's data
            self.ban(str(c.net), length, {"escalation": c.reason, "evidence": c.evidence.label})

    def sleep(self, seconds):
        self.now += seconds
        for key, (start, length, _) in list(self.bans.items()):
            if start + length <= self.now:
                del self.bans[key]
                if "/" in key:
                    self.core.forget_ban(ipaddress.ip_network(key))

    def restart(self):
        """fail2ban restores its live bans, oldest first, into a new action."""
        self.core, self.schedule = build(self.params, [str(n) for n in self.ignore])
        for key, (start, length, data) in sorted(self.bans.items(), key=lambda kv: kv[1][0]):
            self.ban(key, length, data, restored=True)

    def current(self) -> dict:
        return {k: length for k, (start, length, _) in self.bans.items()}

    def settle(self, done):
        """The core answers at once: nothing to wait for."""


class ServerDriver:
    def __init__(self, scenario):
        from f2b_ext.lab.fail2ban_server import Fail2banServer
        from conftest import escalate_jail
        params = ", ".join(f'{k}="{v}"' for k, v in action_params(scenario).items())
        ignore = " ".join(["127.0.0.1/8", "::1"] + scenario.get("ignoreip", []))
        self.server = Fail2banServer(escalate_jail(params, ignore, HOST_BANTIME))
        self.server.start()
        self.seen = 0

    def attack(self, hosts, proto):
        from conftest import kernel_line
        self.server.append(*[kernel_line(h, proto) for h in hosts])
        self.seen += len(hosts)
        self.server.wait_for(lambda: self.server.client("status", "escalate").stdout.count("Total failed:\t%d" % self.seen),
                             what=f"{self.seen} failures read")
        time.sleep(1.5)              # the actions thread bans, then the queued escalations

    def sleep(self, seconds):
        time.sleep(seconds)

    def restart(self):
        self.server.stop()
        self.server.start()
        self.seen = 0
        time.sleep(1.5)

    def current(self) -> dict:
        return self.server.bans("escalate")

    def settle(self, done):
        """fail2ban bans in its actions thread, and an escalation's ticket one round
        later: wait (a bounded while) until the bans expected are there, however loaded
        the machine; an expectation never met still fails below."""
        from f2b_ext.lab.netns import until
        until(lambda: done(self.current()), 30, every=0.2)

    def close(self):
        self.server.close()


def play(driver, scenario):
    for step in scenario["steps"]:
        if "attack" in step:
            driver.attack(*attack_of(step))
        elif "sleep" in step:
            driver.sleep(step["sleep"])
        elif "restart" in step:
            driver.restart()
        elif "expect" in step:
            want = step["expect"]
            driver.settle(lambda got: all(item in got for item in want.get("banned", [])) and
                          all(got.get(item) == length for item, length in want.get("bantime", {}).items()))
            got = driver.current()
            for item in want.get("banned", []):
                assert item in got, f"{item} not banned: {sorted(got)}"
            for item in want.get("not_banned", []):
                assert item not in got, f"{item} banned: {sorted(got)}"
            for item, length in want.get("bantime", {}).items():
                assert got.get(item) == length, f"{item}: {got.get(item)} != {length} ({sorted(got.items())})"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_scenario_through_the_core(scenario):
    play(CoreDriver(scenario), scenario)


@pytest.mark.skipif(not is_root(), reason="runs fail2ban-server as nobody (needs root to switch)")
@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_scenario_through_a_real_fail2ban_server(scenario):
    driver = ServerDriver(scenario)
    try:
        play(driver, scenario)
    finally:
        driver.close()
