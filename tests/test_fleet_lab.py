"""The fleet end to end: three namespaces, each a server with its own nats-server
(clustered, TLS, per-server credentials written by `f2b-ext fleet init`), real
fail2ban-server with nftset, and fleet agent (f2b_ext/lab/fleet.py). The tests run in
order on one lab; each checks the kernel's sets, not only fail2ban's lists."""
from __future__ import annotations

import os
import re
import signal
import time

import pytest

from conftest import is_root, kernel_line

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(not is_root(), reason="needs root and network namespaces")]

SETTINGS = dict(rate=50, burst=2500, quarantine=600, single_cap="10m", hosts=6, min_servers=2, checkinterval=1,
                schedule="10m 1h", forgedschedule="10m 1h", refresh=2)
RESOLVER_OF_A = "192.0.2.53"           # a dependency of A: never banned anywhere


@pytest.fixture(scope="module")
def lab():
    import shutil
    if not shutil.which("nats-server"):
        pytest.skip("nats-server is not installed (make venv installs it)")
    from f2b_ext.lab.fleet import FleetLab
    with FleetLab(agent_settings=SETTINGS, per_server={"a": {"protect": RESOLVER_OF_A}}) as lab:
        # every agent has seen every other server's protected list
        assert wait(lambda: all(len(lab.status(n).get("protected_by", {})) == 2 for n in "abc"), 60), \
            {n: lab.status(n) for n in "abc"}
        yield lab


def wait(predicate, timeout=30, every=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())


def event(origin, target, kind="ban", end_in=3600, ident=None, at=None):
    from f2b_ext.core.fleet import make_event
    now = at or time.time()
    return make_event(kind, target, origin, "local", now, now + end_in, proto="TCP",
                      seq=ident or f"t{time.monotonic_ns()}").to_json()


def test_a_ban_on_a_is_in_b_and_c_kernel_sets(lab):
    lab.f2b["a"].append(kernel_line("203.0.113.7"))
    assert wait(lambda: "203.0.113.7" in lab.kernel_set("a", "local"))
    assert wait(lambda: all("203.0.113.7" in lab.kernel_set(n) for n in "bc")), lab.agent_log("b")[-2000:]
    assert "203.0.113.7" not in lab.kernel_set("a")          # A does not ban its own twice


def remote_left(lab, n, addr):
    """Seconds left of addr's element in server n's agent set (None: not there)."""
    import ipaddress
    from f2b_ext.plugins.nftset import jail_elements
    from f2b_ext.lab.fleet import REMOTE_SETS
    from f2b_ext.lab.netns import sh
    held = jail_elements(REMOTE_SETS, lambda *a: sh("ip", "netns", "exec", lab.ns[n], "nft", *a, check=False))
    return held.get(ipaddress.ip_network(addr))


def test_the_remote_ban_is_the_agents_with_its_remaining_time_and_origin(lab):
    # the agent's set, not fail2ban's: capped at 10 min as one server's forgeable report
    assert 500 < remote_left(lab, "b", "203.0.113.7") <= 600
    assert "203.0.113.7" not in lab.f2b["b"].bans("f2b-ext-fleet")
    assert wait(lambda: lab.status("b").get("kernel_bans") == lab.status("b").get("remote_bans") == 1, 10), \
        lab.status("b")
    bans = lab.fleet_cli("status", "--bans", "--status", str(lab.dir / "status-b.json"), ns=lab.ns["b"])
    assert re.search(r"203\.0\.113\.7/32 +until .* from a \(local, forgeable\)", bans), bans
    assert "remote bans 1 listed (kernel), 1 in the kernel" in lab.fleet_cli(
        "status", "--status", str(lab.dir / "status-b.json"), ns=lab.ns["b"])
    import subprocess
    import sys
    from f2b_ext.lab.fail2ban_server import IMPORT_ROOT
    r = subprocess.run(["ip", "netns", "exec", lab.ns["b"], sys.executable, "-m", "f2b_ext", "schedule", "--socket",
                        str(lab.f2b["b"].sock), "--fleet-status", str(lab.dir / "status-b.json")],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(IMPORT_ROOT)))
    assert re.search(r"fleet-agent +203\.0\.113\.7 .* from a \(local, forgeable\)", r.stdout), r.stdout + r.stderr


def test_a_flushed_agent_set_is_repaired_from_the_ledger(lab):
    from f2b_ext.lab.netns import sh
    left, t0 = remote_left(lab, "b", "203.0.113.7"), time.monotonic()
    sh("ip", "netns", "exec", lab.ns["b"], "nft", "flush", "set", "inet", "f2b_ext", "fleet_agent_h4")
    assert "203.0.113.7" not in lab.kernel_set("b")
    assert wait(lambda: "203.0.113.7" in lab.kernel_set("b"), 15), lab.agent_log("b")[-2000:]
    # back with what was left of it, not a new full ban
    assert abs(remote_left(lab, "b", "203.0.113.7") - (left - (time.monotonic() - t0))) < 5
    assert "the kernel differed from the agent's list (check): added 1 (203.0.113.7/32)" in lab.agent_log("b")


def test_kill_9_of_the_agent_then_it_takes_over_and_catches_up(lab):
    from f2b_ext.lab.netns import sh
    lab.stop_agent("b", signal.SIGKILL)
    assert "203.0.113.7" in lab.kernel_set("b")              # the kernel keeps enforcing
    sh("ip", "netns", "exec", lab.ns["b"], "nft", "delete", "element", "inet", "f2b_ext", "fleet_agent_h4",
       "{ 203.0.113.7 }")                                   # and loses one while nobody watches
    lab.f2b["a"].append(kernel_line("203.0.113.9"))
    assert wait(lambda: "203.0.113.9" in lab.kernel_set("c"))
    lab.start_agent("b")
    assert wait(lambda: {"203.0.113.7", "203.0.113.9"} <= lab.kernel_set("b"), 30), lab.agent_log("b")[-2000:]
    assert "the kernel differed from the agent's list (takeover): added 1 (203.0.113.7/32)" in lab.agent_log("b"), lab.agent_log("b")
    assert wait(lambda: lab.status("b").get("remote_bans") == 2, 10), lab.status("b")


def test_an_admin_unban_on_a_propagates(lab):
    lab.f2b["a"].client("set", "local", "unbanip", "203.0.113.7")
    assert wait(lambda: all("203.0.113.7" not in lab.kernel_set(n) for n in "bc"))
    assert "203.0.113.7" not in lab.f2b["b"].bans("f2b-ext-fleet")


def test_a_restart_of_fail2ban_on_a_lifts_nothing_elsewhere(lab):
    lab.f2b["a"].append(kernel_line("203.0.113.8"))
    assert wait(lambda: all("203.0.113.8" in lab.kernel_set(n) for n in "bc"))
    lab.f2b["a"].stop()                     # fail2ban unbans everything it holds on stop
    lab.f2b["a"].start(timeout=60, jail="f2b-ext-fleet")
    assert wait(lambda: "203.0.113.8" in lab.kernel_set("a", "local"))     # restored on A
    time.sleep(3)
    assert all("203.0.113.8" in lab.kernel_set(n) for n in "bc")
    assert lab.status("b")["verdicts"].get("unban", 0) == 1               # only the admin's, above


def test_c_cannot_publish_under_a_subject(lab):
    from f2b_ext.lab.fleet import publish_as
    r = publish_as(lab, "c", "f2bx.bans.a", [event("a", "203.0.113.66")])
    assert r["acked"] == 0 and any("permissions violation for publish to" in e.lower() and "f2bx.bans.a" in e
                                   for e in r["errors"]), r
    time.sleep(2)
    assert all("203.0.113.66" not in lab.kernel_set(n) for n in "ab")


@pytest.mark.parametrize("target,why", [("198.18.0.1", "protected by fleet server a"),
                                        (RESOLVER_OF_A, "protected by fleet server a"),
                                        ("0.0.0.0/0", "wider than"),
                                        ("203.0.113.0/24", "fleet decision")])
def test_c_banning_what_the_fleet_depends_on_is_refused_by_every_receiver(lab, target, why):
    from f2b_ext.lab.fleet import publish_as
    r = publish_as(lab, "c", "f2bx.bans.c", [event("c", target)])
    assert r["acked"] == 1, r          # the bus carries it: C may publish on its own subject
    for n in "ab":
        assert wait(lambda: f"refused ban {target} from c: " in lab.agent_log(n), 15), lab.agent_log(n)[-2000:]
        reason = lab.agent_log(n).split(f"refused ban {target} from c: ")[-1].splitlines()[0]
        # b talks to a (their nats-servers' route): a's address is b's own peer too
        assert (why if n == "b" else why.replace("by fleet server a", "here")) in reason or \
            (n, target) == ("b", "198.18.0.1") and "protected here" in reason, reason
        assert target.split("/")[0] not in lab.kernel_set(n)


def test_a_peer_of_a_is_published_and_never_banned_by_the_fleet(lab):
    """A opens a connection to a host it depends on (a listener in the hub namespace);
    A's agent remembers it as a peer and publishes it: C's ban of it is refused by A
    (its own dependency) and by B (A's)."""
    import subprocess
    import sys
    from f2b_ext.lab.fleet import publish_as
    from f2b_ext.lab.netns import sh
    peer = "198.18.0.200"
    sh("ip", "-n", lab.hub, "addr", "add", f"{peer}/24", "dev", "br0")
    code_listen = ("import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
                   f"s.bind(('{peer}', 9000)); s.listen(); c=s.accept(); time.sleep(120)")
    code_connect = f"import socket,time; s=socket.create_connection(('{peer}', 9000), 10); time.sleep(120)"
    procs = [subprocess.Popen(["ip", "netns", "exec", lab.hub, sys.executable, "-c", code_listen])]
    try:
        time.sleep(1)
        procs.append(subprocess.Popen(["ip", "netns", "exec", lab.ns["a"], sys.executable, "-c", code_connect]))
        assert wait(lambda: f"{peer}/32" in lab.status("b").get("protected_by", {}).get("a", []), 30), \
            lab.status("b").get("protected_by")
        assert lab.status("a")["peers_remembered"] >= 1
        publish_as(lab, "c", "f2bx.bans.c", [event("c", peer)])
        for n, why in (("a", f"covers {peer}/32, protected here"), ("b", f"covers {peer}/32, protected by fleet server a")):
            assert wait(lambda: f"refused ban {peer} from c: {why}" in lab.agent_log(n), 15), lab.agent_log(n)[-2000:]
            assert peer not in lab.kernel_set(n)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_expired_events_are_dropped_on_replay(lab):
    from f2b_ext.lab.fleet import publish_as
    lab.stop_agent("b")
    publish_as(lab, "c", "f2bx.bans.c", [event("c", "203.0.113.70", end_in=3)])
    time.sleep(4)
    lab.start_agent("b")
    assert wait(lambda: lab.status("b").get("verdicts", {}).get("expired", 0) >= 1, 30), lab.status("b")
    assert "203.0.113.70" not in lab.kernel_set("b")
    assert "203.0.113.70" in lab.kernel_set("a") or lab.status("a")["verdicts"].get("expired")


def test_fleet_escalation_is_decided_once(lab):
    # two hosts of 203.0.113.128/25's /24 on each of three servers
    hosts = {"a": ("203.0.113.11", "203.0.113.12"), "b": ("203.0.113.13", "203.0.113.14"),
             "c": ("203.0.113.15", "203.0.113.16")}
    for n, hs in hosts.items():
        lab.f2b[n].append(*(kernel_line(h) for h in hs))
    assert wait(lambda: all("203.0.113.0/24" in lab.prefix_set(n, 24) for n in "abc"), 60), \
        {n: lab.status(n) for n in "abc"}
    assert wait(lambda: all("203.0.113.0/24" in lab.status(n)["fleet_decisions"] for n in "abc"), 10)
    assert sum(lab.status(n)["decided_here"] for n in "abc") == 1
    assert lab.f2b["c"].bans("f2b-ext-fleet").get("203.0.113.0/24", 0) > 0


def put_decision(lab, decision):
    """Write a fleet decision into the bucket as server a's agent would."""
    import subprocess
    import sys
    from f2b_ext.lab.fail2ban_server import IMPORT_ROOT
    code = f"""
import asyncio, ssl, nats
from f2b_ext.system.fleet_agent import AgentConfig
cfg = AgentConfig.read({str(lab.agent_conf("a"))!r})
async def main():
    nc = await nats.connect(servers=cfg.nats, user=cfg.user, password=cfg.password,
                            tls=ssl.create_default_context(cafile=cfg.ca))
    kv = await nc.jetstream().key_value("f2bx-decisions")
    await kv.put({fleet_key(decision.net)!r}, {decision.to_json()!r})
    await nc.close()
asyncio.run(main())
"""
    subprocess.run(["ip", "netns", "exec", lab.ns["a"], sys.executable, "-c", code], check=True, timeout=60,
                   env={"PYTHONPATH": str(IMPORT_ROOT), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def fleet_key(net):
    from f2b_ext.core.fleet import decision_key
    return decision_key(net)


def test_a_prefix_escalated_again_after_its_fleet_ban_ended_gets_a_longer_one(lab):
    import ipaddress
    from f2b_ext.core.fleet import FleetDecision
    net, now = ipaddress.ip_network("203.0.112.0/24"), time.time()
    put_decision(lab, FleetDecision(net, now - 100, "a", ("a", "b"), now - 700, 1))     # the first: 10 min, ended
    for n, hs in {"a": (1, 2), "b": (3, 4), "c": (5, 6)}.items():
        lab.f2b[n].append(*(kernel_line(f"203.0.112.{h}") for h in hs))
    assert wait(lambda: all(lab.status(n)["fleet_escalations"].get(str(net)) == 2 for n in "abc"), 60), \
        {n: lab.status(n)["fleet_escalations"] for n in "abc"}
    decisions = [line for n in "abc" for line in lab.agent_log(n).splitlines() if "decided fleet ban" in line]
    assert len([d for d in decisions if f"#2 of {net} " in d]) == 1, decisions          # decided once
    assert wait(lambda: 3500 < lab.f2b["c"].bans("f2b-ext-fleet").get(str(net), 0) <= 3600, 20), \
        lab.f2b["c"].bans("f2b-ext-fleet")                   # the second step, 1h (kernel lines: forgeable)


def test_one_server_alone_does_not_escalate(lab):
    lab.f2b["b"].append(*(kernel_line(f"198.51.100.{i}") for i in range(1, 8)))
    assert wait(lambda: all(f"198.51.100.{i}" in lab.kernel_set("a") for i in range(1, 8)), 30)
    time.sleep(3)
    assert all("198.51.100.0/24" not in lab.status(n)["fleet_decisions"] for n in "abc")


# The bus down and kill -9 of a nats-server during a burst: tests/test_fleet_faults.py
# (a full minute; 10,000 bans, with the lists, databases and kernels compared).


def test_a_flooding_server_is_quarantined(lab):
    from f2b_ext.lab.fleet import publish_as
    flood = [event("c", f"198.18.{100 + i // 250}.{1 + i % 250}") for i in range(4000)]
    r = publish_as(lab, "c", "f2bx.bans.c", flood)
    assert r["acked"] == 4000, r
    for n in "ab":
        assert wait(lambda: "c" in lab.status(n).get("quarantined", {}), 60), lab.status(n)
        assert "fleet: quarantined c" in lab.agent_log(n)
    publish_as(lab, "c", "f2bx.bans.c", [event("c", "203.0.113.99")])
    assert wait(lambda: "refused ban 203.0.113.99 from c: c is quarantined" in lab.agent_log("a"), 20)
    assert "203.0.113.99" not in lab.kernel_set("a")
    # the others' bans still flow
    lab.f2b["b"].append(kernel_line("203.0.113.98"))
    assert wait(lambda: "203.0.113.98" in lab.kernel_set("a"), 20)


def test_fleet_create_again_is_harmless_and_a_conflicting_one_changes_nothing(lab):
    """The stream and buckets exist (the lab created them with init's admin fleet.conf:
    3 replicas, max_ban 7d, forget 30d). The same create again succeeds and changes
    nothing; one whose settings differ is refused in one line naming each difference,
    and creates or changes nothing either (the next matching create still finds them so)."""
    import subprocess
    import sys
    from f2b_ext.lab.fail2ban_server import IMPORT_ROOT
    admin = lab.dir / "init" / "admin" / "fleet.conf"
    text = admin.read_text()
    assert "replicas = 3\n" in text

    def create(conf):
        return subprocess.run(["ip", "netns", "exec", lab.ns["a"], sys.executable, "-m", "f2b_ext", "fleet", "create",
                               "--config", str(conf)], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONPATH=str(IMPORT_ROOT)))

    same = create(admin)
    assert same.returncode == 0 and "they were there, with these settings" in same.stdout, same.stdout + same.stderr
    before = lab.bus()
    other = lab.dir / "admin-other.conf"
    for change, says in (
            ({"replicas": "1"}, ["stream F2BX_BANS has replicas 3, this configuration asks 1",
                                 "bucket f2bx-protected has replicas 3, this configuration asks 1",
                                 "bucket f2bx-decisions has replicas 3, this configuration asks 1"]),
            ({"forget": "60d"}, ["bucket f2bx-decisions has ttl 30d00h, this configuration asks 60d00h"]),
            # the decisions bucket as the first fleet version made it: ttl = max_ban
            ({"forget": "7d"}, ["bucket f2bx-decisions has ttl 30d00h, this configuration asks 7d00h"]),
            ({"max_ban": "1d"}, ["stream F2BX_BANS has ttl 7d00h, this configuration asks 1d00h"])):
        lines = [line for line in text.splitlines() if line.split(" = ")[0] not in change]
        other.write_text("\n".join(lines + [f"{k} = {v}" for k, v in change.items()]) + "\n")
        r = create(other)
        assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, (change, r.stdout, r.stderr)
        assert r.stderr.startswith("f2b-ext: the fleet's stream or buckets exist with other settings: "), r.stderr
        assert all(phrase in r.stderr for phrase in says) and r.stderr.count(" has ") == len(says), (change, r.stderr)
    after = lab.bus()
    assert sorted(after["replicas"]) == sorted(before["replicas"]) and len(after["replicas"]) == 2   # 3 replicas: leader + 2
    again = create(admin)
    assert again.returncode == 0 and "they were there, with these settings" in again.stdout, again.stderr


def test_status_command(lab):
    out = lab.fleet_cli("status", "--status", str(lab.dir / "status-a.json"))
    assert "server a: connected" in out and "quarantined c" in out and "spool depth 0" in out
