"""A dead resolver costs nothing: the shipped jails (jail.d/f2b-ext.conf, nftset and
subnet-escalate as shipped) start and ban as fast with a resolver that drops every query
as with one that answers at once.

A real fail2ban-server runs in the lab's server namespace, inside a private mount and
UTS namespace of its own: /etc/resolv.conf is bind-mounted to a file naming the resolver,
and the host name is one that /etc/hosts does not know (as on most servers, whose FQDN
only DNS knows), so anything that looks up this host's names asks the resolver. Run 1:
a resolver in the namespace that answers every query at once (NXDOMAIN). Run 2: a
resolver at a documentation address whose packets the namespace drops. Each run measures
the time to start and the time from a scanner's three lines to the ban. fail2ban's
`ignoreself` (on by default) resolves the host's names at the first failure it checks
and again every 5 minutes; with it, run 2 stalls by the resolver's timeouts. Timing is
compared within the test (same machine, same load), never against a fixed figure.
The host's NTP servers are names here (a timesyncd.conf bind-mounted too): subnet-escalate
resolves them in its own thread, and a reload meanwhile must not wait for it.""" 
from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import is_root

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")]

# the server's own address; an address behind the remote end, which drops what is sent
# to it (packets leave and nothing comes back: a resolver that is down, not unreachable)
WORKING, DEAD = "192.0.2.1", "198.51.100.53"
# short resolver timeouts keep a stalled run short; a stall is still 2 s for each query
RESOLV = "nameserver {}\noptions timeout:2 attempts:1\n"
HOSTNAME = "f2bx-dns-probe.example"            # in no /etc/hosts: only DNS could know it
# NTP servers by name, which subnet-escalate resolves (in its own thread) to guard them
TIMESYNCD = "[Time]\nNTP=" + " ".join(f"ntp{i}.f2bx.example" for i in range(8)) + "\n"
LINE = ("{stamp} lab kernel: [  444.910152] FINAL_REJECT: IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 "
        "SRC={src} DST=192.0.2.1 LEN=60 TOS=0x00 PREC=0x00 TTL=51 ID=5 DF PROTO=TCP SPT=40000 DPT={dpt} WINDOW=1024 "
        "RES=0x00 SYN URGP=0")
# the shipped jail as it is, only reading the test's file
JAIL_LOCAL = "[f2b-ext-inbound]\nenabled = true\nlogpath = {log}\nbackend = polling\n"


class NxdomainResolver:
    """A resolver that answers every UDP query at once with NXDOMAIN (a working one
    that knows no name), on port 53 of `address` in namespace `ns`."""

    def __init__(self, ns: str, address: str):
        from f2b_ext.lab.netns import in_netns
        with in_netns(ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 53))
        self.sock.settimeout(0.2)
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            if len(query) < 12:
                continue
            self.queries += 1
            # same id and question; QR, opcode 0, RD copied, RA, RCODE 3; no answers
            flags = 0x8000 | (query[2] << 8 & 0x0100) | 0x0080 | 3
            self.sock.sendto(query[:2] + flags.to_bytes(2, "big") + query[4:6] + b"\0\0\0\0\0\0" + query[12:], peer)

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def run(lab, resolver: str, work: Path, scanner: str) -> tuple[float, float, float, float, str]:
    """(seconds to start, to reload, from the third line to the ban, to restart with the
    ban restored; the server's log) with /etc/resolv.conf naming `resolver`."""
    from f2b_ext.lab.fail2ban_server import Fail2banServer
    resolv, etc_systemd = work / f"resolv-{resolver}.conf", work / f"systemd-{resolver}"
    resolv.write_text(RESOLV.format(resolver))
    # a copy of /etc/systemd with our timesyncd.conf, bound over the directory: the file
    # need not exist on the machine (trixie's minimal root has none), and nothing of the
    # machine's /etc changes
    shutil.copytree("/etc/systemd", etc_systemd, symlinks=True, dirs_exist_ok=True)
    (etc_systemd / "timesyncd.conf").unlink(missing_ok=True)
    (etc_systemd / "timesyncd.conf").write_text(TIMESYNCD)
    prefix = ("unshare", "--mount", "--uts", "--", "sh", "-c",
              'mount --bind "$0" /etc/resolv.conf && mount --bind "$1" /etc/systemd && hostname "$2" '
              '&& shift 2 && exec "$@"', str(resolv), str(etc_systemd), HOSTNAME)
    f2b = Fail2banServer(JAIL_LOCAL, netns=lab.server, prefix=prefix)
    try:
        began = time.monotonic()
        f2b.start(jail="f2b-ext-inbound", timeout=120)
        started = time.monotonic() - began
        # an admin's reload while subnet-escalate's thread resolves the NTP names
        began = time.monotonic()
        f2b.client("reload")
        reloaded = time.monotonic() - began
        # what ignoreself was for, done without DNS: subnet-escalate lists this machine's addresses
        ignored = f2b.client("get", "f2b-ext-inbound", "ignoreip").stdout
        assert "192.0.2.1" in ignored and "2001:db8:f2b::1" in ignored, ignored
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        f2b.append(*[LINE.format(stamp=now, src=scanner, dpt=p) for p in (23, 25, 80)])
        began = time.monotonic()
        f2b.wait_for(lambda: scanner in f2b.client("get", "f2b-ext-inbound", "banip").stdout, timeout=120,
                     what=f"the ban of {scanner}", every=0.05)
        banned = time.monotonic() - began
        # a restart restores the ban from the database (fail2ban checks each restored ban
        # against its ignore list, ignoreself included)
        f2b.stop()
        began = time.monotonic()
        f2b.start(jail="f2b-ext-inbound", timeout=120)
        f2b.wait_for(lambda: scanner in f2b.client("get", "f2b-ext-inbound", "banip").stdout, timeout=120,
                     what=f"the ban of {scanner} restored", every=0.05)
        restarted = time.monotonic() - began
        return started, reloaded, banned, restarted, f2b.server_log()
    finally:
        f2b.close()


def test_a_dead_resolver_delays_neither_start_nor_bans(tmp_path, capsys):
    from f2b_ext.lab.netns import Lab
    with Lab() as lab:
        # the dead resolver: the remote namespace drops every packet to it
        lab.remote_sh("nft", "-f", "-", input=f"""table inet f2bx_dead_resolver {{
    chain input {{
        type filter hook prerouting priority raw; policy accept;
        ip daddr {DEAD} counter drop
    }}
}}
""")
        working = NxdomainResolver(lab.server, WORKING)
        try:
            good = run(lab, WORKING, tmp_path, "203.0.113.5")
        finally:
            working.close()
        dead = run(lab, DEAD, tmp_path, "203.0.113.6")
        dropped = lab.remote_sh("nft", "list", "table", "inet", "f2bx_dead_resolver")
    with capsys.disabled():
        print(f"\nresolver | start s | reload s | lines to ban s | restart, ban restored s\n"
              f"working ({working.queries} queries answered) | " + " | ".join(f"{t:.2f}" for t in good[:4]) + "\n"
              f"dead ({dropped.split('counter packets ')[1].split()[0]} packets dropped) | "
              + " | ".join(f"{t:.2f}" for t in dead[:4]))
    # a stall is at least one resolver timeout (2 s) per query, and fail2ban's look-ups of
    # its own names make several (20 s here); the slack covers a loaded machine's jitter
    for i, what in enumerate(("start", "reload", "lines to ban", "restart with the ban restored")):
        assert dead[i] <= 2 * good[i] + 3, \
            f"{what}: {dead[i]:.1f} s with a dead resolver, {good[i]:.1f} s with a working one\n" + dead[4][-3000:]
