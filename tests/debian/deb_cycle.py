#!/usr/bin/python3
"""The .deb's life on a Debian root: install, use, remove, purge, and nothing left behind.

Run as root inside a throw-away root (tests/debian/root run ROOT REPO -- ...; the root is
an overlay, so nothing here reaches the real one), with Debian's python3 and nothing of
the checkout on the path: what runs is what the package installed.

  deb_cycle.py DEB

Steps, each checked: `dpkg -i`; the conffiles are the /etc files;
`f2b-ext --version` and `f2b-ext test` (the package's own samples and filters); a real
fail2ban-server, in a network namespace of its own, with the f2b-ext-inbound jail enabled
bans an address from kernel lines into the nftset kernel set; logrotate rotates its log
(purge must then remove the rotated copy too); `dpkg -r` keeps the
conffiles and removes the Python package; `dpkg --purge`, after which every path must be
as in the pristine root (the overlay's lower layer) but for the bookkeeping of dpkg and of
fail2ban itself (NOT_OURS).
Prints one line per step; exits 1 with the reason on the first failure.
"""
from __future__ import annotations

import grp
import hashlib
import os
import stat
import subprocess
import sys
import time

PACKAGE = "f2b-ext"
REPO = "/src"      # the checkout, read only for the list of files the package must hold


def expected_conffiles() -> set[str]:
    """The /etc files of the repository, where the package puts them."""
    def listing(sub, suffix):
        return {f"/etc/fail2ban/{sub}/{n}" for n in os.listdir(f"{REPO}/{sub}") if n.endswith(suffix)}
    return (listing("filter.d", ".conf") | listing("action.d", ".py")
            | {"/etc/fail2ban/jail.d/f2b-ext.conf", "/etc/rsyslog.d/30-f2b-ext-netfilter.conf",
               "/etc/logrotate.d/f2b-ext-netfilter"})


# The overlay's layers (tests/debian/root): the pristine root, and what was changed since.
LOWER, UPPER = "/run/f2b-ext/lower", "/run/f2b-ext/upper"
# What tests/debian/root itself made (mount points, no service starts).
RUNNER = ("/run", "/tmp", "/src", "/usr/sbin/policy-rc.d", "/.oldroot")
# What dpkg, man-db (its index, updated by a trigger) and fail2ban themselves keep, which a
# package's purge rightly leaves.
NOT_OURS = ("/var/lib/dpkg/", "/var/log/dpkg.log", "/var/cache/debconf/", "/var/log/apt/", "/var/cache/man/",
            "/var/lib/fail2ban/", "/var/log/fail2ban.log")
JAIL_LOCAL = "/etc/fail2ban/jail.d/zz-deb-cycle.local"
ATTACKER = "203.0.113.9"
LINE = ("{stamp} lab kernel: [  444.910152] FINAL_REJECT: IN=eth0 OUT= "
        "MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC={src} DST=192.0.2.1 LEN=60 TOS=0x00 "
        "PREC=0x00 TTL=51 ID=5 DF PROTO=TCP SPT=40000 DPT={dpt} WINDOW=1024 RES=0x00 SYN URGP=0\n")


class Failed(Exception):
    pass


def sh(*cmd: str, ok: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    if ok and r.returncode != 0:
        raise Failed(f"{' '.join(cmd)} exited {r.returncode}: {(r.stderr or r.stdout).strip()[-600:]}")
    return r


def describe(path: str):
    """What a path is, for comparing: None, ("dir", mode), ("link", target), ("file", mode, sha256)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("dir", st.st_mode)
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            return ("file", st.st_mode, hashlib.sha256(f.read()).hexdigest())
    return ("other", st.st_mode, st.st_rdev)


def changes() -> list[str]:
    """Every path this root has changed (the overlay's upper layer holds each new, changed or
    deleted path, and the directories above them) that now differs from the pristine root."""
    out = []
    for top, dirs, names in os.walk(UPPER):
        for name in dirs + names:
            path = os.path.join(top, name)[len(UPPER):]
            if path.startswith(RUNNER) or path.startswith(NOT_OURS):
                continue
            now, was = describe(path), describe(LOWER + path)
            if now != was:
                out.append(f"{path} ({'new' if was is None else 'gone' if now is None else 'changed'})")
    return sorted(out)


def until(predicate, seconds: float, what: str):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise Failed(f"timed out after {seconds:g} s waiting for {what}")


def step(text: str):
    print(f"  ok  {text}", flush=True)


def run_fail2ban():
    """A real fail2ban-server in a fresh network namespace (its nftables ruleset is its own)."""
    with open(JAIL_LOCAL, "w") as f:
        f.write("[DEFAULT]\nignoreself = false\n\n[sshd]\nenabled = false\n\n"
                "[f2b-ext-inbound]\nenabled = true\nbackend = polling\nlogpath = /var/log/netfilter.log\n")
    open("/var/log/netfilter.log", "a").close()
    sh("fail2ban-client", "-t")
    step("fail2ban-client -t with f2b-ext-inbound enabled")
    server = subprocess.Popen(["unshare", "--net", "fail2ban-server", "-f", "-x", "--logtarget",
                               "/var/log/fail2ban.log"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        until(lambda: sh("fail2ban-client", "ping", ok=False).returncode == 0 or server.poll() is not None,
              60, "fail2ban-server to answer")
        if server.poll() is not None:
            raise Failed(f"fail2ban-server exited {server.returncode}: {server.stderr.read()[-600:]}")
        status = lambda: sh("fail2ban-client", "status", "f2b-ext-inbound", ok=False).stdout
        until(lambda: "Currently banned" in status(), 60, "jail f2b-ext-inbound to start")
        with open("/var/log/netfilter.log", "a") as log:
            for dpt in (22, 23, 25):
                log.write(LINE.format(stamp=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                                      src=ATTACKER, dpt=dpt))
        until(lambda: ATTACKER in status(), 60, f"fail2ban to ban {ATTACKER}")
        netns = f"--net=/proc/{server.pid}/ns/net"
        table = lambda: sh("nsenter", netns, "nft", "list", "table", "inet", "f2b_ext", ok=False).stdout
        until(lambda: ATTACKER in table(), 30, f"{ATTACKER} in the kernel's set (inet f2b_ext)")
        step(f"a real fail2ban-server banned {ATTACKER} into the nftset set (fail2ban "
             f"{sh('fail2ban-server', '--version').stdout.split()[-1]})")
        sh("fail2ban-client", "stop")
        server.wait(60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    os.unlink(JAIL_LOCAL)


def rotate():
    """The package's logrotate file, forced: the log renamed, a new empty one as rsyslog makes it."""
    sh("logrotate", "-f", "-s", "/tmp/f2b-ext-logrotate.state", "/etc/logrotate.d/f2b-ext-netfilter")
    st = os.stat("/var/log/netfilter.log")
    if not os.path.isfile("/var/log/netfilter.log.1") or st.st_size != 0:
        raise Failed(f"logrotate did not rotate /var/log/netfilter.log: {sorted(os.listdir('/var/log'))}")
    if stat.S_IMODE(st.st_mode) != 0o640 or st.st_gid != grp.getgrnam("adm").gr_gid:
        raise Failed(f"the new /var/log/netfilter.log is {oct(st.st_mode)} gid {st.st_gid}, not 0640 root:adm")
    step("logrotate -f /etc/logrotate.d/f2b-ext-netfilter: netfilter.log.1, a new 0640 root:adm netfilter.log")


def cycle(deb: str):
    if not (os.path.isdir(LOWER) and os.path.isdir(UPPER)):
        raise Failed(f"no {LOWER} and {UPPER}: run me with tests/debian/root run")
    if changes():
        raise Failed(f"the root has changed before the test: {changes()[:10]}")
    sh("dpkg", "-i", deb)
    status = sh("dpkg-query", "-W", "-f=${Status} ${Version}", PACKAGE).stdout
    if not status.startswith("install ok installed"):
        raise Failed(f"dpkg-query says {status!r}")
    conffiles = {line.split()[0] for line in
                 sh("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout.splitlines() if line.strip()}
    want = expected_conffiles()
    if conffiles != want:
        raise Failed(f"conffiles differ: missing {sorted(want - conffiles)}, extra {sorted(conffiles - want)}")
    step(f"dpkg -i {os.path.basename(deb)}: {status.split()[-1]}, {len(conffiles)} conffiles")
    version = sh("f2b-ext", "--version", cwd="/").stdout.strip()
    where = sh("python3", "-c", "import f2b_ext; print(f2b_ext.__file__)", cwd="/").stdout.strip()
    if not where.startswith("/usr/lib/python3/dist-packages/"):
        raise Failed(f"f2b_ext imported from {where}")
    sh("f2b-ext", "test", cwd="/")
    step(f"{version} from {os.path.dirname(where)}; f2b-ext test passes on the package's samples")
    run_fail2ban()
    rotate()
    sh("dpkg", "-r", PACKAGE)
    left = sorted(p for p in conffiles if not os.path.exists(p))
    if left or os.path.exists("/usr/lib/python3/dist-packages/f2b_ext") or os.path.exists("/usr/bin/f2b-ext"):
        raise Failed(f"after dpkg -r: conffiles missing {left}, or the program is still there")
    step("dpkg -r: conffiles kept, program removed")
    sh("dpkg", "--purge", PACKAGE)
    left = changes()
    if left:
        raise Failed(f"dpkg --purge left {len(left)} paths different from before: {', '.join(left[:20])}")
    step("dpkg --purge: the root is as it was (beside dpkg's and fail2ban's own records)")


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: deb_cycle.py DEB", file=sys.stderr)
        return 2
    release = open("/etc/debian_version").read().strip()
    print(f"f2b-ext .deb on Debian {release}:", flush=True)
    try:
        cycle(sys.argv[1])
    except (Failed, subprocess.TimeoutExpired) as exc:
        print(f"  FAIL {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
