"""`f2b-ext install` / `uninstall`: the pure planner exhaustively, then the command as a
user runs it on a temp root that holds a copy of this machine's /etc/fail2ban, and a
real fail2ban-server started on what it installed."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, is_root, jail_backends
from test_jails import DEBIAN_SYSLOG_BACKEND
from f2b_ext.core import install as plan
from f2b_ext.system.install import fail2ban_python, package_sources

# --- the planner (pure) ---------------------------------------------------------------

OURS = {"etc/fail2ban/filter.d/netfilter.conf": b"ours v2\n", "etc/fail2ban/jail.d/f2b-ext.conf": b"jail\n"}


def test_plan_install_follows_the_conffile_rule():
    filt, jail = sorted(OURS)
    manifest = {filt: plan.digest(b"ours v1\n")}
    cases = {                                   # destination content -> verb
        None: plan.NEW,
        b"ours v2\n": plan.SAME,
        b"ours v1\n": plan.UPDATED,             # what we wrote last time: ours to replace
        b"admin edit\n": plan.KEPT,             # somebody changed it
    }
    for old, verb in cases.items():
        (step, _) = plan.plan_install(OURS, {filt: old, jail: b"jail\n"}, manifest)
        assert (step.path, step.verb) == (filt, verb)
        assert bool(step.diff) is (verb == plan.KEPT)
    step = plan.plan_install(OURS, {filt: b"admin edit\n"}, manifest, force=True)[0]
    assert step.verb == plan.REPLACED and "-admin edit" in step.diff and "+ours v2" in step.diff
    # a file that exists but was never ours is kept too
    assert plan.plan_install(OURS, {filt: b"ours v1\n"}, {})[0].verb == plan.KEPT


def test_plan_uninstall_removes_only_what_is_unchanged():
    a, b, c = "etc/fail2ban/a.conf", "etc/fail2ban/b.conf", "etc/fail2ban/c.conf"
    manifest = {a: plan.digest(b"A"), b: plan.digest(b"B"), c: plan.digest(b"C")}
    steps = plan.plan_uninstall(manifest, {a: b"A", b: b"B edited", c: None})
    assert [(s.path, s.verb) for s in steps] == [(a, plan.REMOVED), (b, plan.KEPT), (c, plan.GONE)]
    assert plan.plan_uninstall(manifest, {a: b"A", b: b"B edited", c: None}, force=True)[1].verb == plan.REMOVED


def test_manifest_keeps_kept_files_as_last_written():
    filt, jail = sorted(OURS)
    previous = {filt: plan.digest(b"ours v1\n")}
    steps = plan.plan_install(OURS, {filt: b"admin edit\n", jail: None}, previous)
    after = plan.manifest_after(steps, OURS, previous)
    assert after == {filt: previous[filt], jail: plan.digest(b"jail\n")}
    assert plan.parse_manifest(plan.format_manifest(after, ["usr/x", "usr"], "0.1.0")) == (after, ["usr", "usr/x"])


def test_missing_dirs_are_the_ones_writing_creates():
    have = {"usr", "usr/local"}
    assert plan.missing_dirs("usr/local/lib/py/f2b_ext/a.py", have.__contains__) == \
        ["usr/local/lib", "usr/local/lib/py", "usr/local/lib/py/f2b_ext"]
    assert plan.missing_dirs("a.py", have.__contains__) == []


@pytest.mark.parametrize("text", ['[]', '{"files": {}, "dirs": ["/usr"]}', '{"files": {"/etc/passwd": "' + "0" * 64 + '"}}',
                                  '{"files": {"../x": "' + "0" * 64 + '"}}', '{"files": {"a": "nothex"}}', '{}'])
def test_a_damaged_manifest_is_an_error(text):
    with pytest.raises(ValueError):
        plan.parse_manifest(text)


def test_render_jail_sets_the_inbound_backend_only():
    text = (ROOT / "jail.d" / "f2b-ext.conf").read_text()
    assert plan.render_jail(text, None) == text
    rendered = plan.render_jail(text, "systemd")
    assert rendered.count("chosen by f2b-ext install") == 1
    inbound = rendered.split("\n[f2b-ext-inbound]\n")[1].split("\n[")[0]
    assert "backend  = systemd" in inbound
    assert rendered.replace("# chosen by f2b-ext install\nbackend  = systemd", "backend  = %(syslog_backend)s") == text
    with pytest.raises(ValueError):
        plan.render_jail("[other]\nbackend = auto\n", "systemd")


@pytest.mark.parametrize("rsyslog, journal, want", [(True, True, None), (True, False, None),
                                                    (False, True, "systemd"), (False, False, None)])
def test_choose_backend(rsyslog, journal, want):
    backend, why = plan.choose_backend(rsyslog, journal)
    assert backend == want and why


@pytest.mark.parametrize("text, problem", [("Fail2Ban v1.0.2\n", None), ("1.1.0", None),
                                           ("Fail2Ban v0.11.2", "fail2ban 0.11.2 is not supported"),
                                           ("Fail2Ban v2.0.0", "fail2ban 2.0.0 is not supported"),
                                           ("garbage", "cannot tell the fail2ban version")])
def test_version_problem(text, problem):
    got = plan.version_problem(text)
    assert got is None if problem is None else got.startswith(problem)


def test_overriding_locals_and_enabled_jails():
    ours = ["etc/fail2ban/filter.d/netfilter.conf", "etc/fail2ban/action.d/nftset.py"]
    assert plan.overriding_locals(ours, {"etc/fail2ban/filter.d/netfilter.local", "etc/fail2ban/jail.local"}) \
        == ["etc/fail2ban/filter.d/netfilter.local"]
    assert plan.enabled_suite_jails({"sshd": {"enabled": "true"}, "f2b-ext-inbound": {"enabled": "true"},
                                     "f2b-ext-ufw": {"enabled": "false"}, "f2b-ext-gre": {}}) == ["f2b-ext-inbound"]


# --- the command on a temp root -------------------------------------------------------

def f2b_ext(*args):
    return subprocess.run([sys.executable, "-m", "f2b_ext", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under root, with a hash of each file's content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if "__pycache__" not in p.parts}


@pytest.fixture
def machine(tmp_path) -> Path:
    """A root with this machine's fail2ban configuration, rsyslog, and a journal."""
    from conftest import fake_root
    return fake_root(tmp_path, journal=True)


def site(root: Path) -> Path:
    (path,) = root.glob("usr/*/lib/python3*/*-packages")
    return path


def test_install_then_uninstall_leaves_the_tree_as_it_was(machine):
    before = snapshot(machine)
    r = f2b_ext("install", "--root", str(machine))
    assert r.returncode == 0, r.stdout + r.stderr
    etc = machine / "etc" / "fail2ban"
    for rel in ("filter.d/netfilter.conf", "action.d/nftset.py", "action.d/ipset-net.py",
                "action.d/subnet-escalate.py", "jail.d/f2b-ext.conf"):
        assert (etc / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
    assert (machine / plan.RSYSLOG_RULE).read_bytes() == (ROOT / "rsyslog.d" / "f2b-ext-netfilter.conf").read_bytes()
    assert (site(machine) / "f2b_ext" / "f2b_nftset.py").is_file()
    assert "ok       7 f2b-ext jails enabled in a scratch copy" in r.stdout
    assert "imports f2b_ext from" in r.stdout
    # what the jails read is what fail2ban resolves on this release, and only a file needs rsyslog
    if DEBIAN_SYSLOG_BACKEND[Path("/etc/debian_version").read_text().split(".")[0]] == "systemd":
        assert "fail2ban resolves backend = systemd here: the jails read the journal's kernel transport" in r.stdout
        assert "the jails read /var/log/netfilter.log" not in r.stdout and "restart rsyslog" not in r.stdout
    else:
        assert "fail2ban resolves backend = auto here: the jails read /var/log/netfilter.log" in r.stdout
        assert "systemctl restart rsyslog" in r.stdout
    unit = (machine / plan.SYNWATCH_UNIT).read_text()
    python = fail2ban_python(shutil.which("fail2ban-server"))
    assert f"ExecStart={python} -m f2b_ext synwatch" in unit and "enable --now f2b-ext-synwatch" in r.stdout
    # the installed unit's command runs with only the installed package on the path
    (cmd,) = [line.split("=", 1)[1].split() for line in unit.splitlines() if line.startswith("ExecStart=")]
    once = subprocess.run([*cmd, "--once", "--log", "-"], capture_output=True, text=True, cwd="/",
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": str(site(machine))})
    assert once.returncode == 0, once.stderr
    assert "\033[" not in r.stdout

    again = f2b_ext("install", "--root", str(machine))
    assert again.returncode == 0 and " new " not in again.stdout and "updated" not in again.stdout
    assert "systemctl restart rsyslog" not in again.stdout          # nothing new for rsyslog
    assert "enable --now f2b-ext-synwatch" not in again.stdout

    r = f2b_ext("uninstall", "--root", str(machine))
    assert r.returncode == 0, r.stdout + r.stderr
    assert snapshot(machine) == before


def test_the_logrotate_file_comes_with_the_rsyslog_rule_and_goes_with_uninstall(machine):
    """Where logrotate is (/etc/logrotate.d), the log the rsyslog rule writes gets its
    logrotate file, whose hooks run with the Python install made f2b_ext importable for;
    uninstall removes it. Without logrotate, nothing is written there."""
    before = snapshot(machine)
    assert f2b_ext("install", "--root", str(machine)).returncode == 0
    assert not (machine / plan.LOGROTATE_FILE).exists()
    assert f2b_ext("uninstall", "--root", str(machine)).returncode == 0
    (machine / "etc" / "logrotate.d").mkdir()
    before = snapshot(machine)
    r = f2b_ext("install", "--root", str(machine))
    assert r.returncode == 0, r.stdout + r.stderr
    text = (machine / plan.LOGROTATE_FILE).read_text()
    python = fail2ban_python(shutil.which("fail2ban-server"))
    shipped = (ROOT / "logrotate" / "f2b-ext-netfilter").read_text()
    assert text == shipped.replace("/usr/bin/python3 -m f2b_ext", f"{python} -m f2b_ext")
    assert f"{python} -m f2b_ext logrotate prerotate /var/log/netfilter.log" in text
    assert f"{python} -m f2b_ext logrotate postrotate /var/log/netfilter.log" in text
    # the hook's command runs with only the installed package on the path (no fail2ban: nothing to do)
    hook = subprocess.run([python, "-m", "f2b_ext", "logrotate", "postrotate", "/nonexistent/netfilter.log"],
                          capture_output=True, text=True, cwd="/", env={"PATH": os.environ["PATH"],
                                                                         "PYTHONPATH": str(site(machine))})
    assert hook.returncode == 0, hook.stderr
    r = f2b_ext("uninstall", "--root", str(machine))
    assert r.returncode == 0, r.stdout + r.stderr
    assert snapshot(machine) == before


def test_install_keeps_a_changed_file_and_shows_the_difference(machine):
    assert f2b_ext("install", "--root", str(machine)).returncode == 0
    filt = machine / "etc/fail2ban/filter.d/netfilter.conf"
    filt.write_text(filt.read_text().replace("mode = normal", "mode = aggressive"))
    (machine / "etc/fail2ban/filter.d/netfilter.local").write_text("[Init]\nreplyports = 53\n")
    r = f2b_ext("install", "--root", str(machine))
    assert r.returncode == 0
    assert "kept     " + str(filt) in r.stdout
    assert "-mode = aggressive" in r.stdout and "+mode = normal" in r.stdout
    assert "netfilter.local exists and overrides" in r.stdout
    assert "mode = aggressive" in filt.read_text()
    # uninstall leaves the changed file (and says so), --force takes it
    r = f2b_ext("uninstall", "--root", str(machine))
    assert r.returncode == 1 and filt.exists() and "kept     " + str(filt) in r.stdout
    assert not (machine / "etc/fail2ban/action.d/nftset.py").exists()
    r = f2b_ext("install", "--root", str(machine), "--force")
    assert r.returncode == 0 and "replaced " + str(filt) in r.stdout and "mode = normal" in filt.read_text()


def test_dry_run_writes_nothing(machine):
    before = snapshot(machine)
    r = f2b_ext("install", "--root", str(machine), "--dry-run")
    assert r.returncode == 0 and "dry run: nothing written" in r.stdout and "new      " in r.stdout
    assert snapshot(machine) == before


def test_without_rsyslog_the_jails_read_the_journal(machine):
    (machine / "etc" / "rsyslog.d").rmdir()
    r = f2b_ext("install", "--root", str(machine))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fail2ban resolves backend = systemd here: the jails read the journal" in r.stdout
    assert not (machine / plan.RSYSLOG_RULE).exists() and "restart rsyslog" not in r.stdout
    etc = machine / "etc" / "fail2ban"
    (etc / "jail.local").write_text("[sshd]\nenabled = false\n" + "".join(
        f"[{j}]\nenabled = true\n" for j in ("f2b-ext-inbound", "f2b-ext-outbound", "f2b-ext-gre")))
    assert jail_backends(etc) == {"f2b-ext-inbound": "systemd", "f2b-ext-outbound": "systemd", "f2b-ext-gre": "systemd"}


def test_uninstall_refuses_while_a_jail_is_enabled(machine):
    assert f2b_ext("install", "--root", str(machine)).returncode == 0
    (machine / "etc/fail2ban/jail.local").write_text("[f2b-ext-inbound]\nenabled = true\n")
    r = f2b_ext("uninstall", "--root", str(machine))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == ("f2b-ext: f2b-ext-inbound enabled in your jail configuration: disable "
                        "(and reload fail2ban) first, or use --force\n")
    assert (machine / "etc/fail2ban/action.d/nftset.py").exists()


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "no fail2ban configuration there"),
    (lambda root: (root / "etc/fail2ban").mkdir(parents=True), "nothing to uninstall"),
    (lambda root: ((root / "etc/fail2ban").mkdir(parents=True),
                   (root / "var/lib/f2b-ext").mkdir(parents=True),
                   (root / plan.MANIFEST).write_text("{not json")), "is damaged"),
])
def test_errors_are_one_line(tmp_path, setup, message):
    setup(tmp_path)
    r = f2b_ext("uninstall", "--root", str(tmp_path))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.kernel
@pytest.mark.skipif(not is_root(), reason="needs root for a network namespace")
def test_a_real_fail2ban_server_runs_what_install_put_there(machine):
    """Only the installed tree and the installed f2b_ext (not this checkout) are used."""
    from f2b_ext.lab.fail2ban_server import Fail2banServer
    from f2b_ext.lab.netns import Lab, until
    from test_jails import line
    assert f2b_ext("install", "--root", str(machine)).returncode == 0
    local = ("[DEFAULT]\nignoreself = false\n\n[sshd]\nenabled = false\n\n"
             "[f2b-ext-inbound]\nenabled = true\nlogpath = {log}\nbackend = polling\n")
    with Lab() as lab:
        f2b = Fail2banServer(local, netns=lab.server,
                             installed=(machine / "etc" / "fail2ban", site(machine)))
        try:
            f2b.start(jail="f2b-ext-inbound")
            f2b.append(*[line("FINAL_REJECT: ", "203.0.113.9", dpt=p) for p in (22, 23, 25)])
            f2b.wait_for(lambda: "203.0.113.9" in f2b.bans("f2b-ext-inbound"), what="the ban")
            # fail2ban lists a ban before its actions have run: wait for the kernel's set
            assert until(lambda: "203.0.113.9" in lab.server_sh("nft", "list", "table", "inet", "f2b_ext"),
                         15), "the installed nftset action did not put the ban in the set"
            status = lambda: f2b.client("get", "f2b-ext-inbound", "action", "subnet-escalate", "status").stdout
            assert until(lambda: "counting 1 members" in status(), 15), status()  # installed subnet-escalate saw it
        finally:
            f2b.close()


# --- what goes into fail2ban's Python; modes whatever the umask ------------------------

def test_imported_modules_reads_every_form_of_import():
    src = ("from . import escalation, host\nfrom .nftset import x\nimport pkg.ipset\n"
           "from pkg.f2b_action import A\nfrom pkg import report\nimport os\n"
           "def later():\n    from .lab import Lab\n")
    # `from M import y` names M.y too: y may be a submodule (resolve() keeps what exists)
    assert plan.imported_modules(src, package="pkg") == {"escalation", "host", "nftset", "nftset.x", "ipset", "f2b_action",
                                          "f2b_action.A", "report", "lab", "lab.Lab"}


def test_imported_modules_reads_relative_imports_from_inside_a_subpackage():
    src = "from . import nftset\nfrom ..core.escalation import Escalator\nfrom .. import errors\nfrom ... import x\n"
    assert plan.imported_modules(src, module="plugins.nftset") == {
        "plugins", "plugins.nftset", "core.escalation", "core.escalation.Escalator", "errors"}
    modules = {"__init__": "", "errors": "", "core.__init__": "", "core.escalation": "", "plugins.__init__": ""}
    assert plan.resolve("core.escalation", modules) == ["core.escalation", "core.__init__"]
    assert plan.resolve("core", modules) == ["core.__init__"]
    assert plan.resolve("core.escalation.Escalator", modules) == []


@pytest.fixture
def flat_lab(monkeypatch):
    """The examples' own lab and runtime entries, whatever the package's layout."""
    monkeypatch.setattr(plan, "LAB_MODULES", frozenset({"lab", "live"}))
    monkeypatch.setattr(plan, "RUNTIME_ENTRIES", ("__init__", "__main__", "synwatcher"))


def test_fail2ban_modules_follow_every_import_but_never_into_the_lab(flat_lab):
    modules = {"__init__": "", "__main__": "from .cli import main", "synwatcher": "",
               "cli": "def demo():\n    from .live import run\n", "live": "from . import lab",
               "lab": "", "plugin": "def ban():\n    from .core import decide\n", "core": "", "unused": ""}
    action = "from f2b_ext.plugin import Plugin as Action"
    assert plan.fail2ban_modules(modules, [action]) == ["__init__", "__main__", "cli", "core", "plugin", "synwatcher"]


def test_fail2ban_modules_follow_subpackages_and_take_their_init(flat_lab):
    modules = {"__init__": "", "__main__": "from .cli import main", "synwatcher": "",
               "cli.__init__": "from . import demo\n", "cli.demo": "def run():\n    from ..lab import netns\n",
               "lab.__init__": "", "lab.netns": "",
               "plugins.__init__": "", "plugins.nftset": "from ..core import nftset\n",
               "core.__init__": "", "core.nftset": "from . import escalation\n", "core.escalation": "",
               "core.unused": ""}
    action = "from f2b_ext.plugins.nftset import NftSetAction as Action"
    assert plan.fail2ban_modules(modules, [action]) == [
        "__init__", "__main__", "cli.__init__", "cli.demo", "core.__init__", "core.escalation", "core.nftset",
        "plugins.__init__", "plugins.nftset", "synwatcher"]


def test_the_shipped_plugins_never_need_the_lab():
    """What fail2ban-server itself imports (action.d/*.py, followed through every import)
    reaches no lab module even without the barrier: the barrier only cuts `f2b-ext demo`."""
    modules = package_sources(ROOT / "f2b_ext")
    todo = [m for a in (ROOT / "action.d").glob("*.py") for n in plan.imported_modules(a.read_text())
            for m in plan.resolve(n, modules)]
    seen = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [m for n in plan.imported_modules(modules[name], module=name) for m in plan.resolve(n, modules)]
    assert len(seen) > 5 and not any(map(plan.is_lab, seen))
    users = {m for m, src in modules.items() if not plan.is_lab(m)
             and any(plan.is_lab(r) for n in plan.imported_modules(src, module=m) for r in plan.resolve(n, modules))}
    assert users and all(m.split(".")[0] == "cli" for m in users), users


def test_plan_install_removes_what_we_no_longer_ship_unless_changed():
    old, edited = "usr/lib/py/f2b_ext/lab/netns.py", "usr/lib/py/f2b_ext/lab/live.py"
    manifest = {old: plan.digest(b"lab"), edited: plan.digest(b"live")}
    steps = plan.plan_install(OURS, {old: b"lab", edited: b"live, edited"}, manifest)
    verbs = {s.path: s.verb for s in steps}
    assert verbs[old] == plan.REMOVED and verbs[edited] == plan.KEPT
    assert plan.manifest_after(steps, OURS, manifest) == {**{p: plan.digest(c) for p, c in OURS.items()},
                                                          edited: manifest[edited]}
    assert {s.path: s.verb for s in plan.plan_install(OURS, {edited: b"x"}, manifest, force=True)}[edited] == plan.REMOVED
    assert old not in {s.path for s in plan.plan_install(OURS, {}, manifest)}        # already gone


def test_the_installed_copy_holds_no_lab_code(machine):
    r = f2b_ext("install", "--root", str(machine))
    assert r.returncode == 0, r.stdout + r.stderr
    installed = site(machine) / "f2b_ext"
    names = set(package_sources(installed))
    assert {"f2b_action", "f2b_nftset", "f2b_ipset", "f2b_setaction", "f2b_fleet", "__main__"} <= names
    assert not any(map(plan.is_lab, names)) and not (installed / "data").exists()
    for path in installed.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            assert b"socket.AF_PACKET" not in text and b".setns(" not in text, path     # what lab.py does
    # the part the admin meets through it says so in one line, no traceback
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(site(machine))}
    python = fail2ban_python(shutil.which("fail2ban-server"))
    for args, what in ((["demo"], "is not in " + str(installed)), (["test"], "f2b_ext/data/samples is missing")):
        r = subprocess.run([python, "-m", "f2b_ext", *args], capture_output=True, text=True, cwd="/", env=env)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and what in r.stderr, r.stderr


def test_an_upgrade_takes_away_the_lab_an_older_install_copied(machine):
    assert f2b_ext("install", "--root", str(machine)).returncode == 0
    installed, manifest = site(machine) / "f2b_ext", machine / plan.MANIFEST
    files, dirs = plan.parse_manifest(manifest.read_text())
    lab = installed / "lab.py"                          # what an older f2b-ext install copied
    lab.write_bytes(b"# the lab, as an older install copied it\n")
    files[str(lab.relative_to(machine))] = plan.digest(lab.read_bytes())
    manifest.write_text(plan.format_manifest(files, dirs, "0.0.9"))
    r = f2b_ext("install", "--root", str(machine), "-v")
    assert r.returncode == 0 and f"removed  {lab}\n" in r.stdout, r.stdout
    assert not lab.exists() and str(lab.relative_to(machine)) not in plan.parse_manifest(manifest.read_text())[0]


def modes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): oct(p.stat().st_mode) for p in sorted(root.rglob("*"))
            if "__pycache__" not in p.parts}


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_install_modes_do_not_depend_on_the_umask(machine, tmp_path, umask):
    """Under umask 000 (or 077) every path install creates has the mode it has under 022."""
    (machine / "etc" / "systemd" / "system").rmdir()          # install creates it (and its other dirs)
    other = tmp_path / "other"
    shutil.copytree(machine, other, symlinks=True)

    def install(root, mask):
        r = subprocess.run([sys.executable, "-c", f"import os, sys; os.umask({mask}); from f2b_ext.cli import main; "
                            f"sys.exit(main(['install', '--root', {str(root)!r}]))"],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        return {p: m for p, m in modes(root).items()}

    before = modes(machine)
    reference, odd = install(machine, 0o022), install(other, umask)
    assert odd == reference
    created = {p: m for p, m in reference.items() if p not in before}
    assert created and set(created.values()) == {oct(0o40755), oct(0o100644)}, created
    assert {"etc/systemd/system", "var/lib/f2b-ext"} <= {p for p, m in created.items() if m == oct(0o40755)}
    assert not list(machine.rglob("*.f2b-ext-tmp")) and not list(other.rglob("*.f2b-ext-tmp"))


def test_a_file_is_written_through_a_0600_temporary_beside_it(tmp_path, monkeypatch):
    """Seen at the moment of the rename: the temporary is in the target's directory, was
    created 0600 (before its content went in) and has its final mode only then."""
    from f2b_ext.system import install
    seen = []
    real_mkstemp, real_replace = install.tempfile.mkstemp, install.os.replace

    def mkstemp(**kw):
        fd, name = real_mkstemp(**kw)
        seen.append(("created", Path(name).parent, oct(os.stat(name).st_mode & 0o777), os.stat(name).st_size))
        return fd, name

    def replace(src, dst):
        seen.append(("renamed", Path(src).parent, oct(os.stat(src).st_mode & 0o777), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(install.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(install.os, "replace", replace)
    inst = install.Installer.__new__(install.Installer)
    inst.root = tmp_path
    old = os.umask(0)
    try:
        (tmp_path / "etc").mkdir()
        inst.write("etc/new.conf", b"x")
        (tmp_path / "etc/kept-mode.conf").write_text("old")
        os.chmod(tmp_path / "etc/kept-mode.conf", 0o666)
        inst.write("etc/kept-mode.conf", b"y")
    finally:
        os.umask(old)
    etc = tmp_path / "etc"
    assert seen == [("created", etc, "0o600", 0), ("renamed", etc, "0o644", etc / "new.conf"),
                    ("created", etc, "0o600", 0), ("renamed", etc, "0o644", etc / "kept-mode.conf")]
    assert (etc / "kept-mode.conf").read_text() == "y" and sorted(p.name for p in etc.iterdir()) == ["kept-mode.conf", "new.conf"]


def test_a_package_that_already_provides_f2b_ext_is_used_not_hidden():
    ours = "/usr/local/lib/python3.11/dist-packages/f2b_ext"
    assert plan.package_source(None, ours, "0.1.0") is None                       # nothing there: copy
    assert plan.package_source((ours, "0.0.9"), ours, "0.1.0") is None            # our own last copy: update it
    note = plan.package_source(("/usr/lib/python3/dist-packages/f2b_ext", "0.1.0"), ours, "0.1.0")
    assert note == ("fail2ban's Python imports f2b_ext 0.1.0 from /usr/lib/python3/dist-packages/f2b_ext "
                    "(installed as a package): not copied")
    with pytest.raises(ValueError, match="already imports f2b_ext 0.0.9 from /usr/lib/python3/dist-packages"):
        plan.package_source(("/usr/lib/python3/dist-packages/f2b_ext", "0.0.9"), ours, "0.1.0")
