"""Rotation loses nothing: the shipped logrotate/f2b-ext-netfilter, run by the real
`logrotate` in the middle of a flood, with the live lab's real rsyslog (imklog, the
shipped rule) and a real fail2ban-server (pyinotify backend, two jails on the log):
every one of N distinct scanners, one logged SYN each (maxretry 1), is banned. With the
polling backend (fail2ban reads every second) a rotation without the hooks leaves
about a second of lines unread; with pyinotify the window is the time from the rename
to rsyslog's reopen.

The file is used as shipped; only its paths are the lab's (the log, rsyslog's pid file
for the HUP, fail2ban-client's socket, the lab rsyslog's own-lines filter for the
marker). Without the hooks (rename, create, HUP alone), the lines rsyslog wrote to the
old file after fail2ban's last read of it are never read."""
from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT
from f2b_ext.lab.live import LiveLab, LiveSettings, environment_problems

problems = environment_problems()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(bool(problems), reason="; ".join(problems))]

SCANNERS = [str(ipaddress.ip_address("198.18.0.7") + 256 * i) for i in range(400)]   # one per /24: no escalation
SHIPPED_LOG = "/var/log/netfilter.log"


def logrotate_conf(live) -> str:
    """The shipped file with the lab's paths."""
    text = (ROOT / "logrotate" / "f2b-ext-netfilter").read_text()
    log = str(live.rsyslog.netfilter_log)
    client = f'--client "-c {live.f2b.conf} -s {live.f2b.sock}"'
    swaps = [
        ("[ ! -x /usr/lib/rsyslog/rsyslog-rotate ] || /usr/lib/rsyslog/rsyslog-rotate",
         f"kill -HUP $(cat {live.work}/rsyslog.pid)"),
        (f"/usr/bin/python3 -m f2b_ext logrotate prerotate {SHIPPED_LOG}",
         f"{sys.executable} -m f2b_ext logrotate prerotate {log} {client}"),
        (f"/usr/bin/python3 -m f2b_ext logrotate postrotate {SHIPPED_LOG}",
         f'{sys.executable} -m f2b_ext logrotate postrotate {log} --marker "IN={live.lab.server_if} "'),
        (SHIPPED_LOG, log),
    ]
    for old, new in swaps:
        assert old in text, old
        text = text.replace(old, new)
    return text


def flood(live, sources, seconds: float):
    """One SYN from each source, spread over `seconds`, as raw frames from the remote end."""
    from f2b_ext.lab.netns import in_netns, syn_frame
    with in_netns(live.lab.remote):
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind((live.lab.remote_if, 0))
    try:
        gap = seconds / len(sources)
        for i, src in enumerate(sources):
            tx.send(syn_frame(live.lab.remote_mac, live.lab.server_mac, ipaddress.ip_address(src), 23, 40000, i + 1))
            time.sleep(gap)
    finally:
        tx.close()


@pytest.mark.parametrize("backend", ["pyinotify", "polling"])
def test_a_rotation_during_a_flood_loses_no_line(backend, tmp_path, capsys):
    settings = LiveSettings(firewall="nft", banaction="nftset", bantime=3600, checkinterval=1)
    with LiveLab(settings) as live:
        if backend != "pyinotify":
            (live.f2b.conf / "jail.local").write_text(live.jails().replace("backend = pyinotify", f"backend = {backend}"))
            live.f2b.client("reload")
            assert "backend = polling" in (live.f2b.conf / "jail.local").read_text()
        conf = tmp_path / "f2b-ext-netfilter"
        conf.write_text(logrotate_conf(live))
        sender = threading.Thread(target=flood, args=(live, SCANNERS, 4.0))
        sender.start()
        time.sleep(1.5)                                 # the flood is on
        began = time.monotonic()
        rotated = subprocess.run(["logrotate", "-f", "-v", "-s", str(tmp_path / "state"), str(conf)],
                                 capture_output=True, text=True, timeout=120)
        took = time.monotonic() - began
        sender.join()
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        log = live.rsyslog.netfilter_log
        old = log.with_name(log.name + ".1")
        assert old.exists() and log.exists() and not log.samefile(old)

        def missing():
            listed = set(live.f2b.client("get", "netfilter-in", "banip").stdout.split())
            return [s for s in SCANNERS if s not in listed]
        live.until(lambda: not missing(), 180, every=1)
        lost = missing()

        def written():
            return sum(1 for f in (old, log) for line in f.read_text().splitlines()
                       if "SRC=198.18." in line or "SRC=198.19." in line)
        # the last frames' lines may still be on their way through rsyslog when the sender ends
        live.until(lambda: written() >= len(SCANNERS), 30, every=0.5)
        written = written()
        # fail2ban reads the new file from here on, and the jails are active again
        live.syn_scan("203.0.113.99", ports=(23,))
        live.until(lambda: "203.0.113.99" in live.f2b.client("get", "netfilter-in", "banip").stdout, 60, every=0.5)
        after = "203.0.113.99" in live.f2b.client("get", "netfilter-in", "banip").stdout
        with capsys.disabled():
            print(f"\n{backend}: scanners {len(SCANNERS)} | lines in netfilter.log.1 + netfilter.log {written} | "
                  f"logrotate {took:.2f} s | never banned {len(lost)}")
            print("\n".join(line for line in rotated.stderr.splitlines() if "f2b-ext" in line))
        assert written == len(SCANNERS), f"rsyslog wrote {written} of {len(SCANNERS)} lines (the kernel's buffer?)"
        assert lost == [], f"{len(lost)} scanners never banned: {lost[:10]}\n{rotated.stderr[-2000:]}"
        assert after, "no ban from the new file after the rotation"
