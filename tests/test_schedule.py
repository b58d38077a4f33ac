"""`f2b-ext schedule`: parsing fail2ban's ban list (pure), then the command against a
real fail2ban-server with host bans, an escalated subnet and a permanent ban, and the
errors a user meets (not running, stale socket, permission denied, no such jail)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, cli_as, escalate_jail, is_root
from f2b_ext.core import schedule


def f2b_ext(*args, user: str | None = None):
    if not user:
        return subprocess.run([sys.executable, "-m", "f2b_ext", *args], capture_output=True, text=True, cwd=ROOT,
                              timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return cli_as(user, *args)


def local(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def test_parse_ban_lines_as_fail2ban_prints_them():
    b = schedule.parse_ban("j", "203.0.113.0/24 \t2026-11-21 09:00:00 + 3600 = 2026-11-21 10:00:00", True)
    assert (b.target, b.start, b.length, b.end, b.subnet, b.escalated) == \
        ("203.0.113.0/24", local("2026-11-21 09:00:00"), 3600, local("2026-11-21 10:00:00"), True, True)
    host = schedule.parse_ban("j", "2001:db8::7 \t2026-11-21 09:00:00 + 600 = 2026-11-21 09:10:00", True)
    assert not host.subnet and not host.escalated
    forever = schedule.parse_ban("j", "198.51.100.7 \t2026-11-21 09:00:00 + -1 = 9999-12-31 23:59:59", False)
    assert forever.end is None and forever.length == -1
    for junk in ("", "hello", "203.0.113.0/33 \t2026-11-21 09:00:00 + 1 = 2026-11-21 09:00:01",
                 "x \t2026-11-21 09:00:00 + 1 = 2026-11-21 09:00:01"):
        assert schedule.parse_ban("j", junk, True) is None


def test_timeline_orders_by_end_and_renders_now():
    now = local("2026-11-21 09:30:00")
    bans = [schedule.parse_ban("a", l, True) for l in (
        "203.0.113.0/24 \t2026-11-21 09:00:00 + 7200 = 2026-11-21 11:00:00",
        "203.0.113.5 \t2026-11-21 09:00:00 + 3600 = 2026-11-21 10:00:00",
        "198.51.100.7 \t2026-11-21 09:00:00 + -1 = 9999-12-31 23:59:59")]
    assert [b.target for b in schedule.timeline(bans)] == ["203.0.113.5", "203.0.113.0/24", "198.51.100.7"]
    lines = schedule.render(bans, now, ["a"], width=100)
    assert lines[0].startswith("3 bans in 1 jails")
    rows = {l.split()[1]: l for l in lines[2:5]}
    assert "ends 11-21 10:00 (in 30m00s)" in rows["203.0.113.5"]
    assert "(in 1h30m)" in rows["203.0.113.0/24"] and rows["203.0.113.0/24"].endswith("escalated")
    assert "=" in rows["203.0.113.0/24"] and "permanent" in rows["198.51.100.7"]
    # "now" is at the same column in every row
    assert len({l.index("|") for l in rows.values()}) == 1
    assert schedule.duration(59) == "59s" and schedule.duration(90061) == "1d01h"


@pytest.mark.skipif(not is_root(), reason="runs fail2ban-server as nobody (needs root to switch)")
def test_schedule_of_a_real_fail2ban():
    from f2b_ext.lab.fail2ban_server import Fail2banServer
    jails = escalate_jail('hosts=3, bogons=none, schedule="2h"') + \
        "\n[plain]\nenabled = true\nfilter = netfilter\nlogpath = {log}\nbackend = polling\nbantime = -1\n"
    server = Fail2banServer(jails)
    try:
        server.start()
        for h in (1, 2, 3):
            server.client("set", "escalate", "banip", f"203.0.113.{h}")
        server.wait_for(lambda: "203.0.113.0/24" in server.bans("escalate"), what="the escalation")
        server.client("set", "plain", "banip", "198.51.100.9")
        # fail2ban runs as nobody here: f2b-ext talks to it as nobody (its own socket) ...
        f2b_ext_ = lambda *args: f2b_ext(*args, user="nobody")
        r = f2b_ext_("schedule", "--socket", str(server.sock), "--json")
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        rows = {(b["jail"], b["target"]): b for b in got["bans"]}
        assert set(rows) == {("escalate", "203.0.113.1"), ("escalate", "203.0.113.2"), ("escalate", "203.0.113.3"),
                             ("escalate", "203.0.113.0/24"), ("plain", "198.51.100.9")}
        subnet = rows[("escalate", "203.0.113.0/24")]
        assert subnet["escalated"] and subnet["length"] == 7200 and 7100 < subnet["remaining"] <= 7200
        assert rows[("escalate", "203.0.113.1")]["length"] == 600 and not rows[("escalate", "203.0.113.1")]["subnet"]
        assert rows[("plain", "198.51.100.9")]["end"] is None
        assert [b["target"] for b in got["bans"]][-2:] == ["203.0.113.0/24", "198.51.100.9"]   # by end

        text = f2b_ext_("schedule", "--socket", str(server.sock))
        assert text.returncode == 0 and "\033[" not in text.stdout
        assert text.stdout.startswith("5 bans in 2 jails")
        assert "203.0.113.0/24" in text.stdout and "escalated" in text.stdout and "permanent" in text.stdout
        only = json.loads(f2b_ext_("schedule", "plain", "--socket", str(server.sock), "--json").stdout)
        assert [b["target"] for b in only["bans"]] == ["198.51.100.9"]
        r = f2b_ext_("schedule", "nosuch", "--socket", str(server.sock))
        assert r.returncode == 2 and r.stderr == "f2b-ext: no such jail: nosuch\n"
        # ... but root never unpickles what a socket it does not own sends
        r = f2b_ext("schedule", "--socket", str(server.sock))
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr == (f"f2b-ext: {server.sock} is owned by nobody, not root: refusing to talk to it "
                            "(fail2ban's answers are pickles, which run code when read)\n")
        # the socket is fail2ban's (here nobody's, mode 0700 dir): another user is refused
        os.chmod(server.dir, 0o700)
        r = f2b_ext("schedule", "--socket", str(server.sock), user="daemon")
        assert r.returncode == 2
        assert r.stderr == f"f2b-ext: permission denied on {server.sock}: run as root (fail2ban's socket is root's)\n"
    finally:
        server.close()


def test_not_running_and_stale_socket_are_one_line(tmp_path):
    r = f2b_ext("schedule", "--socket", str(tmp_path / "fail2ban.sock"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"f2b-ext: fail2ban is not running: no socket at {tmp_path}/fail2ban.sock (systemctl start fail2ban)\n"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))           # bound, never listening: what a killed server leaves
    try:
        r = f2b_ext("schedule", "--socket", str(tmp_path / "stale.sock"))
        assert r.returncode == 2 and "fail2ban is not running: nobody listens on" in r.stderr
        assert r.stderr.count("\n") == 1
    finally:
        stale.close()


def test_missing_configuration_is_one_line(tmp_path):
    r = f2b_ext("schedule", "--conf", str(tmp_path))
    assert r.returncode == 2 and r.stderr == f"f2b-ext: {tmp_path}/fail2ban.conf not found: is fail2ban installed? (or give --socket)\n"


HOSTILE_SERVER = """
import os, pickle, socket, sys
class Payload:                          # unpickling this creates the file named on the command line
    def __reduce__(self):
        return (open, (sys.argv[2], "w"))
srv = socket.socket(socket.AF_UNIX)
srv.bind(sys.argv[1])
srv.listen(1)
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    conn.settimeout(5)
    try:
        conn.recv(4096)
        conn.sendall(pickle.dumps((0, Payload())) + b"<F2B_END_COMMAND>")
    except OSError:
        pass
    conn.close()
"""


@pytest.mark.skipif(not is_root(), reason="runs a listener as nobody and chowns its socket (needs root)")
def test_a_socket_served_by_another_user_is_refused_before_anything_is_read():
    """The socket file can look like root's (root chowned it); what counts is who listens
    (SO_PEERCRED). A nobody-run server whose answer would run code when unpickled."""
    import pwd
    import shutil
    import tempfile
    from pathlib import Path
    work = Path(tempfile.mkdtemp(prefix="f2b-ext-hostile-"))   # not under pytest's 0700 tmp: nobody enters
    nobody = pwd.getpwnam("nobody")
    os.chown(work, nobody.pw_uid, nobody.pw_gid)
    sock, pwned = work / "fail2ban.sock", work / "pwned"
    server = subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                               sys.executable, "-c", HOSTILE_SERVER, str(sock), str(pwned)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "ready\n"
        os.chown(sock, 0, 0)
        os.chmod(sock, 0o777)
        r = f2b_ext("schedule", "--socket", str(sock))
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr == (f"f2b-ext: {sock} is served by nobody, not root: refusing to talk to it "
                            "(fail2ban's answers are pickles, which run code when read)\n")
        assert not pwned.exists()
        # the same server, talked to by its own user: the payload runs (the test can fail)
        r = f2b_ext("schedule", "--socket", str(sock), user="nobody")
        assert pwned.exists(), r.stderr
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work)
