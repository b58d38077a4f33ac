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
from f2b_ext import install as plan
from f2b_ext.installer import fail2ban_python

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
    return subprocess.run([sys.executable, "-m", "f2b_ext.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def snapshot(root: Path) -> dict[str, str]:
    """Every file and directory under root, with a hash of each file's content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if "__pycache__" not in p.parts}


@pytest.fixture
def machine(tmp_path) -> Path:
    """A root with this machine's fail2ban configuration, rsyslog, and a journal."""
    root = tmp_path / "root"
    shutil.copytree("/etc/fail2ban", root / "etc" / "fail2ban")
    (root / "etc" / "rsyslog.d").mkdir()
    (root / "var" / "log" / "journal").mkdir(parents=True)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    return root


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
    assert "imports f2b_ext from" in r.stdout and "systemctl restart rsyslog" in r.stdout
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
    assert "backend = systemd" in r.stdout and not (machine / plan.RSYSLOG_RULE).exists()
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
    from f2b_ext.f2b_server import Fail2banServer
    from f2b_ext.lab import Lab, until
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
                         5), "the installed nftset action did not put the ban in the set"
            status = lambda: f2b.client("get", "f2b-ext-inbound", "action", "subnet-escalate", "status").stdout
            assert until(lambda: "counting 1 members" in status(), 5), status()  # installed subnet-escalate saw it
        finally:
            f2b.close()
