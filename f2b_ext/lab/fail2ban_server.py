"""Adapter: a private, real fail2ban-server (Debian's package) for tests, benchmarks and
the live demo.

How it works: the stock /etc/fail2ban is copied into a temp dir (its jail.d emptied:
Debian enables sshd there), the suite's filter.d/action.d are added, and a
fail2ban.local points socket, pid file, database and log into that dir, so nothing of the
machine's own fail2ban is read or touched. The jails come as jail.local text whose
`{log}` names a log file in the dir. The server runs in the foreground
(`fail2ban-server -f -x -c DIR`) as `nobody`, or as root inside a network namespace
when its actions must change that namespace's firewall; `PYTHONPATH` points at the
directory this f2b_ext is imported from, so action.d/*.py import the same code. `start()` returns once fail2ban says the
jail started, not merely once it answers ping.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from f2b_ext.system.filter_runner import config_dir
from f2b_ext.lab.netns import until
from f2b_ext.errors import F2bExtError

IMPORT_ROOT = Path(__file__).resolve().parents[2]          # holds this f2b_ext package


class ServerError(F2bExtError, RuntimeError):
    pass


class Fail2banServer:
    def __init__(self, jail_conf: str, as_nobody: bool = True, netns: str | None = None,
                 workdir: Path | None = None, loglevel: str = "INFO", installed: tuple[Path, Path] | None = None,
                 prefix: tuple[str, ...] = ()):
        """`installed`: (etc/fail2ban, site-packages) of an `f2b-ext install --root`, used
        as they are instead of the stock config plus this project. `prefix`: a command
        the server runs under inside `netns` (say, `unshare --mount` with another
        resolv.conf)."""
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="f2bx-server-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "conf"
        shutil.copytree(installed[0] if installed else "/etc/fail2ban", self.conf, dirs_exist_ok=True)
        self.pythonpath = str(installed[1]) if installed else str(IMPORT_ROOT)
        if not installed:
            for stock in (self.conf / "jail.d").glob("*"):
                stock.unlink()
            config_dir(self.conf)
        self.as_nobody, self.netns, self.prefix = as_nobody and netns is None, netns, tuple(prefix)
        if self.as_nobody and not installed:
            # `nobody` may not read the clone (say, under /root): it imports a copy of the
            # package from the server's own dir instead
            package = self.dir / "python"
            shutil.copytree(IMPORT_ROOT / "f2b_ext", package / "f2b_ext", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
            self.pythonpath = str(package)
        self.log = self.dir / "kern.log"
        self.log.touch()
        self.sock, self.pid = self.dir / "f2b.sock", self.dir / "f2b.pid"
        self.db = self.dir / "f2b.sqlite3"
        (self.conf / "fail2ban.local").write_text(
            f"[Definition]\nloglevel = {loglevel}\nlogtarget = {self.dir}/fail2ban.log\nsocket = {self.sock}\n"
            f"pidfile = {self.pid}\ndbfile = {self.db}\ndbpurgeage = 30d\n")
        (self.conf / "jail.local").write_text(jail_conf.format(log=self.log))
        if self.as_nobody:
            nobody = pwd.getpwnam("nobody")
            os.chmod(self.dir, 0o755)
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        self.proc = None

    def start(self, timeout: float = 30, jail: str = "escalate"):
        """Start and wait until `jail` runs (a server that answers ping may still be
        applying, or about to refuse, its configuration)."""
        started = f"Jail '{jail}' started"
        before = self.server_log().count(started)       # earlier runs of this server
        env = dict(os.environ, PYTHONPATH=self.pythonpath)
        cmd = ["fail2ban-server", "-f", "-x", "-c", str(self.conf)]
        if self.as_nobody:
            nobody = pwd.getpwnam("nobody")
            cmd = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", *cmd]
        cmd = [*self.prefix, *cmd]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise ServerError(f"fail2ban-server exited {self.proc.returncode}: {self.proc.stdout.read()[-3000:]}"
                                  f"\n{self.server_log()[-3000:]}")
            if self.server_log().count(started) > before and self.client("ping", check=False).returncode == 0:
                return self
            time.sleep(0.1)
        raise ServerError("fail2ban-server did not start its jail: " + self.server_log()[-3000:])

    def stop(self, kill: bool = False):
        """`fail2ban-client stop`, or with `kill` a SIGKILL (nothing cleaned up)."""
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
        if kill:
            for leftover in (self.sock, self.pid):
                leftover.unlink(missing_ok=True)
        self.proc = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["fail2ban-client", "-c", str(self.conf), "-s", str(self.sock), *args],
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise ServerError(f"fail2ban-client {' '.join(args)}: {r.stdout}{r.stderr}")
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

    def wait_for(self, predicate, timeout: float = 15, what: str = "condition", every: float = 0.2):
        """until(), but a timeout is an AssertionError showing the server's log."""
        value = until(predicate, timeout, every)
        if value is None:
            raise AssertionError(f"timed out waiting for {what}; server log:\n{self.server_log()[-4000:]}")
        return value

    def server_log(self) -> str:
        path = self.dir / "fail2ban.log"
        return path.read_text(errors="replace") if path.exists() else ""
