"""`f2b-ext fleet init` (f2b_ext/system/fleet_init.py) and the agent's configuration: what each
server's credential may do, TLS files that verify, one-line CLI errors."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from f2b_ext.system import fleet_init
from f2b_ext.system.fleet_agent import AgentConfig

SERVERS = {"a": "198.18.0.1", "b": "198.18.0.2", "c": "2001:db8::3"}


def test_a_server_may_publish_only_under_its_own_subject_and_key():
    allow = fleet_init.permissions("b")["publish"]
    assert "f2bx.bans.b" in allow and not any(s.startswith("f2bx.bans.") and s != "f2bx.bans.b" for s in allow)
    assert "$KV.f2bx-protected.b" in allow and "$KV.f2bx-protected.>" not in allow
    # no wildcard over the JetStream API: it cannot delete, purge or edit the stream
    assert not any(s in ("$JS.API.>", "$JS.>", ">") or "DELETE.F2BX" in s or "PURGE" in s or "UPDATE" in s
                   for s in allow)
    assert all(".F2BX_BANS.b" in s or "F2BX_BANS" not in s or s.endswith("INFO.F2BX_BANS") for s in allow)


def test_plan_has_routes_to_the_others_tls_and_one_user_per_server():
    plan = fleet_init.plan(SERVERS, "/store", "/certs")
    conf = plan["a"]["nats-server.conf"]
    assert 'listen: "198.18.0.1:4222"' in conf and "jetstream" in conf
    assert re.search(r'routes: \["nats-route://198.18.0.2:6222", "nats-route://\[2001:db8::3\]:6222"\]', conf)
    assert conf.count("tls {") == 2 and 'ca_file: "/certs/ca.crt"' in conf
    assert re.findall(r'user: "(\w+)"', conf) == ["a", "b", "c", "admin"]
    agent = plan["b"]["fleet.conf"]
    assert "server = b" in agent and "user = b" in agent and "tls://[2001:db8::3]:4222" in agent
    assert "replicas = 3" in agent and "peers = a b c" in agent


@pytest.mark.parametrize("servers,message", [({"a b": "198.18.0.1"}, "server name"),
                                             ({"a": "not-an-ip"}, "does not appear to be"),
                                             ({"admin": "198.18.0.1"}, "reserved"), ({}, "at least one")])
def test_plan_refuses_bad_servers(servers, message):
    with pytest.raises(ValueError, match=message):
        fleet_init.plan(servers)


def test_written_files_agree_and_certificates_verify(tmp_path):
    from cryptography import x509
    out = tmp_path / "fleet"
    fleet_init.write(out, SERVERS, "/store")
    for name, addr in SERVERS.items():
        cert = x509.load_pem_x509_certificate((out / name / f"{name}.crt").read_bytes())
        r = subprocess.run(["openssl", "verify", "-CAfile", str(out / name / "ca.crt"), str(out / name / f"{name}.crt")],
                           capture_output=True, text=True)
        assert r.returncode == 0 and ": OK" in r.stdout, r.stdout + r.stderr
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert addr in [str(i) for i in sans.get_values_for_type(x509.IPAddress)]
        assert (out / name / f"{name}.key").stat().st_mode & 0o077 == 0
        cfg = AgentConfig.read(str(out / name / "fleet.conf"))
        assert cfg.server == name and cfg.user == name
        # the password the agent has is the one every nats-server accepts for it
        for other in SERVERS:
            assert f'user: "{name}", password: "{cfg.password}"' in (out / other / "nats-server.conf").read_text()
    assert not (out / "admin" / "ca.key").exists()
    with pytest.raises(ValueError, match="not empty"):
        fleet_init.write(out, SERVERS, "/store")


def test_agent_config_reads_durations_and_refuses_what_is_missing(tmp_path):
    conf = tmp_path / "fleet.conf"
    conf.write_text("[fleet]\nserver = a\nnats = tls://198.18.0.1:4222, tls://198.18.0.2:4222\n"
                    "single_cap = 10m\nprotect = 192.0.2.53 192.0.2.54\nmin_servers = 3\n")
    cfg = AgentConfig.read(str(conf))
    assert cfg.single_cap == 600 and cfg.nats == ["tls://198.18.0.1:4222", "tls://198.18.0.2:4222"]
    assert cfg.protect == ["192.0.2.53", "192.0.2.54"] and cfg.min_servers == 3
    conf.write_text("[fleet]\nserver = a\n")
    with pytest.raises(ValueError, match="needs server and nats"):
        AgentConfig.read(str(conf))


@pytest.mark.parametrize("line,message", [
    ("fleet_bantime = 1d", "fleet_bantime was dropped: fleet escalations follow `schedule` now"),
    ("replica = 3", "unknown option 'replica' in [fleet]"),
    ("rate = fast", "rate: 'fast' is not a number"),
    ("single_cap = soon", "single_cap: 'soon' is not a positive duration")])
def test_an_option_the_agent_does_not_read_is_a_one_line_error(tmp_path, line, message):
    """A dropped option (fleet_bantime, replaced by schedule) or a typo is refused, not
    ignored: `fleet run` says so in one line and does not start."""
    conf = tmp_path / "fleet.conf"
    conf.write_text(f"[fleet]\nserver = a\nnats = tls://198.18.0.1:4222\n{line}\n")
    with pytest.raises(ValueError, match=re.escape(message)):
        AgentConfig.read(str(conf))
    r = subprocess.run([sys.executable, "-m", "f2b_ext", "fleet", "run", "--config", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


@pytest.mark.parametrize("args,message", [(["fleet", "init", "a", "--out", "/nonexistent/x"], "NAME=ADDRESS"),
                                          (["fleet", "status", "--status", "/nonexistent/s.json"], "no status"),
                                          (["fleet", "run", "--config", "/nonexistent/f.conf"], "cannot read")])
def test_cli_errors_are_one_line(args, message):
    r = subprocess.run([sys.executable, "-m", "f2b_ext", *args], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_a_batch_fail2ban_did_not_take_is_applied_when_redelivered(tmp_path):
    """The agent's ledger is rolled back when fail2ban refuses a batch, so the
    redelivered events are applied, not taken for duplicates."""
    import asyncio
    import time
    from types import SimpleNamespace
    from f2b_ext.core.fleet import make_event
    from f2b_ext.system.fleet_agent import Agent

    class Inbox:
        def __init__(self):
            self.fail, self.got = True, []

        def ban(self, items):
            if self.fail:
                raise RuntimeError("fail2ban is restarting")
            self.got += items

    inbox = Inbox()
    cfg = AgentConfig(server="b", nats=["tls://198.18.0.2:4222"], spool=str(tmp_path / "spool"), remote="fail2ban",
                      status=str(tmp_path / "status"), bogons="none")
    agent = Agent(cfg, inbox=inbox)
    now = time.time()
    ev = make_event("ban", "203.0.113.7", "a", "j", now, now + 600, proto="TCP")
    msgs = [SimpleNamespace(data=ev.to_json(), subject="f2bx.bans.a")]
    undo = []
    with pytest.raises(RuntimeError):
        asyncio.run(agent._handle(msgs, undo))
    agent._undo(undo)
    inbox.fail = False
    asyncio.run(agent._handle(msgs, []))
    assert [i[0] for i in inbox.got] == ["203.0.113.7"]
    asyncio.run(agent._handle(msgs, []))           # a real duplicate now
    assert len(inbox.got) == 1


@pytest.mark.fail2ban
def test_the_fleet_action_refuses_a_parameter_it_does_not_read():
    """In a jail, fleet.py[...] takes role, server and spool; anything else (an agent
    option put there by mistake, a typo) stops the action with one line, as before."""
    from types import SimpleNamespace
    from f2b_ext.plugins.fleet import FleetAction
    with pytest.raises(ValueError, match=r"^fleet: unknown parameter\(s\): fleet_bantime$"):
        FleetAction(SimpleNamespace(name="j"), "fleet", fleet_bantime="1d")
    assert FleetAction(SimpleNamespace(name="j"), "fleet", role="inbox", server="a").role == "inbox"


@pytest.mark.fail2ban
def test_a_reload_keeps_the_fleet_action_and_takes_its_new_parameters(tmp_path):
    """fail2ban-client reload: the same action (its counts) with the new parameters; a bad
    one is refused with one line and changes nothing; a moved spool closes the old one."""
    from types import SimpleNamespace
    from f2b_ext.plugins.fleet import FleetAction
    action = FleetAction(SimpleNamespace(name="j"), "fleet", server="a", spool=str(tmp_path / "one.sqlite3"))
    action.start()
    action.published = 3
    action.clearAllParams()
    with pytest.raises(ValueError, match=r"^fleet: role: 'both' must be publish or inbox$"):
        action.reload(role="both")
    assert (action.role, action.server, action._spool is not None) == ("publish", "a", True)
    action.reload(server="b", spool=str(tmp_path / "two.sqlite3"))
    assert (action.server, action.spool_path, action._spool, action.published) == \
        ("b", str(tmp_path / "two.sqlite3"), None, 3)
    action.stop()
