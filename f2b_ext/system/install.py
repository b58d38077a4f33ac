"""Adapter: `f2b-ext install` / `uninstall` on a real file system and a real fail2ban.

How it works: `Installer` gathers plain data (the files this suite ships, what is at
their destinations under the root, the last manifest, whether rsyslog or the journal is
there) and lets f2b_ext/core/install.py decide every step. It then writes or removes files,
and validates with the installed fail2ban itself: `fail2ban-server -t` on the result, and
on a scratch copy with every f2b-ext jail enabled (and every other jail disabled, so an
unrelated broken jail cannot hide ours), and an import of f2b_ext by the Python that runs
fail2ban-server. Nothing outside `root` is written; the scratch copies live in /tmp.

What it ships comes from the package data (f2b_ext/shipped.py) and, for fail2ban's
Python, the modules install.fail2ban_modules() picks: never the lab. Every file is
written through a temporary file created 0600 beside it, given its final mode, then
renamed over it; every directory it creates gets DIR_MODE: the result does not depend
on the umask.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from f2b_ext import __version__ as VERSION
from f2b_ext.core import install as plan
from f2b_ext import shipped
from f2b_ext.errors import F2bExtError

PACKAGE_DIR = Path(__file__).resolve().parent.parent           # f2b_ext/, above system/


def package_sources(directory: Path = PACKAGE_DIR) -> dict[str, str]:
    """{dotted name inside the package: source} of every module of the package at
    `directory`, subpackages included (not its data)."""
    return {plan.module_name(src.relative_to(directory).as_posix()): src.read_text()
            for src in sorted(directory.rglob("*.py")) if "data" not in src.relative_to(directory).parts}


class InstallError(F2bExtError, RuntimeError):
    """Stops the installer: one line for the user."""


@dataclass
class Check:
    what: str
    ok: bool
    detail: str = ""
    warn: bool = False           # ok for f2b-ext, but worth the admin's attention


@dataclass
class Result:
    steps: list
    notes: list = field(default_factory=list)
    checks: list = field(default_factory=list)

    backend: str = ""            # what fail2ban resolves for f2b-ext-inbound once installed

    @property
    def reads_journal(self) -> bool:
        return self.backend.startswith("systemd")

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def fail2ban_python(server: str) -> str:
    """The interpreter in fail2ban-server's #! line (Debian: /usr/bin/python3)."""
    try:
        first = Path(server).read_bytes()[:200].split(b"\n", 1)[0].decode()
    except OSError as exc:
        raise InstallError(f"cannot read {server}: {exc.strerror}") from None
    if not first.startswith("#!"):
        return sys.executable
    parts = first[2:].split()
    if parts and parts[0].endswith("/env") and len(parts) > 1:
        return shutil.which(parts[1]) or parts[1]
    return parts[0]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def last_error(text: str) -> str:
    errors = [line.split("ERROR", 1)[1].strip(" :") for line in text.splitlines() if "ERROR" in line]
    errors = [e for e in errors if e != "ERROR: test configuration failed" and e]
    return errors[0] if errors else (text.strip().splitlines() or ["(no output)"])[-1]


class Installer:
    def __init__(self, root: Path = Path("/"), force: bool = False):
        self.root, self.force = Path(root), force
        self.etc = self.root / plan.FAIL2BAN_DIR
        self.server = shutil.which("fail2ban-server")
        if not self.server:
            raise InstallError("fail2ban is not installed: fail2ban-server not found (apt-get install fail2ban)")
        if not self.etc.is_dir():
            raise InstallError(f"{self.etc}: no fail2ban configuration there"
                               + (" (install fail2ban first)" if self.root == Path("/") else ""))
        version = run([self.server, "--version"]).stdout
        problem = plan.version_problem(version)
        if problem:
            raise InstallError(problem)
        self.python = fail2ban_python(self.server)
        site = run([self.python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        if site.returncode != 0 or not site.stdout.strip().startswith("/"):
            raise InstallError(f"cannot ask {self.python} for its site-packages directory")
        self.site = site.stdout.strip().lstrip("/")
        self.package_note = None           # set when fail2ban's Python already has f2b_ext as a package
        self.package_dir = str(self.root / self.site / "f2b_ext")
        if self.root == Path("/"):
            found = run([self.python, "-I", "-c", "import os, f2b_ext; print(os.path.dirname(f2b_ext.__file__)); "
                         "print(f2b_ext.__version__)"], cwd="/")
            where = tuple(found.stdout.split()) if found.returncode == 0 else None
            try:
                self.package_note = plan.package_source(where if where and len(where) == 2 else None,
                                                        self.package_dir, VERSION)
            except ValueError as exc:
                raise InstallError(str(exc)) from None
            if self.package_note:
                self.package_dir = where[0]

    # --- plain data in -------------------------------------------------------------

    def has_rsyslog(self) -> bool:
        return (self.root / "etc/rsyslog.d").is_dir()

    def has_journal(self) -> bool:
        return any((self.root / p).exists() for p in
                   ("run/systemd/journal", "var/log/journal", "lib/systemd/systemd-journald",
                    "usr/lib/systemd/systemd-journald"))

    def shipped(self) -> tuple[dict[str, bytes], str]:
        """{path relative to root: content} of everything install writes, and the backend note."""
        backend, why = plan.choose_backend(self.has_rsyslog(), self.has_journal())
        files: dict[str, bytes] = {}
        try:
            for sub in shipped.FAIL2BAN_DIRS:
                for src in shipped.listing(sub, (".conf", ".py")):
                    content = src.read_bytes()
                    if sub == shipped.JAILS:
                        content = plan.render_jail(content.decode(), backend).encode()
                    files[f"{plan.FAIL2BAN_DIR}/{sub}/{src.name}"] = content
            if self.has_rsyslog():
                files[plan.RSYSLOG_RULE] = shipped.data(*shipped.RSYSLOG_RULE).read_bytes()
                if (self.root / "etc/logrotate.d").is_dir():
                    rotate = shipped.data(*shipped.LOGROTATE_FILE).read_text()
                    files[plan.LOGROTATE_FILE] = plan.render_unit(rotate, self.python).encode()
            if (self.root / "etc/systemd").is_dir():
                unit = shipped.data(*shipped.SYNWATCH_UNIT).read_text()
                files[plan.SYNWATCH_UNIT] = plan.render_unit(unit, self.python).encode()
        except shipped.DataMissing as exc:
            raise InstallError(str(exc)) from None
        if self.package_note:
            return files, why
        modules = package_sources()
        actions = [content.decode() for path, content in files.items() if "/action.d/" in path]
        for name in plan.fail2ban_modules(modules, actions):
            rel = name.replace(".", "/") + ".py"
            files[f"{self.site}/f2b_ext/{rel}"] = (PACKAGE_DIR / rel).read_bytes()
        return files, why

    def read(self, rel: str) -> bytes | None:
        try:
            return (self.root / rel).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InstallError(f"{self.root / rel}: {exc.strerror}") from None

    def manifest(self) -> tuple[dict[str, str], list[str]]:
        data = self.read(plan.MANIFEST)
        if data is None:
            return {}, []
        try:
            return plan.parse_manifest(data.decode())
        except (ValueError, UnicodeDecodeError):
            raise InstallError(f"{self.root / plan.MANIFEST} is damaged; move it away to start afresh") from None

    def local_files(self) -> set[str]:
        return {str(p.relative_to(self.root)) for p in self.etc.rglob("*.local")}

    # --- install -------------------------------------------------------------------

    def install(self, dry_run: bool = False) -> Result:
        ours, why = self.shipped()
        previous, created = self.manifest()
        steps = plan.plan_install(ours, {p: self.read(p) for p in {*ours, *previous}}, previous, self.force)
        backend, logpaths = self.resolved_backend(ours)
        result = Result(steps, notes=[why, plan.backend_note(backend, logpaths),
                                      *([self.package_note] if self.package_note else [])], backend=backend)
        for local in plan.overriding_locals(list(ours), self.local_files()):
            result.notes.append(f"{local} exists and overrides what f2b-ext installs")
        if dry_run:
            return result
        before = self.config_test(self.etc)
        try:
            for step in steps:
                if step.verb in (plan.NEW, plan.UPDATED, plan.REPLACED):
                    created += self.make_dirs(step.path)
                    self.write(step.path, ours[step.path])
                elif step.verb == plan.REMOVED:              # ours before, not shipped any more
                    (self.root / step.path).unlink()
            created += self.make_dirs(plan.MANIFEST)
            self.write(plan.MANIFEST, plan.format_manifest(plan.manifest_after(steps, ours, previous),
                                                           created, VERSION).encode())
        except OSError as exc:
            raise InstallError(f"writing {exc.filename}: {exc.strerror}") from None
        after = self.config_test(self.etc)
        if not after.ok and not before.ok and after.detail == before.detail:
            after = Check(after.what, True, f"fails as it did before f2b-ext was installed: {after.detail}", warn=True)
        result.checks = [after, self.jails_test(), self.import_test()]
        return result

    def make_dirs(self, rel: str) -> list[str]:
        """Create the missing parents of `rel`, each DIR_MODE; returns them (relative)."""
        missing = plan.missing_dirs(rel, lambda d: (self.root / d).is_dir())
        for directory in missing:
            path = self.root / directory
            path.mkdir()
            os.chmod(path, plan.DIR_MODE)           # mkdir's mode is cut by the umask
        return missing

    def write(self, rel: str, content: bytes):
        """Replace root/rel atomically: a temporary file only root can read, created
        beside it (same file system), given its final mode, synced, renamed over it."""
        path = self.root / rel
        try:
            existing = stat.S_IMODE(os.lstat(path).st_mode)
        except FileNotFoundError:
            existing = None
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".f2b-ext-tmp", dir=path.parent)  # 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(content)
                out.flush()
                os.fchmod(out.fileno(), plan.mode_for(existing))
                os.fsync(out.fileno())
            os.replace(tmp, path)                  # never a half-written config file
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # --- uninstall -----------------------------------------------------------------

    def uninstall(self, dry_run: bool = False) -> Result:
        previous, created = self.manifest()
        if not previous:
            raise InstallError(f"nothing to uninstall: no {self.root / plan.MANIFEST}")
        enabled = plan.enabled_suite_jails(self.jail_sections())
        if enabled and not self.force:
            raise InstallError(f"{', '.join(enabled)} enabled in your jail configuration: disable "
                               "(and reload fail2ban) first, or use --force")
        steps = plan.plan_uninstall(previous, {p: self.read(p) for p in previous}, self.force)
        result = Result(steps)
        if dry_run:
            return result
        for step in steps:
            if step.verb == plan.REMOVED:
                (self.root / step.path).unlink()
        kept = {s.path: previous[s.path] for s in steps if s.verb == plan.KEPT}
        if kept:
            self.write(plan.MANIFEST, plan.format_manifest(kept, created, VERSION).encode())
            return result
        (self.root / plan.MANIFEST).unlink()
        for rel in sorted(created, key=len, reverse=True):      # innermost first
            directory = self.root / rel
            shutil.rmtree(directory / "__pycache__", ignore_errors=True)   # Python's, from our imports
            try:
                directory.rmdir()
            except OSError:
                pass                # not empty: something else lives there now
        return result

    def jail_sections(self) -> dict[str, dict[str, str]]:
        """The admin's jail.local and jail.d/*.local, section -> options."""
        from configparser import RawConfigParser, Error
        parser = RawConfigParser(strict=False, interpolation=None)
        files = [self.etc / "jail.local", *sorted((self.etc / "jail.d").glob("*.local"))]
        try:
            parser.read([f for f in files if f.is_file()])
        except Error as exc:
            raise InstallError(f"cannot read your jail configuration: {str(exc).splitlines()[0]}") from None
        return {s: dict(parser.items(s)) for s in parser.sections()}

    # --- validation ----------------------------------------------------------------

    def config_test(self, confdir: Path) -> Check:
        r = run([self.server, "-t", "-c", str(confdir)])
        ok = r.returncode == 0
        return Check(f"fail2ban-server -t -c {confdir}", ok, "" if ok else last_error(r.stdout + r.stderr))

    def resolved_backend(self, ours: dict[str, bytes]) -> tuple[str, list[str]]:
        """(backend, logpaths) of f2b-ext-inbound as fail2ban's JailsReader resolves it in a
        scratch copy of the configuration with our files in it: the distribution's
        paths-*.conf and the admin's .local files decide, not a guess."""
        from fail2ban.client.jailsreader import JailsReader
        with tempfile.TemporaryDirectory(prefix="f2b-ext-backend-") as tmp:
            scratch = Path(tmp) / "fail2ban"
            shutil.copytree(self.etc, scratch, symlinks=True)
            for rel, data in ours.items():
                if rel.startswith(plan.FAIL2BAN_DIR + "/"):
                    dest = scratch / rel[len(plan.FAIL2BAN_DIR) + 1:]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(data)
            (scratch / "jail.d" / "zzz-f2b-ext-backend.local").write_text("[f2b-ext-inbound]\nenabled = true\n")
            reader = JailsReader(basedir=str(scratch), force_enable=False)
            for jail in (reader.jails if reader.read() and reader.getOptions() else []):
                if jail.getName() == "f2b-ext-inbound":
                    o = jail.options
                    return (str(o.get("backend") or "auto"),
                            [p.strip() for p in str(o.get("logpath") or "").splitlines() if p.strip()])
        return "auto", []

    def jails_test(self) -> Check:
        """Every f2b-ext jail enabled (all others disabled) in a scratch copy of the result."""
        from fail2ban.client.jailsreader import JailsReader
        with tempfile.TemporaryDirectory(prefix="f2b-ext-check-") as tmp:
            scratch = Path(tmp) / "fail2ban"
            shutil.copytree(self.etc, scratch, symlinks=True)
            reader = JailsReader(basedir=str(scratch), force_enable=False)
            reader.read()
            jails = [s for s in reader.sections() if s not in ("DEFAULT", "INCLUDES")]
            ours = [j for j in jails if j.startswith(plan.JAIL_PREFIX)]
            log = Path(tmp) / "netfilter.log"
            log.touch()
            (scratch / "jail.d" / "zzz-f2b-ext-check.local").write_text("".join(
                f"[{j}]\nenabled = {'true' if j in ours else 'false'}\n"
                + (f"logpath = {log}\n" if j in ours else "") + "\n" for j in jails))
            check = self.config_test(scratch)
        return Check(f"{len(ours)} f2b-ext jails enabled in a scratch copy", check.ok and bool(ours),
                     check.detail or ("" if ours else "no f2b-ext jail found"))

    def import_test(self) -> Check:
        site = str(self.root / self.site)
        code = (f"import sys; sys.path.insert(0, {site!r}); "
                "import f2b_ext.plugins.subnet_escalate, f2b_ext.plugins.nftset, f2b_ext.plugins.ipset_net, f2b_ext.system.synwatch; "
                "print(f2b_ext.__file__)")
        r = run([self.python, "-I", "-c", code], cwd="/")
        site = self.package_dir if self.package_note else site
        ok = r.returncode == 0 and r.stdout.startswith(site)
        detail = "" if ok else (r.stderr.strip().splitlines() or [r.stdout.strip()])[-1]
        return Check(f"{self.python} imports f2b_ext from {site}", ok, detail)
