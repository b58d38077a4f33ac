"""Adapter: logrotate's hooks for a log that fail2ban reads, so that a rotation by rename
loses no line (logrotate/f2b-ext-netfilter runs `prerotate` and `postrotate`).

Why it is needed. fail2ban 1.0.2 and 1.1.0 (server/filter.py, FileContainer.open) open
the log by name for every read; when the inode behind the name changes they start the
new file at 0 and never read the old one again. rsyslog writes the old inode until its
HUP reopens the name. Whatever rsyslog wrote to the old file after fail2ban's last read
of it is lost (`copytruncate` loses the same lines: copied, then truncated, never read).

How it works. prerotate: every jail reading the log is set idle (`fail2ban-client set
JAIL idle on`): it reads nothing, and its position in the old file stays where it is.
logrotate renames the log to LOG.1 and creates LOG; postrotate (after rsyslog's HUP):
1. wait until no process holds LOG.1 open for writing: the old file is complete;
   then make rsyslog open the new file now (rsyslog opens it at its next message, and
   must not find the old file under the name in step 2): one marker line through the
   kernel's log (/dev/kmsg, matched by the rsyslog rule, by no filter), and wait until
   a process holds LOG open for writing;
2. put the old file back under the name (LOG -> LOG.f2b-ext-next, LOG.1 linked as LOG;
   rsyslog writes the new file by its descriptor, names do not matter to it);
3. idle off: each jail reads the old file on from its position to the end;
4. wait until fail2ban's database records, for every such jail, the old file's first
   line and its full length as the position (fail2ban writes it at most every 5 s of
   reading; a no-op truncate to the same size makes every backend look again);
5. rename LOG.f2b-ext-next back to LOG: the jails start the new file at 0.
Nothing is read twice and nothing is skipped. While the jails are idle (about a second,
at most `--timeout`), fail2ban neither bans nor unbans; bans wait, none is lost.
If a step cannot complete (no database, a writer that never lets go) it goes on after
`--timeout` and says so: the lines of that rotation are then as safe as before.
A prerotate with no postrotate (logrotate failed to rename) must not leave jails idle:
prerotate starts a detached sentinel that sets them active again after `--hold` seconds
unless postrotate finished first.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

NEXT_SUFFIX = ".f2b-ext-next"          # the new file's name while the old one is read to its end
STATE_DIR = "/run/f2b-ext"
# the marker line's text: " OUT=" is what the rsyslog rule takes; no SRC=, so no filter matches
MARKER = "f2b-ext logrotate: OUT="


# --- pure ------------------------------------------------------------------------------

def jails_reading(path: str, logpaths: dict[str, list[str]]) -> list[str]:
    """The jails whose log paths include `path`."""
    return sorted(j for j, paths in logpaths.items() if path in paths)


def first_line_hashes(data: bytes) -> set[str]:
    """fail2ban's hash of a file's first line (newline included): MD5, or SHA-1 where its
    MD5 probe fails (filter.py calls md5sum(' ') with a str, which raises on Python 3, so
    1.0.2 and 1.1.0 use SHA-1); '' while there is no whole line."""
    if b"\n" not in data:
        return {""}
    line = data.split(b"\n", 1)[0] + b"\n"
    return {hashlib.md5(line).hexdigest(), hashlib.sha1(line).hexdigest()}


def waiting_for(rows: dict[str, tuple], jails: list[str], hashes: set[str], size: int) -> list[str]:
    """The jails whose recorded (hash, position) is not yet the file's (hash, size)."""
    return [j for j in jails if j not in rows or rows[j][0] not in hashes or rows[j][1] != size]


# --- fail2ban, files and processes ---------------------------------------------------

class Client:
    def __init__(self, args: list[str]):
        self.args = args

    def run(self, *cmd: str, check: bool = True) -> str:
        r = subprocess.run(["fail2ban-client", *self.args, *cmd], capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"fail2ban-client {' '.join(cmd)}: {(r.stdout + r.stderr).strip()[:300]}")
        return r.stdout

    def alive(self) -> bool:
        try:
            self.run("ping")
            return True
        except (RuntimeError, OSError, subprocess.SubprocessError):
            return False

    def jails(self) -> list[str]:
        for line in self.run("status").splitlines():
            if "Jail list:" in line:
                return [j.strip() for j in line.split("Jail list:", 1)[1].split(",") if j.strip()]
        return []

    def logpaths(self, jail: str) -> list[str]:
        out = self.run("get", jail, "logpath", check=False)
        return [line.split("- ", 1)[1].strip() for line in out.splitlines() if "- " in line]

    def idle(self, jails: list[str], on: bool):
        for jail in jails:
            self.run("set", jail, "idle", "on" if on else "off", check=False)

    def dbfile(self) -> str | None:
        out = self.run("get", "dbfile", check=False)
        for line in out.splitlines():
            if "- " in line:
                name = line.split("- ", 1)[1].strip()
                return None if name in ("", "None", ":memory:") else name
        return None


def writers(path: Path) -> list[int]:
    """Processes holding `path`'s inode open for writing."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return []
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fds = f"/proc/{pid}/fd"
        try:
            for fd in os.listdir(fds):
                try:
                    s = os.stat(f"{fds}/{fd}")
                except OSError:
                    continue
                if (s.st_dev, s.st_ino) != (st.st_dev, st.st_ino):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = int(next(ln for ln in info if ln.startswith("flags:")).split()[1], 8)
                if flags & (os.O_WRONLY | os.O_RDWR):
                    found.append(int(pid))
        except (OSError, StopIteration, ValueError):
            continue
    return found


def recorded(dbfile: str, jails: list[str], path: str) -> dict[str, tuple]:
    """{jail: (firstlinemd5, lastfilepos)} fail2ban's database holds for `path`."""
    try:
        with sqlite3.connect(f"file:{dbfile}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute(f"SELECT jail, firstlinemd5, lastfilepos FROM logs WHERE path=? AND jail IN "
                              f"({','.join('?' * len(jails))})", (path, *jails)).fetchall()
    except sqlite3.Error:
        return {}
    return {j: (md5 or "", pos) for j, md5, pos in rows}


def _state(path: str) -> Path:
    return Path(STATE_DIR) / (hashlib.sha1(path.encode()).hexdigest()[:16] + ".json")


def say(text: str):
    print(f"f2b-ext logrotate: {text}", file=sys.stderr)


def prerotate(path: str, client: Client, hold: float) -> int:
    if not client.alive():
        return 0
    jails = jails_reading(path, {j: client.logpaths(j) for j in client.jails()})
    if not jails:
        return 0
    state = _state(path)
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"jails": jails, "client": client.args}))
    client.idle(jails, True)
    # the sentinel: jails never stay idle if postrotate does not come
    subprocess.Popen([sys.executable, "-m", "f2b_ext.system.rotation", "sentinel", path, str(hold)],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    return 0


def sentinel(path: str, hold: float):
    end = time.monotonic() + hold
    state = _state(path)
    while time.monotonic() < end:
        if not state.exists():
            return
        time.sleep(0.5)
    try:
        saved = json.loads(state.read_text())
        state.unlink()
    except (OSError, ValueError):
        return
    Client(saved["client"]).idle(saved["jails"], False)


def postrotate(path: str, timeout: float, marker: str = "") -> int:
    state = _state(path)
    try:
        saved = json.loads(state.read_text())
    except (OSError, ValueError):
        return 0                      # fail2ban was not reading it at prerotate
    client, jails = Client(saved["client"]), saved["jails"]
    log, old, nxt = Path(path), Path(path + ".1"), Path(path + NEXT_SUFFIX)
    end = time.monotonic() + timeout
    try:
        if not old.exists():
            say(f"{old} is missing: nothing to hand over")
            return 0
        while writers(old) and time.monotonic() < end:
            time.sleep(0.05)
        if writers(old):
            say(f"{old} is still written to after {timeout:.0f} s: lines written to it from now on are not read")
        if not writers(log):
            try:
                with open("/dev/kmsg", "w") as kmsg:
                    kmsg.write(f"<6>{MARKER} {path} rotated{marker}\n")
            except OSError as exc:         # a container may not write the kernel's log
                say(f"/dev/kmsg: {exc.strerror}; waiting for rsyslog's next line instead")
            while not writers(log) and time.monotonic() < end:
                time.sleep(0.05)
        if not writers(log):
            say(f"rsyslog did not open the new {log}: the old file's unread lines are not handed over")
            return 0
        data = old.read_bytes()
        hashes, size = first_line_hashes(data), len(data)
        if log.exists():
            os.rename(log, nxt)
        os.link(old, log)
        client.idle(jails, False)
        dbfile = client.dbfile()
        pending = jails
        while time.monotonic() < end:
            os.truncate(log, size)     # no change; every backend (mtime, IN_MODIFY) reads again
            if dbfile is None:
                time.sleep(2)          # no database to ask: two polling rounds
                pending = []
                break
            pending = waiting_for(recorded(dbfile, jails, path), jails, hashes, size)
            if not pending:
                break
            time.sleep(0.5)
        if pending:
            say(f"{', '.join(pending)} did not read {old} to its end within {timeout:.0f} s "
                f"(database {dbfile}: {recorded(dbfile, jails, path) if dbfile else '-'}; the file: {size} bytes)")
        else:
            say(f"{', '.join(jails)} read {old} to its end ({size} bytes) in {timeout - (end - time.monotonic()):.2f} s")
        return 0
    finally:
        if nxt.exists():
            os.rename(nxt, log)
        elif log.exists() and log.samefile(old):
            log.unlink()
        client.idle(jails, False)
        state.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    """`f2b-ext logrotate` and the sentinel (`python3 -m f2b_ext.system.rotation sentinel LOG SECONDS`)."""
    if argv[:1] == ["sentinel"]:
        sentinel(argv[1], float(argv[2]))
        return 0
    p = argparse.ArgumentParser(prog="f2b-ext logrotate")
    add_arguments(p)
    return run(p.parse_args(argv))


def add_arguments(p):
    p.add_argument("hook", choices=("prerotate", "postrotate"))
    p.add_argument("log", help="the log file fail2ban reads (logrotate renames it to LOG.1)")
    p.add_argument("--timeout", type=float, default=30, help="longest wait for each step, seconds (30)")
    p.add_argument("--hold", type=float, default=120,
                   help="the jails become active again after this long even without postrotate (120)")
    p.add_argument("--client", default="", help="options for fail2ban-client, e.g. \"-c DIR -s SOCKET\"")
    p.add_argument("--marker", default="", help=argparse.SUPPRESS)     # the lab's rsyslog keeps its own lines only


def run(args) -> int:
    if args.hook == "prerotate":
        return prerotate(args.log, Client(args.client.split()), args.hold)
    return postrotate(args.log, args.timeout, args.marker and f" {args.marker}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
