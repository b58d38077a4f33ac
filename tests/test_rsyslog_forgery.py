"""Can a local user forge the lines the filter bans on? A real rsyslog says:
- `logger -t kernel "...SRC=x"` (default facility user) lands in syslog, not kern.log;
- a datagram `<4>kernel: [ 1.0] ...SRC=x` written to the syslog socket by the same user
  DOES land in kern.log under Debian's stock rule `kern.* -/var/log/kern.log`: the
  facility is the sender's claim (util-linux `logger` rewrites kern to user, but nothing
  obliges a forger to use it);
- the shipped rsyslog.d/f2b-ext-netfilter.conf (imklog input only) holds the kernel's
  real line and neither forgery.
fail2ban-regex on each file shows what a jail reading it would ban."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, is_root

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(not is_root(), reason="needs root (rsyslog imklog, namespaces)"),
              pytest.mark.skipif(not shutil.which("rsyslogd"), reason="rsyslog not installed")]

FORGED = ("FINAL_REJECT: IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC={src} "
          "DST=192.0.2.1 LEN=60 TOS=0x00 PREC=0x00 TTL=51 ID=5 PROTO=TCP SPT=1 DPT=22 "
          "WINDOW=1024 RES=0x00 SYN URGP=0")
# addresses no other test sends from: imklog replays the whole kernel buffer
REAL_ATTACKER, FORGED_USER, FORGED_KERN = "198.51.100.98", "198.51.100.166", "198.51.100.167"


def wait_for(path: Path, text: str, timeout: float = 10.0) -> bool:
    from f2b_ext.lab.netns import until
    return bool(until(lambda: path.exists() and text in path.read_text(errors="replace"), timeout, every=0.1))


@pytest.fixture
def rsyslog():
    work = Path(tempfile.mkdtemp(prefix="f2bx-rsyslog-"))
    os.chmod(work, 0o755)            # the unprivileged logger must reach the socket
    rule = (ROOT / "rsyslog.d" / "f2b-ext-netfilter.conf").read_text().replace(
        "/var/log/netfilter.log", str(work / "netfilter.log"))
    (work / "rsyslog.conf").write_text(f"""
global(workDirectory="{work}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{work}/log.sock")
module(load="imklog")
{rule}
# Debian 12's stock rules, with the paths moved here:
*.*;auth,authpriv.none  {work}/syslog
kern.*                  {work}/kern.log
""")
    proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(work / "rsyslog.conf"), "-i", str(work / "pid")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        from f2b_ext.lab.netns import until
        until(lambda: (work / "log.sock").exists(), 30)
        os.chmod(work / "log.sock", 0o666)
        yield work
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def as_nobody_logger(sock: Path, *args: str):
    subprocess.run([*NOBODY, "logger", "-u", str(sock), *args], check=True)


def as_nobody_datagram(sock: Path, payload: str):
    """What any local program can send: facility kern (0), severity warning, fake stamp."""
    code = ("import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
            "s.sendto(sys.argv[2].encode(), sys.argv[1])")
    subprocess.run([*NOBODY, "/usr/bin/python3", "-c", code, str(sock), payload], check=True)


def banned(confdir, log: Path) -> set[str]:
    out = subprocess.run(["fail2ban-regex", "-c", str(confdir), "--raw", "-o", "ip", str(log), "netfilter"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_forged_kernel_lines(rsyslog, confdir):
    from f2b_ext.lab.netns import Lab
    with Lab() as lab:
        lab.server_sh("iptables", "-A", "INPUT", "-j", "LOG", "--log-prefix", "FINAL_REJECT: ")
        from scapy.layers.inet import IP, TCP
        lab.send(IP(src=REAL_ATTACKER, dst="192.0.2.1") / TCP(sport=40000, dport=22, flags="S"))
        as_nobody_logger(rsyslog / "log.sock", "-t", "kernel", FORGED.format(src=FORGED_USER))
        as_nobody_logger(rsyslog / "log.sock", "-p", "kern.warn", "-t", "kernel", "logger rewrites kern to user")
        as_nobody_datagram(rsyslog / "log.sock", "<4>kernel: [  444.910152] " + FORGED.format(src=FORGED_KERN))
        assert wait_for(rsyslog / "netfilter.log", f"SRC={REAL_ATTACKER} ")
        assert wait_for(rsyslog / "syslog", f"SRC={FORGED_USER} ")
        assert wait_for(rsyslog / "kern.log", f"SRC={FORGED_KERN} ")
    time.sleep(0.5)
    kern = (rsyslog / "kern.log").read_text(errors="replace")
    syslog = (rsyslog / "syslog").read_text(errors="replace")
    only_kernel = (rsyslog / "netfilter.log").read_text(errors="replace")

    # plain `logger -t kernel`: mixed-facility syslog only
    assert f"SRC={FORGED_USER} " in syslog and f"SRC={FORGED_USER} " not in kern
    # logger refuses facility kern ...
    assert "logger rewrites kern to user" in syslog and "logger rewrites" not in kern
    # ... but a raw <4> datagram is filed under kern: the stock kern.log rule takes it
    assert f"SRC={FORGED_KERN} " in kern
    # the imklog-only file: the kernel's line, no forgery
    assert f"SRC={REAL_ATTACKER} " in only_kernel
    assert f"SRC={FORGED_USER} " not in only_kernel and f"SRC={FORGED_KERN} " not in only_kernel

    assert FORGED_USER in banned(confdir, rsyslog / "syslog")           # why never syslog
    assert {REAL_ATTACKER, FORGED_KERN} <= banned(confdir, rsyslog / "kern.log")
    from_kernel_only = banned(confdir, rsyslog / "netfilter.log")
    assert REAL_ATTACKER in from_kernel_only
    assert not from_kernel_only & {FORGED_USER, FORGED_KERN}


# ---- the journal: _TRANSPORT is set by journald itself

JOURNAL_HELPER = r'''
import json, os, subprocess, sys, time
sys.path[:0] = [sys.argv[1]]
from f2b_ext.lab.netns import Lab
from scapy.layers.inet import IP, TCP
confdir, real, forged_native, forged_syslog = sys.argv[2:6]
# a private journald: tmpfs over its runtime dirs, in this mount namespace only
for d in ("/run/systemd", "/run/log"):
    os.makedirs(d, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", d], check=True)
os.makedirs("/run/systemd/journal", exist_ok=True)
jd = subprocess.Popen(["/lib/systemd/systemd-journald"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    deadline = time.monotonic() + 30
    while not all(os.path.exists("/run/systemd/journal/" + s) for s in ("socket", "dev-log")) and time.monotonic() < deadline:
        time.sleep(0.05)
    for s in ("socket", "dev-log"):
        os.chmod("/run/systemd/journal/" + s, 0o666)
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    line = ("FINAL_REJECT: IN=eth0 OUT= SRC={} DST=192.0.2.1 LEN=60 TOS=0x00 PREC=0x00 TTL=51 ID=5 "
            "PROTO=TCP SPT=1 DPT=22 WINDOW=1024 RES=0x00 SYN URGP=0")
    # native journal protocol, claiming every kernel field it can
    subprocess.run(nobody + ["logger", "--journald"], check=True, text=True,
                   input="MESSAGE=" + line.format(forged_native) + "\nSYSLOG_IDENTIFIER=kernel\n_TRANSPORT=kernel\nPRIORITY=4\n")
    # syslog socket, facility kern
    code = "import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(sys.argv[1].encode(), '/run/systemd/journal/dev-log')"
    subprocess.run(nobody + ["/usr/bin/python3", "-c", code, "<4>kernel: [  1.000000] " + line.format(forged_syslog)], check=True)
    def journal():
        return subprocess.run(["journalctl", "-D", "/run/log/journal", "-o", "json", "--no-pager"],
                              capture_output=True, text=True).stdout.splitlines()
    with Lab() as lab:
        lab.server_sh("iptables", "-A", "INPUT", "-j", "LOG", "--log-prefix", "FINAL_REJECT: ")
        lab.send(IP(src=real, dst="192.0.2.1") / TCP(sport=40000, dport=22, flags="S"))
        # until journald has stored the three lines (it reads /dev/kmsg and its sockets in its own time)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(any("SRC=%s " % a in e for e in journal())
                                                      for a in (real, forged_native, forged_syslog)):
            time.sleep(0.2)
    entries = journal()
    transports = {}
    for e in map(json.loads, entries):
        for addr in (real, forged_native, forged_syslog):
            if "SRC=%s " % addr in str(e.get("MESSAGE")):
                transports[addr] = e.get("_TRANSPORT")
    out = subprocess.run(["fail2ban-regex", "-c", confdir, "--raw", "-o", "ip",
                          "systemd-journal[journalpath=/run/log/journal]", "netfilter"],
                         capture_output=True, text=True)
    report = subprocess.run([sys.executable, "-m", "f2b_ext", "report", "--journal-dir", "/run/log/journal",
                             "--json", "--top", "1000000"], capture_output=True, text=True, cwd=sys.argv[1])
    print(json.dumps({"transports": transports, "banned": out.stdout.split(), "err": out.stderr[-2000:],
                      "report": report.stdout, "report_err": report.stderr}))
finally:
    jd.terminate()
    jd.wait(10)
'''


@pytest.mark.skipif(not Path("/lib/systemd/systemd-journald").exists(), reason="no systemd-journald")
def test_journal_kernel_transport_cannot_be_claimed(confdir):
    import json
    real, forged_native, forged_syslog = "198.51.100.99", "198.51.100.168", "198.51.100.169"
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "/usr/bin/python3", "-c",
                           JOURNAL_HELPER, str(ROOT), str(confdir), real, forged_native, forged_syslog],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["transports"] == {real: "kernel", forged_native: "journal", forged_syslog: "syslog"}
    # the filter's journalmatch (_TRANSPORT=kernel) keeps the real one, neither forgery
    assert real in result["banned"], result["err"]
    assert forged_native not in result["banned"] and forged_syslog not in result["banned"]
    # and `f2b-ext report --journal` counts the kernel's record, neither forgery (journald
    # also replays older lab lines from the kernel's buffer: those are real kernel lines)
    sources = {s["address"]: s["attempts"] for s in json.loads(result["report"] or "{}").get("top_sources", [])}
    assert sources.get(real, 0) >= 1, result["report_err"]      # earlier runs left theirs in the buffer
    assert forged_native not in sources and forged_syslog not in sources
