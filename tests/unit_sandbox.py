"""Run a command the way a systemd unit's [Service] sandbox would, where no systemd runs
(test machines, CI): what the program itself can meet of the unit's hardening.

How it works: `unit_options()` reads the unit's [Service] directives. `prefix()` gives
the command line to put before the program: this file as a launcher, which (as root)
enters a mount namespace of its own (never the caller's), mounts a private /proc with the unit's ProtectProc/ProcSubset,
sets UMask, drops to a DynamicUser-like uid (in a user namespace of its own with
PrivateUsers) with an empty capability bounding set and no_new_privs, turns on MemoryDenyWriteExecute (PR_SET_MDWE, as systemd >= 254 does),
loads a seccomp filter built from SystemCallFilter (groups expanded by
`systemd-analyze syscall-filter`, errno from SystemCallErrorNumber),
RestrictAddressFamilies and LockPersonality, and execs the program. Directives that
only shape mounts, devices, cgroups or namespaces the program never asks for are listed
in NOT_EMULATED; a directive in neither list fails the test, so a new one is looked at.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
DYNAMIC_UID = 61184                     # the first uid of systemd's DynamicUser= range

EMULATED = {"DynamicUser", "CapabilityBoundingSet", "AmbientCapabilities", "NoNewPrivileges", "UMask",
            "ProtectProc", "ProcSubset", "RestrictAddressFamilies", "SystemCallFilter",
            "SystemCallErrorNumber", "SystemCallArchitectures", "MemoryDenyWriteExecute", "LockPersonality",
            "PrivateUsers"}
NOT_EMULATED = {  # mounts, devices, cgroups, the service manager's own settings, calls never made
    "Type", "ExecStart", "Restart", "RestartSec", "LogsDirectory", "LogsDirectoryMode", "SyslogIdentifier",
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "DevicePolicy", "PrivateIPC",
    "PrivateMounts", "ProtectHostname", "ProtectClock", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "IPAddressDeny", "RemoveIPC",
    "MemoryMax", "CPUQuota", "RestrictSUIDSGID", "RestrictNamespaces", "RestrictRealtime"}

PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 4, 24, 38, 65, 1
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000


def unit_options(text: str) -> dict[str, list[str]]:
    """[Service] directive -> its values in order (a directive may repeat)."""
    options, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            options.setdefault(key.strip(), []).append(value.strip())
    return options


def unknown_directives(options: dict) -> set[str]:
    return set(options) - EMULATED - NOT_EMULATED


def prefix(unit: Path) -> list[str]:
    """What to put before the program's argv (run as root, e.g. after `ip netns exec`)."""
    return [sys.executable, str(HERE), str(unit), "--"]


# --- system call groups, as this machine's systemd defines them ---------------------------

def syscall_groups() -> dict[str, list[str]]:
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(names, groups, seen=None) -> set[str]:
    seen = set() if seen is None else seen
    result = set()
    for name in names:
        if name.startswith("@"):
            if name not in seen:
                seen.add(name)
                result |= expand(groups.get(name, ()), groups, seen)
        else:
            result.add(name)
    return result


def allowed_syscalls(values: list[str], groups) -> set[str]:
    """SystemCallFilter= lines in order: an allow list, then `~` lines taking names away."""
    allowed: set[str] = set()
    for value in values:
        deny = value.startswith("~")
        names = expand(value.lstrip("~").split(), groups)
        allowed = allowed - names if deny else allowed | names
    return allowed


# --- the launcher ------------------------------------------------------------------------

def _prctl(*args):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(*[ctypes.c_ulong(a) for a in args]) != 0:
        raise OSError(ctypes.get_errno(), f"prctl{args}: {os.strerror(ctypes.get_errno())}")


def _unshare(flags: int):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), f"unshare({flags:#x}): {os.strerror(ctypes.get_errno())}")


def _own_mount_namespace():
    """A mount namespace of this process's own, private: the /proc it mounts is never
    seen outside (the host's /proc stays as it is)."""
    before = os.readlink("/proc/self/ns/mnt")
    _unshare(CLONE_NEWNS)
    if os.readlink("/proc/self/ns/mnt") == before:
        raise RuntimeError("still in the caller's mount namespace")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)


def launch(unit: Path, argv: list[str]):
    import seccomp                          # python3-seccomp (Makefile)
    opts = unit_options(unit.read_text())
    one = lambda key, default=None: opts.get(key, [default])[-1]
    assert not unknown_directives(opts), unknown_directives(opts)
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    groups = syscall_groups()
    proc_opts = [o for o in (f"hidepid={one('ProtectProc')}" if one("ProtectProc") else "",
                             f"subset={one('ProcSubset')}" if one("ProcSubset") == "pid" else "") if o]
    if proc_opts:
        _own_mount_namespace()
        subprocess.run(["mount", "-t", "proc", "-o", ",".join(proc_opts), "proc", "/proc"], check=True)
    os.umask(int(one("UMask", "0022"), 8))
    if one("DynamicUser") == "yes":
        os.setgroups([])
        os.setgid(DYNAMIC_UID)
        os.setuid(DYNAMIC_UID)              # permitted, effective and ambient capabilities go
    if one("PrivateUsers") == "yes":        # the unit's own user mapped to itself, no one else
        uid, gid = os.getuid(), os.getgid()
        _prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # setuid() made /proc/self root's: give it back
        _unshare(CLONE_NEWUSER)
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    if one("CapabilityBoundingSet") == "":
        for cap in range(last_cap + 1):
            _prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if one("MemoryDenyWriteExecute") == "yes":
        _prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0)
    fail = getattr(errno, one("SystemCallErrorNumber", "EPERM"))
    filt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(fail) if "SystemCallFilter" in opts else seccomp.ALLOW)
    allowed = allowed_syscalls(opts.get("SystemCallFilter", []), groups)
    families = one("RestrictAddressFamilies")
    conditional = {"socket"} if families else set()
    if one("LockPersonality") == "yes":
        conditional.add("personality")
    if "SystemCallFilter" in opts:
        for name in sorted(allowed - conditional):
            try:
                filt.add_rule(seccomp.ALLOW, name)
            except (ValueError, RuntimeError, OSError):
                pass                        # not a system call of this architecture
    if families:
        keep = {getattr(socket, f) for f in families.split()}
        for family in range(0, 64):
            action = seccomp.ALLOW if family in keep else seccomp.ERRNO(errno.EAFNOSUPPORT)
            if action != seccomp.ALLOW or "socket" in allowed or "SystemCallFilter" not in opts:
                filt.add_rule(action, "socket", seccomp.Arg(0, seccomp.EQ, family))
    if "personality" in conditional and ("personality" in allowed or "SystemCallFilter" not in opts):
        for persona in (0, 0xFFFFFFFF):     # PER_LINUX, and the query systemd lets through
            filt.add_rule(seccomp.ALLOW, "personality", seccomp.Arg(0, seccomp.EQ, persona))
    filt.load()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    unit_path, sep, *command = sys.argv[1:]
    assert sep == "--" and command, "usage: unit_sandbox.py UNIT -- COMMAND..."
    launch(Path(unit_path), command)
