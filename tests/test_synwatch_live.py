"""SYN floods that no LOG rule sees, end to end on the real kernel: a listener with a
small backlog in the server namespace, forged SYNs from the remote (whose SYN-ACKs go
unanswered, as a forged source's would), the watcher run exactly as its systemd unit runs
it (its ExecStart, under the unit's user, capabilities, umask, /proc, system call filter,
address families and MemoryDenyWriteExecute: tests/unit_sandbox.py), and a real fail2ban-server with the shipped f2b-ext-synrecv jail and nftset.py.

  1. a flood forged from addresses of 203.0.113.0/24 on port 80: the /24 is banned
     (in fail2ban and in the kernel's set), the rest of the world still gets answers;
  2. a flood from random addresses of 198.18.0.0/15 on port 443: no source and no /24
     stands out, so nothing is banned and no prefix is escalated; the watcher says why;
  3. the floods stop: the /24 is released on schedule and answered again.
"""
from __future__ import annotations

import ipaddress
import os
import random
import shlex
import signal
import subprocess
import threading
import time

import pytest

from conftest import ROOT, is_root
import unit_sandbox

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")]

UNIT = ROOT / "systemd" / "f2b-ext-synwatch.service"
BANTIME = 8          # the jail's first step, shortened for the test
JAIL = "f2b-ext-synrecv"


def unit_command() -> list[str]:
    """ExecStart of the shipped unit (options given after it override its own)."""
    for line in UNIT.read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.split("=", 1)[1])
    raise AssertionError("the unit has no ExecStart")


class Flood:
    """SYNs from `sources` to `port`, a burst every 0.3 s, until stopped."""

    def __init__(self, lab, sources, port: int):
        self.lab, self.sources, self.port = lab, list(sources), port
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.lab.syn_flood(self.sources, self.port, sport=random.randint(1024, 5000))
            self._stop.wait(0.3)

    def stop(self):
        self._stop.set()
        self.thread.join(5)


def test_forged_flood_is_banned_by_prefix_random_one_is_not_and_bans_lapse(tmp_path):
    from f2b_ext.lab.fail2ban_server import Fail2banServer
    from f2b_ext.lab.netns import Lab, until
    local = ("[DEFAULT]\nignoreself = false\n\n"
             f"[{JAIL}]\nenabled = true\nlogpath = {{log}}\nbackend = polling\n"
             f"bantime = {BANTIME}\nbantime.rndtime = 0\nfindtime = 30\n")
    with Lab() as lab:
        lab.mute_forged_sources()
        # per namespace, gone with it: a half-open entry lives ~3 s instead of ~63 s
        lab.server_sh("sysctl", "-qw", "net.ipv4.tcp_synack_retries=1")
        web, tls = lab.serve(80, 64), lab.serve(443, 64)
        f2b = Fail2banServer(local, netns=lab.server)
        watcher = None
        try:
            f2b.start(jail=JAIL)
            # the watcher, as its unit runs it, writing where the jail reads (its log is
            # the unit's user's, as LogsDirectory= makes it)
            os.chmod(f2b.dir, 0o711)
            os.chown(f2b.log, unit_sandbox.DYNAMIC_UID, unit_sandbox.DYNAMIC_UID)
            cmd = unit_command() + ["--interval", "1", "--net", "30", "--host", "20",
                                    "--unattributed", "30", "--log", str(f2b.log)]
            watcher = subprocess.Popen(["ip", "netns", "exec", lab.server, *unit_sandbox.prefix(UNIT), *cmd],
                                       env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

            # 1. forged from one /24
            forged = [f"203.0.113.{i}" for i in range(1, 201)]
            flood = Flood(lab, forged, 80)
            try:
                bans = f2b.wait_for(lambda: "203.0.113.0/24" in (b := f2b.bans(JAIL)) and b, timeout=30,
                                    what="the forged /24 banned")
                assert set(bans) == {"203.0.113.0/24"}, bans          # a prefix, not 200 hosts
                assert until(lambda: "203.0.113.0/24" in lab.server_sh("nft", "list", "table", "inet", "f2b_ext"), 15)
                assert not lab.probe("203.0.113.250", 80), "a banned /24 is still answered"
                assert lab.answered_within("198.51.100.5", 80), "the rest of the world must still be answered"
            finally:
                flood.stop()

            # 2. forged at random from 198.18.0.0/15: nothing stands out
            pool = ipaddress.ip_network("198.18.0.0/15")
            spread = [str(pool[i]) for i in random.sample(range(1, pool.num_addresses - 1), 3000)]
            flood = Flood(lab, spread, 443)
            try:
                assert until(lambda: "half-open total:" in f2b.log.read_text(), 15), \
                    "the watcher did not report the spread flood"
                time.sleep(3)                     # several more samples of it
            finally:
                flood.stop()
            assert not [b for b in f2b.bans(JAIL) if b.startswith("198.18.") or b.startswith("198.19.")]
            status = f2b.client("get", JAIL, "action", "subnet-escalate", "status").stdout
            assert status.startswith("escalated 0,"), status      # nothing widened from either flood
            lines = [line for line in f2b.log.read_text().splitlines() if "half-open flood from" in line]
            assert lines and all("203.0.113.0/24" in line for line in lines), lines

            # 3. released on schedule, answered again
            f2b.wait_for(lambda: not f2b.bans(JAIL), timeout=BANTIME + 15, what="the /24 released")
            assert until(lambda: lab.probe("203.0.113.250", 80), 15), "the released /24 is still dropped"
            assert "203.0.113.0/24" not in lab.server_sh("nft", "list", "table", "inet", "f2b_ext")
            assert watcher.poll() is None, "the watcher died"
        finally:
            if watcher is not None:
                watcher.send_signal(signal.SIGTERM)
                out = watcher.communicate(timeout=10)[0]
                assert watcher.returncode == 0, out
            f2b.close()
            web.close()
            tls.close()
