"""A real fail2ban-server for tests: own config dir, socket, pid file and database in a
temp dir, started as `nobody` (`fail2ban-server -f -x -c DIR`), fed by appending kernel
lines to a log file it watches, read through `fail2ban-client`."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from f2b_ext.f2b_filter import PROJECT_DIR, config_dir

NOBODY = pwd.getpwnam("nobody")
SYN_LINE = ("{stamp} lab kernel: [  444.910152] FINAL_REJECT: IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 "
            "SRC={src} DST=192.0.2.1 LEN=60 TOS=0x00 PREC=0x00 TTL=51 ID=5 DF PROTO={proto}{tail}")
TAILS = {"TCP": " SPT=40000 DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0", "UDP": " SPT=40000 DPT=161 LEN=20",
         "ICMP": " TYPE=8 CODE=0 ID=1 SEQ=1", "47": ""}


def escalate_jail(params: str, ignoreip: str = "127.0.0.1/8 ::1", bantime: int = 600) -> str:
    """A jail `escalate` reading the server's log with subnet-escalate.py[params]."""
    return f"""[escalate]
enabled = true
filter = netfilter
logpath = {{log}}
backend = polling
maxretry = 1
findtime = 1h
bantime = {bantime}
ignoreip = {ignoreip}
action = subnet-escalate.py[{params}]
"""


def kernel_line(src: str, proto: str = "TCP", when: float | None = None) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(when or time.time()))
    return SYN_LINE.format(stamp=stamp, src=src, proto=proto, tail=TAILS[proto])


class Fail2banServer:
    def __init__(self, jail_conf: str, as_nobody: bool = True, workdir: Path | None = None):
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="f2bx-server-"))
        self.conf = self.dir / "conf"
        shutil.copytree("/etc/fail2ban", self.conf, dirs_exist_ok=True)
        for stock in (self.conf / "jail.d").glob("*"):
            stock.unlink()                    # Debian enables sshd there
        config_dir(self.conf)
        self.log = self.dir / "kern.log"
        self.log.touch()
        self.sock, self.pid, self.db = self.dir / "f2b.sock", self.dir / "f2b.pid", self.dir / "f2b.sqlite3"
        (self.conf / "fail2ban.local").write_text(
            f"[Definition]\nloglevel = INFO\nlogtarget = {self.dir}/fail2ban.log\nsocket = {self.sock}\n"
            f"pidfile = {self.pid}\ndbfile = {self.db}\ndbpurgeage = 30d\n")
        (self.conf / "jail.local").write_text(jail_conf.format(log=self.log))
        self.as_nobody = as_nobody
        if as_nobody:
            os.chmod(self.dir, 0o755)
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
        self.proc = None

    def start(self, timeout: float = 30, jail: str = "escalate"):
        """Start and wait until `jail` runs (a server that answers ping may still be
        applying, or about to refuse, its configuration)."""
        started = f"Jail '{jail}' started"
        before = self.server_log().count(started)       # earlier runs of this server
        env = dict(os.environ, PYTHONPATH=str(PROJECT_DIR))
        cmd = ["fail2ban-server", "-f", "-x", "-c", str(self.conf)]
        if self.as_nobody:
            cmd = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups", *cmd]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fail2ban-server exited {self.proc.returncode}: {self.proc.stdout.read()[-3000:]}"
                                   f"\n{self.server_log()[-3000:]}")
            if self.server_log().count(started) > before and self.client("ping", check=False).returncode == 0:
                return self
            time.sleep(0.2)
        raise RuntimeError("fail2ban-server did not answer: " + self.server_log()[-3000:])

    def stop(self, kill: bool = False):
        if not self.proc:
            return
        if kill:
            self.proc.send_signal(signal.SIGKILL)
        else:
            self.client("stop", check=False)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["fail2ban-client", "-c", str(self.conf), "-s", str(self.sock), *args], capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise RuntimeError(f"fail2ban-client {' '.join(args)}: {r.stdout}{r.stderr}")
        return r

    def append(self, *lines: str):
        with open(self.log, "a") as fh:
            fh.write("".join(line + "\n" for line in lines))

    def bans(self, jail: str) -> dict[str, int]:
        """{address or prefix: ban length in seconds} from `get JAIL banip --with-time`."""
        out = self.client("get", jail, "banip", "--with-time").stdout
        result = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[3] == "+":
                result[parts[0]] = int(parts[4])
        return result

    def wait_for(self, predicate, timeout: float = 15, what: str = "condition"):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; server log:\n{self.server_log()[-4000:]}")

    def server_log(self) -> str:
        path = self.dir / "fail2ban.log"
        return path.read_text(errors="replace") if path.exists() else ""
