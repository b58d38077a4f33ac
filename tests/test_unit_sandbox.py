"""The synwatch unit's sandbox, applied where no systemd runs (tests/unit_sandbox.py):
first proven to bite (a probe meets each restriction, and does not without it), so that
tests/test_synwatch_live.py can run the watcher under it exactly as its unit would."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, is_root
import unit_sandbox

UNIT = ROOT / "systemd" / "f2b-ext-synwatch.service"

PROBE = r"""
USERNS = %r
import errno, json, mmap, os, socket
def tries(f):
    try:
        f()
        return "ok"
    except OSError as exc:
        return errno.errorcode[exc.errno]
print(json.dumps({
    "uid": os.getuid(),
    "umask": oct(os.umask(0)),
    "inet": tries(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
    "unix": tries(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()),
    "sock_diag": tries(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4).close()),
    "write_exec": tries(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)),
    "setpriority": tries(lambda: os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + 1)),
    "pid1_visible": os.path.exists("/proc/1"),
    "proc_sys": os.path.exists("/proc/sys"),
    "tcp_table": tries(lambda: open("/proc/thread-self/net/tcp").read()),
    "own_user_namespace": os.readlink("/proc/self/ns/user") != USERNS,
}))
"""


def test_every_directive_of_the_unit_is_emulated_or_known_not_to_matter():
    assert unit_sandbox.unknown_directives(unit_sandbox.unit_options(UNIT.read_text())) == set()


def test_the_filter_lines_expand_as_systemd_expands_them():
    groups = unit_sandbox.syscall_groups()
    allowed = unit_sandbox.allowed_syscalls(["@system-service", "~@privileged @resources"], groups)
    assert {"read", "execve", "socket", "recvmsg", "openat", "mmap"} <= allowed
    assert not {"setrlimit", "setpriority", "chroot", "setuid", "mount", "reboot"} & allowed


@pytest.mark.skipif(not is_root(), reason="mounts a private /proc and changes uid (needs root)")
def test_the_sandbox_bites_and_leaves_what_synwatch_needs():
    def probe(*prefix):
        r = subprocess.run([*prefix, "/usr/bin/python3", "-c", PROBE % os.readlink("/proc/self/ns/user")], capture_output=True, text=True, cwd="/")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    bare = probe()
    assert bare["inet"] == bare["write_exec"] == bare["setpriority"] == "ok" and bare["pid1_visible"]
    assert not bare["own_user_namespace"]
    boxed = probe(*unit_sandbox.prefix(UNIT))
    assert boxed == {"uid": unit_sandbox.DYNAMIC_UID, "umask": "0o77",
                     "inet": "EAFNOSUPPORT", "unix": "EAFNOSUPPORT", "sock_diag": "ok",
                     "write_exec": "EACCES", "setpriority": "EPERM",
                     "pid1_visible": False, "proc_sys": False, "tcp_table": "ok", "own_user_namespace": True}


@pytest.mark.skipif(not is_root(), reason="mounts a private /proc and changes uid (needs root)")
@pytest.mark.parametrize("reader", ["netlink", "proc", "auto"])
def test_the_units_command_runs_in_its_sandbox(reader):
    """ExecStart as the unit has it, one sample, under the unit's sandbox (reading this
    namespace's table, writing nothing but stdout)."""
    from test_synwatch_live import unit_command
    r = subprocess.run([*unit_sandbox.prefix(UNIT), *unit_command(), "--once", "--log", "-", "--reader", reader],
                       capture_output=True, text=True, cwd="/", env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0 and "Traceback" not in r.stderr and "unavailable" not in r.stderr, r.stderr


@pytest.mark.skipif(not is_root(), reason="mounts a private /proc and changes uid (needs root)")
def test_the_watcher_still_knows_this_machines_addresses_in_its_sandbox():
    """own_addresses() runs `ip -j addr`: if the sandbox broke it, the watcher would
    silently lose the rule that it never names this machine."""
    code = ["/usr/bin/python3", "-c", "import json; from f2b_ext.system.host import own_addresses; print(json.dumps(own_addresses()))"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    bare = subprocess.run(code, capture_output=True, text=True, cwd="/", env=env)
    boxed = subprocess.run([*unit_sandbox.prefix(UNIT), *code], capture_output=True, text=True, cwd="/", env=env)
    assert json.loads(boxed.stdout) == json.loads(bare.stdout) != [], boxed.stderr
