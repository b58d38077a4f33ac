"""The package as users get it: a wheel built from this repository (offline, with Debian's
setuptools), installed into a fresh venv made from Debian's Python with
--system-site-packages (so Debian's fail2ban imports), and every subcommand run from /
with nothing of the checkout on the path. Root is needed only to query a real
fail2ban-server for `schedule`; the rest runs in the pure tier."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, is_root
from f2b_ext.core import install as plan
from f2b_ext.system.install import package_sources

IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                ".pytest_cache", ".hypothesis")


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A venv holding only the wheel; returns its bin directory."""
    tmp = tmp_path_factory.mktemp("wheel")
    src, dist, env = tmp / "src", tmp / "dist", tmp / "venv"
    shutil.copytree(ROOT, src, symlinks=True, ignore=IGNORE)     # the build writes build/ and egg-info
    r = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src)
    assert r.returncode == 0, r.stderr
    (wheel,) = dist.glob("f2b_ext-*.whl")
    r = run("/usr/bin/python3", "-m", "venv", "--system-site-packages", env)
    assert r.returncode == 0, r.stderr
    r = run(env / "bin" / "pip", "install", "-q", "--no-deps", "--no-index", wheel)
    assert r.returncode == 0, r.stderr
    shutil.rmtree(src)                                          # nothing of the sources survives
    return env / "bin"


def f2b_ext(venv: Path, *args) -> subprocess.CompletedProcess:
    env = {"PATH": f"{venv}:{os.environ['PATH']}", "LANG": "C.UTF-8"}   # no PYTHONPATH, no checkout
    return run(venv / "f2b-ext", *args, cwd="/", env=env)


def test_the_venv_imports_the_wheel_and_its_data(venv):
    r = run(venv / "python", "-c", "import f2b_ext, f2b_ext.shipped as s; print(f2b_ext.__file__); "
            "print(*sorted(f.name for f in s.listing(s.SAMPLES)))", cwd="/", env={"PATH": os.environ["PATH"]})
    where, samples = r.stdout.splitlines()
    assert where == str(venv.parent / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
                        / "site-packages" / "f2b_ext" / "__init__.py")
    assert samples.split() == sorted(p.name for p in (ROOT / "tests" / "samples").iterdir() if p.is_file())
    assert f2b_ext(venv, "--version").stdout.startswith("f2b-ext ")


@pytest.mark.parametrize("name", ["netfilter", "ipfw", "synrecv"])
def test_test_runs_the_shipped_samples(venv, name):
    r = f2b_ext(venv, "test", "-q", "--filter", name)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    lines = sum(1 for p in (ROOT / "tests" / "samples").glob(f"{name}*")
                for line in p.read_text(errors="replace").splitlines() if line.strip() and not line.startswith("#"))
    assert r.stdout.splitlines()[-1].startswith(f"{lines} lines: ") and r.stdout.endswith(" 0 failed\n")


@pytest.fixture
def machine(tmp_path) -> Path:
    from conftest import fake_root
    return fake_root(tmp_path)


def test_install_check_and_uninstall_from_the_wheel(venv, machine):
    r = f2b_ext(venv, "install", "--root", machine)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok       7 f2b-ext jails enabled in a scratch copy" in r.stdout
    etc = machine / "etc" / "fail2ban"
    for rel in ("filter.d/netfilter.conf", "action.d/nftset.py", "jail.d/f2b-ext.conf"):
        assert (etc / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
    assert (machine / plan.SYNWATCH_UNIT).is_file() and (machine / plan.RSYSLOG_RULE).is_file()
    (site,) = machine.glob("usr/*/lib/python3*/*-packages")
    assert not any(map(plan.is_lab, package_sources(site / "f2b_ext")))

    r = f2b_ext(venv, "check", "--conf", etc)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.splitlines()[-1].endswith(("problem", "problems", "no problems found")), r.stdout

    r = f2b_ext(venv, "uninstall", "--root", machine)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (etc / "jail.d" / "f2b-ext.conf").exists() and not (site / "f2b_ext").exists()


def test_report_and_synwatch_from_the_wheel(venv, tmp_path):
    log = tmp_path / "netfilter.log"
    shutil.copy(ROOT / "tests" / "samples" / "netfilter", log)
    r = f2b_ext(venv, "report", log, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["records"] > 0
    r = f2b_ext(venv, "synwatch", "--once", "--log", "-")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.skipif(not is_root(), reason="runs a private fail2ban-server as root (its socket root's)")
def test_schedule_from_the_wheel(venv):
    from f2b_ext.lab.fail2ban_server import Fail2banServer
    # no action: this server runs in the host's namespace and must not touch its firewall
    jail = "[plain]\nenabled = true\nfilter = netfilter\nlogpath = {log}\nbackend = polling\naction =\n"
    server = Fail2banServer(jail, as_nobody=False)
    try:
        server.start(jail="plain")
        server.client("set", "plain", "banip", "198.51.100.9")
        r = f2b_ext(venv, "schedule", "--socket", server.sock, "--json")
        assert r.returncode == 0, r.stderr
        assert [(b["jail"], b["target"]) for b in json.loads(r.stdout)["bans"]] == [("plain", "198.51.100.9")]
    finally:
        server.close()


def test_the_checkouts_venv_imports_the_checkout_before_an_installed_copy():
    """`f2b-ext install` puts a partial f2b_ext into /usr/local/lib/python3*/dist-packages;
    the checkout's .venv (Makefile) must still import the checkout: it is on sys.path
    before every system site directory."""
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.skip("no .venv (make venv builds it)")
    r = run(python, "-c", "import json, site, sys; print(json.dumps([sys.path, site.getsitepackages()]))", cwd="/",
            env={"PATH": os.environ["PATH"]})     # the suite's process may carry a PYTHONPATH (fail2ban's helpers)
    path, sites = json.loads(r.stdout)
    system = [p for p in sites if not p.startswith(str(ROOT))]
    assert str(ROOT) in path and system
    assert all(path.index(str(ROOT)) < path.index(p) for p in system if p in path), (path, sites)
