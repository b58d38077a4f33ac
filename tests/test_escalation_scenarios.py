"""tests/scenarios/escalation.yaml, through the pure core and through a real fail2ban-server."""
from __future__ import annotations

import ipaddress
import time

import pytest
import yaml

from conftest import ROOT, is_root
from f2b_ext.escalation import HostBan
from f2b_ext.f2b_action import build

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
    """Plays a scenario on f2b_ext.escalation with simulated time, doing what the
    action and fail2ban do: ban hosts, ask the core, ban prefixes, expire, restore."""

    def __init__(self, scenario):
        self.params = action_params(scenario)
        self.ignore = [ipaddress.ip_network(n, strict=False) for n in ["127.0.0.1/8", "::1"] + scenario.get("ignoreip", [])]
        self.now = 1_000_000.0
        self.bans: dict = {}           # address or prefix -> (start, length)
        self.history: dict = {}        # prefix -> (ban count, time of last ban): fail2ban's db
        self.evidence: dict = {}       # prefix -> Evidence: the ticket's data
        self.core, self.schedule = build(self.params, [str(n) for n in self.ignore])

    def attack(self, hosts, proto):
        for h in hosts:
            addr = ipaddress.ip_address(h)
            if any(addr in n for n in self.ignore):
                continue
            self.bans[h] = (self.now, HOST_BANTIME)
            self.host_ban(HostBan(addr, self.now, proto, "IN"))

    def host_ban(self, ban):
        pending = self.core.observe(ban)
        while pending:
            c = pending.pop(0)
            prior = self.history.get(c.net, (0, 0))[0]
            length = self.schedule.ban_time(prior, c.evidence, 0.0)
            self.history[c.net] = (prior + 1, self.now)
            self.bans[str(c.net)] = (self.now, length)
            self.evidence[str(c.net)] = c.evidence
            pending += self.core.mark_banned(c.net, self.now + length, self.now, c.evidence)

    def sleep(self, seconds):
        self.now += seconds
        for key, (start, length) in list(self.bans.items()):
            if start + length <= self.now:
                del self.bans[key]
                if "/" in key:
                    self.core.forget_ban(ipaddress.ip_network(key))

    def restart(self):
        """fail2ban restores live bans; the action re-reads them."""
        self.core, self.schedule = build(self.params, [str(n) for n in self.ignore])
        plen = self.core.ladder.rungs[4][0][0]
        for key, (start, length) in sorted(self.bans.items(), key=lambda kv: kv[1][0]):
            if "/" in key:
                self.core.mark_banned(ipaddress.ip_network(key), start + length, self.now,
                                      self.evidence[key], restored=True)
                continue
            around = ipaddress.ip_network(f"{key}/{plen}", strict=False)
            if start > self.history.get(around, (0, float("-inf")))[1]:    # not used up yet
                self.host_ban(HostBan(ipaddress.ip_address(key), start, "TCP", "IN"))

    def current(self) -> dict:
        return {k: length for k, (start, length) in self.bans.items()}


class ServerDriver:
    def __init__(self, scenario):
        from f2b_ext.f2b_server import Fail2banServer
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
