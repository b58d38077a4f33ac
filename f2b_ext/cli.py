"""The `f2b-ext` command line.

How it works: each subcommand is a small function that gathers its input (files,
fail2ban, the kernel), asks the pure core or fail2ban for decisions, and prints. Every
error f2b-ext raises on purpose (f2b_ext.errors: `F2bExtError`, `CliError` among them)
is one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import __version__, netfilter as nf, shipped
from .errors import CliError, F2bExtError
from .escalation import ConfigError
from .f2b_filter import Fail2banMissing, FilterRunner, config_dir, ensure_utc
from .samples import SampleError, read_cases


# --- output -------------------------------------------------------------------------

class Style:
    """ANSI colour only on a terminal (and never with NO_COLOR)."""

    def __init__(self, stream, mode: str = "auto"):
        self.on = mode == "always" or (mode == "auto" and stream.isatty() and "NO_COLOR" not in os.environ)

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on else text

    def red(self, t): return self._c("31;1", t)
    def green(self, t): return self._c("32", t)
    def dim(self, t): return self._c("2", t)
    def bold(self, t): return self._c("1", t)


# --- shared helpers -------------------------------------------------------------------

def parse_filter_spec(spec: str) -> tuple[str, dict]:
    """'netfilter[direction=out, logprefix=X]' -> ('netfilter', {...}), as jails write it."""
    from fail2ban.helpers import extractOptions
    try:
        name, options = extractOptions(spec)
    except ValueError:
        raise ConfigError(f"bad filter spec {spec!r}: expected NAME or NAME[key=value, ...]") from None
    return name, dict(options)


# The filters this suite ships. Only netfilter has a pure core that explains each verdict
# (f2b_ext/netfilter.py); for the others the verdict is fail2ban's alone.
SHIPPED_FILTERS = ("netfilter", "ipfw", "synrecv")


def _runner(spec: str, workdir: Path) -> tuple[FilterRunner, nf.Policy | None]:
    name, options = parse_filter_spec(spec)
    if name not in SHIPPED_FILTERS:
        raise CliError(f"unknown filter {name!r} (this suite ships: {', '.join(SHIPPED_FILTERS)})")
    try:
        policy = nf.Policy.from_filter_options(options) if name == "netfilter" else None
        return FilterRunner(name, options, config_dir(workdir)), policy
    except ValueError as exc:
        raise CliError(f"filter {spec}: {exc}") from None


@dataclass
class Judged:
    line: str
    banned: str | None        # fail2ban's verdict: the address it would ban
    reason: str               # the core's explanation
    agree: bool               # fail2ban and the core agree


def judge(runner: FilterRunner, policy: nf.Policy | None, line: str, journal: bool = False) -> Judged:
    from fail2ban.server.mytime import MyTime
    found = runner.match(line, journal_time=MyTime.time() if journal else None)
    banned = found[0].ip if found else None
    if policy is None:          # no core for this filter: fail2ban's word, and which regex
        reason = (f"failregex #{found[0].regex_index + 1}" + "".join(f", {k}={v}" for k, v in found[0].groups.items())
                  if found else "no failregex matched")
        return Judged(line, banned, reason, True)
    verdict = nf.judge_line(line, policy)
    agree = bool(found) == verdict.attempt and (not found or banned == str(verdict.remote))
    return Judged(line, banned, verdict.reason, agree)


# --- test -----------------------------------------------------------------------------

def cmd_test(args) -> int:
    """Samples (with failJSON expectations) or plain logs through the filter."""
    out = Style(sys.stdout, args.color)
    name = parse_filter_spec(args.filter)[0]
    if name not in SHIPPED_FILTERS:
        raise CliError(f"unknown filter {name!r} (this suite ships: {', '.join(SHIPPED_FILTERS)})")
    files = [Path(f) for f in args.logfile] or \
        [f for f in shipped.listing(shipped.SAMPLES) if f.name.startswith(name)]
    if not files:
        raise CliError(f"no sample logs for {name} in {shipped.data(shipped.SAMPLES)}")
    for f in args.logfile:
        if not Path(f).is_file():
            raise CliError(f"{f}: no such file")
        if not os.access(f, os.R_OK):
            raise CliError(f"{f}: permission denied")
    ensure_utc()
    totals = Counter()
    with tempfile.TemporaryDirectory(prefix="f2b-ext-") as tmp:
        runners: dict = {}

        def get(spec):
            if spec not in runners:
                runners[spec] = _runner(spec, Path(tmp) / str(len(runners)))
            return runners[spec]

        for path in files:
            try:
                with shipped.as_file(path) as real:          # a shipped sample is package data
                    cases = read_cases(real)
            except (SampleError, UnicodeDecodeError, OSError) as exc:
                raise CliError(f"{path}: {exc}") from None
            has_expectations = any(c.expect for c in cases)
            for case in cases:
                opts = {k: v for k, v in case.options.items() if k != "logtype"}
                spec = args.filter if not opts else \
                    f"{name}[" + ", ".join(f'{k}="{v}"' for k, v in sorted(opts.items())) + "]"
                runner, policy = get(spec)
                j = judge(runner, policy, case.line, journal=case.options.get("logtype") == "journal")
                failed = not j.agree
                if has_expectations:
                    want = case.expect.get("host") if case.should_match else None
                    failed |= (j.banned is None) != (want is None) or \
                        (want is not None and j.banned != str(ipaddress.ip_network(want, strict=False)
                                                             if "/" in want else ipaddress.ip_address(want)))
                totals["lines"] += 1
                totals["ban" if j.banned else "ignored"] += 1
                totals["failed"] += failed
                if args.quiet and not failed:
                    continue
                where = out.dim(f"{path.name}:{case.lineno}")
                if j.banned:
                    verdict = out.green(f"BAN {j.banned}") + f"  attempt: {j.reason}"
                else:
                    verdict = out.dim("ignored: " + j.reason)
                mark = out.red("FAIL ") if failed else ""
                print(f"{mark}{where}  {verdict}")
                if failed and not j.agree:
                    print(out.red("     fail2ban and the core disagree on this line (a bug: please report it)"))
    summary = (f"{totals['lines']} lines: {totals['ban']} would ban, {totals['ignored']} ignored, "
               f"{totals['failed']} failed")
    print(out.bold(summary) if not totals["failed"] else out.red(summary))
    return 1 if totals["failed"] else 0


# --- install / uninstall ------------------------------------------------------------

VERB_STYLE = {"new": "green", "updated": "green", "replaced": "red", "kept": "red",
              "removed": "green", "same": "dim", "gone": "dim"}


def _run_installer(args, what: str):
    """(installer, result) of Installer.install or .uninstall."""
    from .installer import Installer
    if os.geteuid() != 0 and args.root == "/" and not args.dry_run:
        raise CliError(f"{what} into / needs root (try --dry-run, or --root DIR)")
    installer = Installer(Path(args.root), force=args.force)
    return installer, getattr(installer, what)(dry_run=args.dry_run)


def _print_steps(out: Style, steps, root: str, verbose: bool):
    """One line per file; the f2b_ext package's files one line per verb unless verbose."""
    package: dict[str, list] = {}
    for step in steps:
        if "/f2b_ext/" in step.path and not verbose and not step.diff:
            package.setdefault(step.verb, []).append(step)
            continue
        colour = getattr(out, VERB_STYLE.get(step.verb, "bold"))
        print(f"  {colour(f'{step.verb:<8}')} {Path(root, step.path)}")
        if step.diff:
            for line in step.diff.rstrip("\n").splitlines():
                print("    " + (out.red(line) if line.startswith("-") and not line.startswith("---")
                                else out.green(line) if line.startswith("+") and not line.startswith("+++")
                                else line))
            print("    " + (out.red("replaced your version (--force)") if step.verb == "replaced"
                            else out.bold("kept your version; `f2b-ext install --force` replaces it")))
    for verb, group in package.items():
        colour = getattr(out, VERB_STYLE.get(verb, "bold"))
        where = Path(root, group[0].path).parent
        print(f"  {colour(f'{verb:<8}')} {where}/ ({len(group)} files of the f2b_ext package; -v lists them)")


def cmd_install(args) -> int:
    out = Style(sys.stdout, args.color)
    installer, result = _run_installer(args, "install")
    print(out.bold(f"f2b-ext install into {installer.etc}" + (" (dry run: nothing written)" if args.dry_run else "")))
    _print_steps(out, result.steps, args.root, args.verbose)
    for note in result.notes:
        print(f"  {out.dim('note')}     {note}")
    if args.dry_run:
        return 0
    print(out.bold("validate"))
    for check in result.checks:
        mark = out.red("FAIL") if not check.ok else out.bold("warn") if check.warn else out.green("ok  ")
        print(f"  {mark}     {check.what}" + (f": {check.detail}" if check.detail else ""))
    if not result.ok:
        print(out.red("f2b-ext is installed but fail2ban would not run it: fix the FAIL lines above"))
        return 1
    rsyslog = any(s.path.endswith("f2b-ext-netfilter.conf") and s.verb != "same" for s in result.steps)
    unit = any(s.path.endswith("f2b-ext-synwatch.service") and s.verb != "same" for s in result.steps)
    print(out.bold("next"))
    steps = ["enable a jail in /etc/fail2ban/jail.local, e.g.  [f2b-ext-inbound]  enabled = true"]
    if rsyslog and not result.reads_journal:     # the journal needs no rsyslog
        steps.append("systemctl restart rsyslog   (starts /var/log/netfilter.log)")
    steps += ["have your firewall LOG what it drops (ufw logging on, firewall-cmd --set-log-denied=all, "
              "or an nft `log prefix` rule)",
              "f2b-ext check   (finds what would keep the jails from seeing or banning)",
              *(["systemctl daemon-reload && systemctl enable --now f2b-ext-synwatch   (SYN floods on open "
                 "ports, for the f2b-ext-synrecv jail)"] if unit else []),
              "fail2ban-client reload && fail2ban-client status f2b-ext-inbound"]
    for n, step in enumerate(steps, 1):
        print(f"  {n}. {step}")
    return 0


def cmd_uninstall(args) -> int:
    out = Style(sys.stdout, args.color)
    _, result = _run_installer(args, "uninstall")
    print(out.bold(f"f2b-ext uninstall from {args.root}" + (" (dry run: nothing removed)" if args.dry_run else "")))
    _print_steps(out, result.steps, args.root, True)
    kept = [s for s in result.steps if s.verb == "kept"]
    if kept:
        print(out.red(f"{len(kept)} changed since install, left in place (--force removes them too)"))
        return 1
    return 0


# --- report ---------------------------------------------------------------------------

class Progress:
    """A progress bar on stderr, only when stderr is a terminal and the size is known."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.on = total > 0 and stream.isatty()
        self.next = 0.0
        self.start = time.monotonic()

    def update(self, done: int, lines: int):
        now = time.monotonic()
        if not self.on or now < self.next:
            return
        self.next = now + 0.1
        frac = min(1.0, done / self.total)
        rate = done / max(now - self.start, 1e-6) / 1e6
        self.stream.write(f"\r[{'#' * int(30 * frac):<30}] {frac:4.0%}  {lines:,} lines  {rate:.1f} MB/s ")
        self.stream.flush()

    def close(self):
        if self.on:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()


def _log_lines(path: Path, progress_stream=sys.stderr):
    """The lines of a log file (plain or .gz), streamed, with a progress bar on a terminal."""
    import gzip
    import stat
    try:
        if stat.S_ISDIR(path.stat().st_mode):
            raise CliError(f"{path}: is a directory")
        raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
        size = os.fstat(raw.fileno()).st_size if path.suffix != ".gz" else 0
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except PermissionError:
        raise CliError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None
    progress = Progress(size, progress_stream)
    done = 0
    try:
        with raw:
            for n, data in enumerate(raw, 1):
                done += len(data)
                if n % 4096 == 0:
                    progress.update(done, n)
                yield data.decode("utf-8", "replace").rstrip("\r\n")
    except (OSError, EOFError) as exc:
        raise CliError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        progress.close()


def _journal_lines(since: float | None, directory: str | None = None):
    """The journal's kernel-transport records, streamed from journalctl."""
    import subprocess
    exe = shutil.which("journalctl")
    if not exe:
        raise CliError("journalctl not found: --journal needs systemd's journal")
    if directory and not Path(directory).is_dir():
        raise CliError(f"{directory}: no such directory")
    cmd = [exe, "_TRANSPORT=kernel", "-o", "short-iso-precise", "--no-pager", "-q",
           *([f"--directory={directory}"] if directory else [])]
    if since is not None:
        cmd.append(f"--since=@{int(since)}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for data in proc.stdout:
            yield data.decode("utf-8", "replace").rstrip("\n")
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise CliError(f"journalctl: {err.splitlines()[-1] if err else f'exit {proc.returncode}'}")


def cmd_report(args) -> int:
    from . import report
    journal = args.journal or bool(args.journal_dir)
    if bool(args.logfile) == journal:
        raise CliError("give one LOGFILE or --journal")
    now = time.time()
    try:
        since = report.parse_since(args.since, now) if args.since else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    from .escalation import parse_bogons
    bogons = parse_bogons(args.bogons)
    policy = nf.Policy(direction="any")
    if args.filter != "netfilter":          # the jail's parameters (fail2ban reads the spec)
        name, options = parse_filter_spec(args.filter)
        if name != "netfilter":
            raise CliError(f"report reads the netfilter filter's records, not {name!r}")
        try:
            policy = nf.Policy.from_filter_options({**options, "direction": "any"})
        except ValueError as exc:
            raise CliError(f"filter {args.filter}: {exc}") from None
    found = [] if args.no_dependencies else _dependencies()[0]
    dependencies = {str(d.net.network_address): d.source for d in found if d.net.num_addresses == 1}
    rep = report.Report(now=now, since=since, policy=policy, hosts=args.hosts, bogons=bogons,
                        dependencies=dependencies)
    lines = _journal_lines(since, args.journal_dir) if journal else _log_lines(Path(args.logfile))
    for line in lines:
        rep.feed(line)
    summary = rep.summary(top=args.top)
    if args.json:
        import json
        summary["source"] = "journal" if journal else args.logfile
        json.dump(summary, sys.stdout, indent=1)
        print()
        return 0
    out = Style(sys.stdout, args.color)
    width = shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else 100
    for line in report.render(summary, "journal (kernel transport)" if journal else args.logfile,
                              out, width=width):
        print(line)
    return 0


# --- talking to the running fail2ban -------------------------------------------------

DEFAULT_SOCKET = "/var/run/fail2ban/fail2ban.sock"


def _socket_path(args) -> str:
    """--socket, else what fail2ban-client would use: `socket` in CONFDIR/fail2ban.conf(.local)."""
    if args.socket:
        return args.socket
    try:
        from fail2ban.client.fail2banreader import Fail2banReader
    except ImportError:
        raise Fail2banMissing("fail2ban is not installed (apt-get install fail2ban)") from None
    if not Path(args.conf, "fail2ban.conf").is_file():
        raise Fail2banError(f"{args.conf}/fail2ban.conf not found: is fail2ban installed? (or give --socket)")
    reader = Fail2banReader(basedir=args.conf)
    reader.read()
    return reader.getEarlyOptions().get("socket") or DEFAULT_SOCKET


class Fail2banError(F2bExtError):
    """The running fail2ban (or its configuration): unreachable, refusing, or not root's."""


class Fail2ban:
    """A connection to the running fail2ban-server, over fail2ban's own client protocol
    (what fail2ban-client speaks); every failure is a one-line Fail2banError.

    fail2ban's answers are pickles, and unpickling runs code: before anything is sent or
    read, the socket file and the process that listens on it (SO_PEERCRED, which the
    peer cannot forge) must both be root's, or this user's own."""

    def __init__(self, sock: str, timeout: float = 10):
        import socket as _socket
        from . import install as plan
        try:
            from fail2ban.client.csocket import CSocket
            from fail2ban.protocol import CSPROTO
        except ImportError:
            raise Fail2banMissing("fail2ban is not installed (apt-get install fail2ban)") from None
        self.sock, self._csocket, self._proto = sock, CSocket, CSPROTO
        self.client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.client.settimeout(timeout)
        try:
            self._trust(os.stat(sock).st_uid, "owned")
            self.client.connect(sock)
            self._trust(self._peer_uid(), "served")
        except FileNotFoundError:
            raise Fail2banError(f"fail2ban is not running: no socket at {sock} (systemctl start fail2ban)") from None
        except ConnectionRefusedError:
            raise Fail2banError(f"fail2ban is not running: nobody listens on {sock} (systemctl start fail2ban)") from None
        except PermissionError:
            raise Fail2banError(f"permission denied on {sock}: run as root (fail2ban's socket is root's)") from None
        except _socket.timeout:
            raise Fail2banError(f"fail2ban did not answer on {sock}") from None
        except OSError as exc:
            raise Fail2banError(f"cannot reach fail2ban at {sock}: {exc.strerror or exc}") from None
        problem = plan.version_problem(str(self.ask("version")))
        if problem:
            raise Fail2banError(problem)

    def _peer_uid(self) -> int:
        import socket as _socket
        import struct
        creds = self.client.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]            # pid, uid, gid

    def _trust(self, uid: int, how: str):
        if uid not in (0, os.geteuid()):
            import pwd
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self.client.close()
            raise Fail2banError(f"{self.sock} is {how} by {name}, not root: refusing to talk to it "
                           "(fail2ban's answers are pickles, which run code when read)")

    def ask(self, *command):
        import pickle
        import socket as _socket
        try:
            self.client.sendall(pickle.dumps(list(map(self._csocket.convert, command)), pickle.HIGHEST_PROTOCOL)
                                + self._proto.END)
            code, value = self._csocket.receive(self.client)
        except (_socket.timeout, OSError, EOFError) as exc:
            raise Fail2banError(f"fail2ban stopped answering on {self.sock}: {exc}") from None
        if code != 0:
            raise Fail2banError(f"fail2ban refused `{' '.join(command)}`: {value}")
        return value

    def jails(self) -> list[str]:
        status = dict(self.ask("status"))
        return [j.strip() for j in status.get("Jail list", "").split(",") if j.strip()]

    def close(self):
        try:
            self.client.sendall(self._proto.CLOSE + self._proto.END)     # as fail2ban-client says goodbye
        except OSError:
            pass
        self.client.close()


def cmd_schedule(args) -> int:
    from . import schedule
    f2b = Fail2ban(_socket_path(args))
    try:
        jails = [j for j in f2b.jails() if not args.jail or j in args.jail]
        missing = set(args.jail or ()) - set(jails)
        if missing - {schedule.REMOTE_JAIL}:
            raise CliError(f"no such jail: {', '.join(sorted(missing - {schedule.REMOTE_JAIL}))}")
        bans = []
        for jail in jails:
            escalating = schedule.ESCALATING_ACTION in f2b.ask("get", jail, "actions")
            for line in f2b.ask("get", jail, "banip", "--with-time"):
                ban = schedule.parse_ban(jail, line, escalating)
                if ban:
                    bans.append(ban)
    finally:
        f2b.close()
    now = time.time()
    remote = _fleet_ledger_rows(args.fleet_status, now) if not args.jail or schedule.REMOTE_JAIL in args.jail else []
    if remote:
        bans += schedule.remote_bans(remote)
        jails.append(schedule.REMOTE_JAIL)
    if args.json:
        import json
        json.dump(schedule.as_json(bans, now), sys.stdout, indent=1)
        print()
        return 0
    width = shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else 100
    for line in schedule.render(bans, now, jails, width=width, style=Style(sys.stdout, args.color)):
        print(line)
    return 0


def _fleet_ledger_rows(status_path: str | None, now: float) -> list:
    """The fleet agent's remote bans from its ledger (named in its status file); none
    when no agent runs here."""
    import json as _json
    import sqlite3
    from .fleetagent import DEFAULT_STATUS
    from .fleetledger import LedgerStore
    try:
        ledger = _json.loads(Path(status_path or DEFAULT_STATUS).read_text()).get("ledger")
        return LedgerStore(ledger, readonly=True).bans(now) if ledger else []
    except (OSError, ValueError, sqlite3.Error):
        if status_path:
            raise CliError(f"{status_path}: no fleet agent status or ledger to read") from None
        return []


# --- check ------------------------------------------------------------------------------

def _configured_jails(conf: str) -> list:
    """The enabled jails as fail2ban's own JailsReader reads CONFDIR."""
    from . import check
    try:
        from fail2ban.client.jailsreader import JailsReader
    except ImportError:
        raise Fail2banMissing("fail2ban is not installed (apt-get install fail2ban)") from None
    if not Path(conf, "jail.conf").is_file():
        raise Fail2banError(f"{conf}/jail.conf not found: is fail2ban installed? (or give --conf)")
    reader = JailsReader(basedir=conf, force_enable=False)
    if not reader.read() or not reader.getOptions():
        raise Fail2banError(f"fail2ban cannot read the jails in {conf}: see `fail2ban-client -c {conf} -t`")
    jails = []
    for jail in reader.jails:
        o = jail.options
        jails.append(check.JailView(
            name=jail.getName(), filter=parse_filter_spec(o.get("filter") or "")[0] if o.get("filter") else "",
            backend=str(o.get("backend") or "auto"),
            logpaths=tuple(p.strip() for p in str(o.get("logpath") or "").splitlines() if p.strip()),
            actions=tuple(check.action_stem(a) for a in str(o.get("action") or "").splitlines() if a.strip()),
            ignoreip=tuple(str(o.get("ignoreip") or "").replace(",", " ").split()),
            ignoreself=str(o.get("ignoreself", True)).lower() not in ("false", "no", "0", "off")))
    return jails


def _machine(conf: str):
    """Everything `check` looks at, as plain data."""
    import glob
    import subprocess
    from . import check
    m = check.Machine(jails=_configured_jails(conf))
    texts = []
    for path in ["/etc/rsyslog.conf", *sorted(glob.glob("/etc/rsyslog.d/*.conf"))]:
        try:
            texts.append(Path(path).read_text(errors="replace"))
        except OSError:
            pass
    m.kernel_only_logs = check.imklog_only_files(texts)
    nft = shutil.which("nft")
    if nft:
        r = subprocess.run([nft, "list", "ruleset"], capture_output=True, text=True)
        if r.returncode == 0:
            m.log_rules, m.nflog_rules = check.nft_log_rules(r.stdout)
        else:
            m.ruleset_readable = False
    for tool in ("iptables-legacy-save", "ip6tables-legacy-save"):
        exe = shutil.which(tool)
        if exe:
            r = subprocess.run([exe], capture_output=True, text=True)
            rules, nflog = check.iptables_log_rules(r.stdout, tool.replace("-save", ""))
            m.log_rules += rules
            m.nflog_rules += nflog
    try:
        m.loggers = check.nf_log_loggers(Path("/proc/net/netfilter/nf_log").read_text())
    except OSError:
        m.loggers = {}
    release = os.uname().release
    m.logger_available = any(name in check.SYSLOG_LOGGERS for name in m.loggers.values()) or any(
        Path(p).exists() for mod in check.SYSLOG_LOGGERS
        for p in (f"/sys/module/{mod}", *glob.glob(f"/lib/modules/{release}/kernel/net/*/netfilter/{mod}.ko*"),
                  *glob.glob(f"/lib/modules/{release}/kernel/net/netfilter/{mod}.ko*")))
    # the kernel registers nf_log_all_netns in the initial namespace only: its absence
    # (where the rest of net/netfilter is) means this is a container's namespace
    sysctl = Path("/proc/sys/net/netfilter/nf_log_all_netns")
    m.init_netns = sysctl.exists() or not sysctl.parent.is_dir()
    try:
        m.all_netns = sysctl.read_text().strip() == "1" if m.init_netns else None
    except OSError:
        m.all_netns = None
    m.own_addresses = tuple(_own_addresses())
    found, problems = _dependencies()
    m.dependencies, m.dependency_problems = tuple(dict.fromkeys(map(str, found))), tuple(problems)
    if any("nftset" in j.actions for j in m.jails):
        m.nftables_binding = _fail2ban_imports("nftables")
    for j in m.jails:
        if {"nftset", "ipset-net"} & set(j.actions):
            m.enforcement[j.name] = _enforcement(j, conf)
    from fail2ban.version import version
    from .install import parse_version
    m.fail2ban = parse_version(version)
    return m


def _dependencies() -> tuple[list, list]:
    """What subnet-escalate would guard on this machine ([Dependency], its peers
    included), and what it could not find out."""
    from . import dependencies as deps
    from .host import gather, resolve
    g = gather()
    found, problems = list(g.found), list(g.problems)
    for name, source in g.names.items():
        try:
            found += deps.dependencies(source, resolve(name), name)
        except OSError as exc:
            problems.append(f"{name} does not resolve ({exc.strerror or exc})")
    found += deps.dependencies("peer", dict.fromkeys(g.peers))
    return found, problems


def _fail2ban_imports(module: str) -> bool:
    """Can the Python that runs fail2ban-server import `module`?"""
    import subprocess
    from .installer import InstallError, fail2ban_python
    server = shutil.which("fail2ban-server")
    try:
        python = fail2ban_python(server) if server else sys.executable
    except InstallError:
        python = sys.executable
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def _enforcement(jail, conf: str):
    """(listed only, kernel only, retimed) for a jail with a set action, comparing
    `fail2ban-client get JAIL banip --with-time` with the kernel's sets (this namespace,
    the one fail2ban runs in); None when fail2ban does not answer."""
    import subprocess
    import time
    from . import ipset, setsync
    from .escalation import ban_left
    if not shutil.which("fail2ban-client"):
        return None
    r = subprocess.run(["fail2ban-client", "-c", conf, "get", jail.name, "banip", "--with-time"], capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        return None
    now, listed = time.time(), {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[3] == "+":
            try:
                start = time.mktime(time.strptime(f"{parts[1]} {parts[2]}", "%Y-%m-%d %H:%M:%S"))
                net = ipaddress.ip_network(parts[0], strict=False)
            except ValueError:
                continue
            listed[net] = ban_left(start, int(parts[4]), now)
    held = {}
    if "nftset" in jail.actions and shutil.which("nft"):
        from .nftset import jail_elements
        held.update(jail_elements(jail.name, lambda *a: subprocess.run(["nft", *a], capture_output=True,
                                                                      text=True).stdout))
    if "ipset-net" in jail.actions and shutil.which("ipset"):
        for fam in (4, 6):
            out = subprocess.run(["ipset", "save", ipset.set_name(jail.name, fam)], capture_output=True, text=True).stdout
            held.update(ipset.parse_save(out))
    plan = setsync.plan(listed, held, tolerance=3)
    return ([n for n, _ in plan.add], plan.remove, [n for n, _ in plan.retime])


def _own_addresses():
    """This machine's addresses that a remote could know it by (not loopback, not link-local)."""
    from .host import own_addresses
    return [a for a in map(ipaddress.ip_address, own_addresses()) if not (a.is_loopback or a.is_link_local)]


def cmd_check(args) -> int:
    from . import check
    found = check.findings(_machine(args.conf))
    if args.json:
        import json
        from dataclasses import asdict
        json.dump([asdict(f) for f in found], sys.stdout, indent=1)
        print()
    else:
        out = Style(sys.stdout, args.color)
        label = {check.PROBLEM: out.red("PROBLEM"), check.WARNING: out.bold("warning"), check.OK: out.green("ok     ")}
        for f in found:
            if f.level == check.OK and args.quiet:
                continue
            print(f"{label[f.level]}  {f.subject}: {f.message}" + (f"  -> fix: {f.fix}" if f.fix else ""))
        problems = sum(f.level == check.PROBLEM for f in found)
        print(out.red(f"{problems} problem{'s' if problems > 1 else ''}") if problems else out.green("no problems found"))
    return 1 if any(f.level == check.PROBLEM for f in found) else 0


# --- synwatch -------------------------------------------------------------------------

def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
        return value
    return parse


def cmd_synwatch(args) -> int:
    """Sample SYN_RECV entries; log one line per offender per interval (f2b_ext.synwatcher)."""
    from . import synwatch as sw
    from . import synwatcher
    from .escalation import parse_networks
    try:
        thresholds = sw.Thresholds(host=args.host, net=args.net, prefix4=args.prefix4, prefix6=args.prefix6,
                                   ports=sw.parse_ports(args.ports), unattributed=args.unattributed,
                                   protected=parse_networks(args.ignore, "--ignore"))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        sink = synwatcher.LineSink("-" if args.once and args.log is None else (args.log or synwatcher.DEFAULT_LOG))
    except OSError as exc:
        raise CliError(f"cannot write the log {exc.filename}: {exc.strerror}") from None
    warn = lambda msg: print(f"f2b-ext synwatch: {msg}", file=sys.stderr, flush=True)
    reader = synwatcher.reader_for(args.reader, warn)
    watcher = synwatcher.Watcher(thresholds, reader, sink, capacity=args.capacity)
    if args.once:
        watcher.once()
        return 0
    warn(f"sampling SYN_RECV every {args.interval:g}s with {reader.name}: host >= {args.host}, "
         f"/{args.prefix4} (/{args.prefix6}) >= {args.net}, ports {args.ports}; lines to "
         f"{'stdout' if sink.path == '-' else sink.path}")
    watcher.run(args.interval)
    return 0


# --- fleet ----------------------------------------------------------------------------

def cmd_fleet(args) -> int:
    """The fleet: init (cluster config), run (the agent), status."""
    if args.fleet_command == "init":
        from . import fleetinit
        servers = {}
        for item in args.servers:
            name, sep, addr = item.partition("=")
            if not sep:
                raise CliError(f"{item!r}: give each server as NAME=ADDRESS")
            servers[name] = addr
        try:
            written = fleetinit.write(Path(args.out), servers, args.store, args.certs)
        except ValueError as exc:           # fleet.EventError is one
            raise CliError(str(exc).splitlines()[0]) from None
        print(f"wrote {len(written)} files under {args.out}: per server nats-server.conf, fleet.conf and its "
              f"certificate; then once: f2b-ext fleet create --config admin/fleet.conf")
        return 0
    from .fleetagent import DEFAULT_CONFIG, DEFAULT_STATUS, AgentConfig
    if args.fleet_command == "status":
        import json as _json
        path = Path(args.status or DEFAULT_STATUS)
        try:
            st = _json.loads(path.read_text())
        except FileNotFoundError:
            raise CliError(f"no status at {path}: is the agent running? (systemctl status f2b-ext-fleet)") from None
        except ValueError:
            raise CliError(f"{path}: unreadable status") from None
        if args.bans:
            return _fleet_bans(st.get("ledger"), args.json)
        if args.json:
            print(_json.dumps(st, indent=1))
            return 0
        age = time.time() - st["time"]
        print(f"server {st['server']}: {'connected' if st['connected'] else 'NOT connected'}, "
              f"spool depth {st['spool_depth']}, published {st['published']}"
              + (f" (status {age:.0f}s old: agent stopped?)" if age > 10 else ""))
        for name, s in st["servers"].items():
            print(f"  {name:20} last event {time.strftime('%H:%M:%S', time.localtime(s['last_event']))}, lag {s['lag']:.3f}s")
        for name, until in st["quarantined"].items():
            print(f"  quarantined {name} until {time.strftime('%H:%M:%S', time.localtime(until))}")
        if "remote_bans" in st:
            kernel = st.get("kernel_bans")
            checked = (f", {kernel} in the kernel at {time.strftime('%H:%M:%S', time.localtime(st['kernel_checked']))}"
                       if kernel is not None else "")
            print(f"  remote bans {st['remote_bans']} listed ({st['remote']}){checked}, "
                  f"{st.get('repairs', 0)} repaired")
        print("  verdicts: " + (", ".join(f"{k} {v}" for k, v in sorted(st["verdicts"].items())) or "none"))
        for net, until in st["fleet_decisions"].items():
            print(f"  fleet ban {net} until {time.strftime('%Y-%m-%d %H:%M', time.localtime(until))}")
        return 0
    from . import fleet
    try:
        cfg = AgentConfig.read(args.config or DEFAULT_CONFIG, status=args.status)
    except ValueError as exc:               # fleet.EventError is one
        raise CliError(str(exc)) from None
    from .fleetagent import create_streams, run
    if args.fleet_command == "create":
        create_streams(cfg)
        print(f"stream {fleet.STREAM} and buckets {fleet.PROTECTED_BUCKET}, {fleet.DECISIONS_BUCKET} "
              f"ready ({cfg.replicas} replica(s))")
        return 0
    run(cfg)
    return 0


def _fleet_bans(path, as_json: bool) -> int:
    """`fleet status --bans`: every remote ban the agent lists, from its ledger: where it
    came from (origin servers, their jail and evidence kind) and when it ends."""
    import json as _json
    import sqlite3
    from .fleetledger import LedgerStore
    if not path:
        raise CliError("the agent's status names no ledger (an agent older than the ledger?)")
    try:
        bans = LedgerStore(path, readonly=True).bans(time.time())
    except sqlite3.Error as exc:
        raise CliError(f"{path}: {exc}") from None
    if as_json:
        print(_json.dumps([{"target": t, "until": u, "reports": [dict(zip(("origin", "until", "jail", "evidence", "at"), r))
                                                                 for r in reports]} for t, u, reports in bans], indent=1))
        return 0
    print(f"{len(bans)} remote bans")
    for target, until, reports in bans:
        origins = "; ".join(f"{o} ({jail}, {evidence})" for o, _, jail, evidence, _ in reports) or "?"
        print(f"  {target:40} until {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(until))} from {origins}")
    return 0


# --- demo -----------------------------------------------------------------------------

def cmd_demo(args) -> int:
    """The live demonstration (f2b_ext.demo), or the fleet's (f2b_ext.fleetdemo)."""
    if args.fleet:
        return demo_fleet(args)
    from .live import environment_problems
    problems = environment_problems()
    if problems:
        raise CliError(f"the live demo {problems[0]} (`make demo` installs everything; "
                       "`f2b-ext test` shows verdicts on the sample logs without root)")
    from .demo import run
    return run(Style(sys.stdout, args.color), firewall=args.firewall, banaction=args.banaction)


def demo_fleet(args) -> int:
    from .fleetdemo import environment_problems
    problems = environment_problems()
    if problems:
        raise CliError(f"the fleet demo {problems[0]} (`make venv` installs everything)")
    from .fleetdemo import run
    from .lab import LabError
    from .f2b_server import ServerError
    try:
        return run(Style(sys.stdout, args.color))
    except (LabError, ServerError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None


# --- main -----------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (the usage is what --help is for)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="f2b-ext", description="fail2ban filters, actions and jails that turn kernel firewall "
                                           "LOG lines into bans: install them, check the machine, test "
                                           "logs, report, show the ban schedule.")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour output (default: only on a terminal)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("test", help="run sample logs (or your own log) through the filter",
                       description="Print the verdict and the reason for every line, then totals. "
                                   "Sample files with failJSON comments are checked against their "
                                   "expectations; the exit status is 1 if any check failed.")
    t.add_argument("logfile", nargs="*", help="log files (default: the shipped samples)")
    t.add_argument("--filter", default="netfilter", metavar="SPEC",
                   help='filter and options as a jail writes them, e.g. "netfilter[direction=out]"')
    t.add_argument("-q", "--quiet", action="store_true", help="print only failures and totals")
    t.set_defaults(func=cmd_test)

    r = sub.add_parser("report", help="what a firewall log says: sources, ports, backscatter, subnets, activity",
                       description="Read a kernel firewall log (plain or .gz) or the journal's kernel "
                                   "records and sum it up: records per LOG prefix and direction, protocols, "
                                   "top sources and targeted ports, outbound attempts, backscatter (hosts that "
                                   "answered packets forged with this server's address), candidate subnets "
                                   "for escalation and activity per minute. Streams: any size, bounded memory.")
    r.add_argument("logfile", nargs="?", help="the log file (e.g. /var/log/netfilter.log)")
    r.add_argument("--journal", action="store_true", help="read the journal (_TRANSPORT=kernel) instead")
    r.add_argument("--journal-dir", metavar="DIR", help="read the journal files in DIR (journalctl -D), e.g. a copy")
    r.add_argument("--since", metavar="WHEN", help="only records since an age (30m, 2h, 1d) or a date (2026-11-21T08:00)")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.add_argument("--top", type=int, default=10, metavar="N", help="rows per table (default 10)")
    r.add_argument("--no-dependencies", action="store_true",
                   help="the log is another machine's: do not mark (or protect) this machine's dependencies")
    r.add_argument("--bogons", default="default", metavar="LIST",
                   help="networks never escalated, as subnet-escalate's bogons parameter: default, none, or CIDRs")
    r.add_argument("--filter", default="netfilter", metavar="SPEC",
                   help='the jail\'s filter and parameters, e.g. "netfilter[icmptypes=8|13, neverprotos=2|47]" '
                        '(both directions are read whatever its direction)')
    r.add_argument("--hosts", type=int, default=5, metavar="N",
                   help="attacking hosts that make a /24 (/64) a candidate subnet (default 5, as subnet-escalate)")
    r.set_defaults(func=cmd_report)

    sc = sub.add_parser("schedule", help="every ban of every jail and when it ends, as a timeline",
                        description="Ask the running fail2ban for every jail's bans (fail2ban-client's "
                                    "`get JAIL banip --with-time`) and draw them on one time axis, soonest "
                                    "end first; subnets that subnet-escalate banned are marked.")
    sc.add_argument("jail", nargs="*", help="only these jails (default: all)")
    sc.add_argument("--socket", metavar="PATH", help="fail2ban's socket (default: from CONFDIR/fail2ban.conf)")
    sc.add_argument("--conf", default="/etc/fail2ban", metavar="CONFDIR", help="fail2ban's configuration directory")
    sc.add_argument("--json", action="store_true", help="machine-readable output")
    sc.add_argument("--fleet-status", metavar="FILE",
                    help="the fleet agent's status file, whose ledger lists its remote bans (default: "
                         "/run/f2b-ext/fleet-status.json when an agent runs here)")
    sc.set_defaults(func=cmd_schedule)

    c = sub.add_parser("check", help="find what keeps the jails from seeing or banning attacks",
                       description="Read the configured fail2ban (its enabled jails), rsyslog, the live "
                                   "firewall ruleset and the kernel's logging state, and print one line per "
                                   "finding with its fix: forgeable logs, LOG rules rate-limited into silence, "
                                   "no LOG rule, no kernel logger, ignoreip without this machine's addresses, "
                                   "subnet escalation without a ban action that holds subnets. Exit 1 if "
                                   "there is a problem.")
    c.add_argument("--conf", default="/etc/fail2ban", metavar="CONFDIR", help="fail2ban's configuration directory")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument("-q", "--quiet", action="store_true", help="only problems and warnings")
    c.set_defaults(func=cmd_check)

    for name, helptext in (("install", "copy the filters, actions and jails into /etc/fail2ban and validate"),
                           ("uninstall", "remove exactly what install put there")):
        i = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ". "
                           + ("Never overwrites a file you changed (it shows the difference; --force "
                              "replaces it) and never writes a .local file; makes f2b_ext importable "
                              "by the Python that runs fail2ban-server; checks the result with "
                              "fail2ban-server -t." if name == "install" else
                              "Files changed since install are kept unless --force; refuses while a "
                              "f2b-ext jail is enabled."))
        i.add_argument("--root", default="/", metavar="DIR",
                       help="install under DIR (DIR/etc/fail2ban, ...) instead of /")
        i.add_argument("--dry-run", "-n", action="store_true", help="say what would change, change nothing")
        i.add_argument("--force", action="store_true",
                       help="replace (or remove) files changed since the last install")
        i.add_argument("-v", "--verbose", action="store_true", help="list every file, unchanged ones too")
        i.set_defaults(func=cmd_install if name == "install" else cmd_uninstall)

    from . import synwatcher          # no fail2ban import: the watcher runs without it
    w = sub.add_parser("synwatch", help="log sources holding many half-open (SYN_RECV) connections",
                       description="A SYN flood on an open port leaves no firewall log line; its trace "
                                   "is connections stuck in SYN_RECV. Every INTERVAL seconds, count them "
                                   "per remote address and per /24 (/64), and write one line per offender "
                                   "(a prefix at or above --net, else an address at or above --host) to the "
                                   "log that filter.d/synrecv.conf reads. Never resolves names; this "
                                   "machine's addresses, loopback and --ignore are never reported.")
    w.add_argument("--interval", type=_positive(float), default=10.0, metavar="SECONDS",
                   help="seconds between samples (default 10)")
    w.add_argument("--host", type=_positive(int), default=20, metavar="N",
                   help="entries from one address that make it an offender (default 20)")
    w.add_argument("--net", type=_positive(int), default=50, metavar="N",
                   help="entries from one /24 (/64) that make the prefix an offender (default 50)")
    w.add_argument("--prefix4", type=int, default=24, metavar="LEN", help="IPv4 prefix length counted (default 24)")
    w.add_argument("--prefix6", type=int, default=64, metavar="LEN", help="IPv6 prefix length counted (default 64)")
    w.add_argument("--ports", default="all", metavar="LIST",
                   help='local ports watched, e.g. "80,443" or "8000-8099" (default all)')
    w.add_argument("--ignore", action="append", default=[], metavar="CIDR",
                   help="never report this network, nor a prefix holding it (repeatable; use your jail's ignoreip)")
    w.add_argument("--unattributed", type=_positive(int), default=200, metavar="N",
                   help="log a summary when N entries belong to no offender (a spread flood; default 200)")
    w.add_argument("--reader", choices=("auto", "netlink", "proc"), default="auto",
                   help="netlink sock_diag (cheaper) or /proc/net/tcp{,6} (default: netlink if available)")
    w.add_argument("--log", metavar="FILE",
                   help=f"where lines go ('-': stdout, for journald; default {synwatcher.DEFAULT_LOG})")
    w.add_argument("--capacity", type=_positive(int), default=65536, metavar="N",
                   help="addresses (and prefixes) counted exactly per sample; beyond, counts are bounded "
                        "estimates that never exceed the truth (default 65536)")
    w.add_argument("--once", action="store_true", help="take one sample, print its lines (to --log if given), exit")
    w.set_defaults(func=cmd_synwatch)

    fl = sub.add_parser("fleet", help="share bans across servers through NATS JetStream",
                        description="A fleet of servers shares its bans: `init` writes a NATS cluster "
                                    "configuration with TLS and one credential per server, `run` is the agent "
                                    "(its systemd unit: f2b-ext-fleet), `status` says what it sees.")
    fsub = fl.add_subparsers(dest="fleet_command", metavar="FLEET_COMMAND")
    fsub.required = True
    fi = fsub.add_parser("init", help="write nats-server configs, TLS files and agent configs for a fleet")
    fi.add_argument("servers", nargs="+", metavar="NAME=ADDRESS", help="every fleet server's name and address")
    fi.add_argument("--out", required=True, metavar="DIR", help="an empty directory for the files")
    fi.add_argument("--store", default="/var/lib/nats/f2b-ext", metavar="DIR", help="JetStream's store directory")
    fi.add_argument("--certs", metavar="DIR",
                    help="where the certificates will be on each server (default: where they are written)")
    fr = fsub.add_parser("run", help="the agent: publish the spool, apply the fleet's bans (its systemd unit)")
    fr.add_argument("--config", metavar="FILE", help="agent configuration (default /etc/f2b-ext/fleet.conf)")
    fr.add_argument("--status", metavar="FILE", help="status file (default /run/f2b-ext/fleet-status.json)")
    fc = fsub.add_parser("create", help="create the stream and buckets once (with admin/fleet.conf from init)")
    fc.add_argument("--config", metavar="FILE", required=True, help="the administrator's fleet.conf")
    fc.set_defaults(status=None)
    fs = fsub.add_parser("status", help="servers seen, lag, spool depth, quarantined servers, remote bans")
    fs.add_argument("--status", metavar="FILE", help="status file (default /run/f2b-ext/fleet-status.json)")
    fs.add_argument("--json", action="store_true", help="machine-readable output")
    fs.add_argument("--bans", action="store_true",
                    help="every remote ban the agent lists: origin servers, jail, evidence kind, end")
    fl.set_defaults(func=cmd_fleet)

    lr = sub.add_parser("logrotate", help="logrotate's prerotate/postrotate for a log fail2ban reads: loses no line",
                        description="Run by logrotate (logrotate.d/f2b-ext-netfilter): prerotate sets the jails "
                                    "reading LOG idle, postrotate hands the old file's unread lines to them before "
                                    "they read the new one (see f2b_ext/rotation.py).")
    from . import rotation
    rotation.add_arguments(lr)
    lr.set_defaults(func=rotation.run)
    d = sub.add_parser("demo", help="the live demonstration on this kernel (root): attacks, bans, escalation",
                       description="Builds two network namespaces on this kernel with the seeds' firewall, "
                                   "rsyslog and a private fail2ban-server, plays the seeds' attacks and shows "
                                   "what happened. Touches nothing outside the namespaces it makes; "
                                   "cleans up when done or interrupted.")
    d.add_argument("--firewall", choices=("nft", "iptables-nft"), default="nft",
                   help="the server's firewall as a pure nftables ruleset or as iptables-nft rules")
    d.add_argument("--banaction", choices=("nftset", "ipset-net"), default="nftset",
                   help="the set action that blocks (ipset-net: for iptables firewalls)")
    d.add_argument("--fleet", action="store_true",
                   help="the fleet instead: three servers (nats-server, fail2ban, fleet agent each) in "
                        "namespaces; a scan on one dropped on the others, forged bans refused")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except F2bExtError as exc:              # one line (f2b_ext.errors)
        print(f"f2b-ext: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("f2b_ext."):
            raise
        # the copy `install` gives fail2ban's Python holds only what fail2ban and synwatch need
        print(f"f2b-ext: {exc.name} is not in {Path(__file__).parent} (the part of f2b_ext installed for "
              "fail2ban): run the f2b-ext command you installed (pip, pipx, a package or the checkout's .venv)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("f2b-ext: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:                   # anything the commands did not foresee
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"f2b-ext: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
