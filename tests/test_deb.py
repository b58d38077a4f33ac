"""The Debian package (`make deb`): its version, and its whole life (install, a real
fail2ban banning with it, remove, purge, nothing left) on Debian 12 (this machine, seen
through an overlay so its real /etc is never touched) and Debian 13 (the trixie root
`make trixie-root` builds). tests/debian/deb_cycle.py does the steps inside the root."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, is_root
from f2b_ext import __version__

DEB = ROOT / "build" / "deb" / f"f2b-ext_{__version__}_all.deb"
TRIXIE_ROOT = Path(os.environ.get("F2B_EXT_TRIXIE_ROOT", "/var/cache/f2b-ext/trixie"))
ROOTS = {"debian12-this-machine": Path("/"), "debian13-trixie-root": TRIXIE_ROOT}


def test_changelog_and_package_have_one_version():
    first = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    assert re.match(rf"f2b-ext \({re.escape(__version__)}\) ", first), (first, __version__)


def test_every_shipped_etc_file_is_in_the_package_install_list():
    listed = (ROOT / "debian" / "f2b-ext.install").read_text() + (ROOT / "debian" / "rules").read_text()
    for path in ("filter.d/*.conf", "action.d/*.py", "jail.d/f2b-ext.conf", "rsyslog.d/f2b-ext-netfilter.conf",
                 "logrotate/f2b-ext-netfilter", "systemd/f2b-ext-synwatch.service"):
        assert path in listed, path
        assert list(ROOT.glob(path)), f"{path} is listed for the package but not in the repository"


@pytest.mark.kernel
@pytest.mark.skipif(not is_root(), reason="dpkg and chroot need root")
@pytest.mark.parametrize("name", ROOTS)
def test_deb_installs_bans_and_purges_without_a_trace(name):
    root = ROOTS[name]
    if Path("/run/f2b-ext/upper").is_dir():
        pytest.skip("inside a root of tests/debian/root (no overlay on an overlay): the host's run covers it")
    if not DEB.is_file():
        pytest.skip(f"no {DEB.relative_to(ROOT)}: make deb")
    if root != Path("/") and not (root / ".f2b-ext-root").is_file():
        pytest.skip(f"no Debian root at {root}: make trixie-root")
    r = subprocess.run([str(ROOT / "tests" / "debian" / "root"), "run", str(root), str(ROOT), "--",
                        "python3", "/src/tests/debian/deb_cycle.py", f"/src/{DEB.relative_to(ROOT)}"],
                       capture_output=True, text=True, timeout=600)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("  ok  ") == 7


def test_the_manual_page_names_every_command():
    from f2b_ext.cli import build_parser
    import argparse
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    page = (ROOT / "debian" / "f2b-ext.1").read_text()
    documented = set(re.findall(r"^\.TP\n\.B (\S+)$", page, re.M))
    assert documented == set(sub.choices), (documented, set(sub.choices))
