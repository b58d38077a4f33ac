"""Adapter: what this machine is and what it depends on, read in the network namespace
of the calling process. Its own addresses (`ip -j addr`) serve subnet-escalate, check and
synwatch; `gather()` reads every dependency source that f2b_ext/core/dependencies.py parses
(routes, IPv6 routers, resolv.conf, NTP configs, the socket table and conntrack). It
imports nothing from fail2ban, so the watcher and the command line run without it.
Nothing here resolves a name: `resolve()` is called where a slow resolver may wait."""
from __future__ import annotations

import glob
import json
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from f2b_ext.core import dependencies as deps

RESOLV_CONF = "/etc/resolv.conf"
# (glob, parser): chrony, ntpd/ntpsec and systemd-timesyncd configurations
NTP_CONFIGS = (
    ("/etc/chrony/chrony.conf", deps.ntp_conf),
    ("/etc/chrony.conf", deps.ntp_conf),
    ("/etc/chrony/sources.d/*.sources", deps.ntp_conf),
    ("/etc/ntp.conf", deps.ntp_conf),
    ("/etc/ntpsec/ntp.conf", deps.ntp_conf),
    ("/etc/systemd/timesyncd.conf", deps.timesyncd_conf),
    ("/etc/systemd/timesyncd.conf.d/*.conf", deps.timesyncd_conf),
)
CONNTRACK = "/proc/net/nf_conntrack"
PROC_TCP = ("/proc/net/tcp", "/proc/net/tcp6")


def _ip_json(*args: str) -> list:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=5, check=True).stdout
    return json.loads(out or "[]")


def _addresses() -> list[str]:
    return [a["local"] for link in _ip_json("addr", "show") for a in link.get("addr_info", [])]


def own_addresses() -> list[str]:
    """Every address on this machine's interfaces; [] if `ip` cannot tell."""
    try:
        return _addresses()
    except (OSError, ValueError, subprocess.SubprocessError):
        return []


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return None


@dataclass
class Gathered:
    found: list = field(default_factory=list)      # [Dependency]
    names: dict = field(default_factory=dict)      # name -> source ("ntp")
    problems: list = field(default_factory=list)   # what could not be read, in words
    peers: list = field(default_factory=list)      # peer addresses seen now


def gather() -> Gathered:
    """Every dependency this machine shows now, except names (returned to resolve) and
    remembered peers (the caller keeps a PeerMemory). An unreadable source is a problem,
    not an exception: the caller decides to fail closed."""
    g = Gathered()
    try:
        own = _addresses()
        g.found += deps.dependencies("this-host", own)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        own = []
        g.problems.append(f"addresses (ip addr): {exc}")
    try:
        hops = deps.route_gateways(_ip_json("route", "show", "table", "all")) + \
            deps.route_gateways(_ip_json("-6", "route", "show", "table", "all"))
        for gw, dev in hops:
            g.found += deps.dependencies("gateway", [gw], f"via {dev}" if dev else "")
        g.found += deps.dependencies("router", deps.neighbour_routers(_ip_json("-6", "neigh", "show")))
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        g.problems.append(f"routes (ip route): {exc}")
    text = _read(RESOLV_CONF)
    resolvers = deps.resolv_conf(text or "")
    if deps.STUB_RESOLVERS & set(resolvers):
        resolvers += deps.resolv_conf(_read(deps.RESOLVED_UPSTREAMS) or "")
    g.found += deps.dependencies("resolver", resolvers, RESOLV_CONF)
    for pattern, parse in NTP_CONFIGS:
        for path in sorted(glob.glob(pattern)):
            try:
                hosts = parse(Path(path).read_text(errors="replace"))
            except OSError as exc:
                g.problems.append(f"{path}: {exc.strerror}")
                continue
            addrs, names = deps.split_names(hosts)
            g.found += deps.dependencies("ntp", addrs, path)
            g.names.update({n: "ntp" for n in names})
    rows = []
    for path in PROC_TCP:
        rows += (_read(path) or "").splitlines()[1:]
    g.peers = deps.proc_tcp_peers(rows)
    try:
        with open(CONNTRACK, errors="replace") as f:
            g.peers += deps.conntrack_peers(f, own)
    except FileNotFoundError:
        pass
    except PermissionError:
        pass        # not root: the socket table alone (TCP peers; no answered UDP flows)
    return g


def resolve(name: str) -> list[str]:
    """Every address `name` resolves to (raises OSError when it does not)."""
    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    return sorted({info[4][0] for info in infos})


def guarded_dependencies() -> tuple[list, list]:
    """What subnet-escalate would guard on this machine ([Dependency], its peers
    included), and what it could not find out."""
    g = gather()
    found, problems = list(g.found), list(g.problems)
    for name, source in g.names.items():
        try:
            found += deps.dependencies(source, resolve(name), name)
        except OSError as exc:
            problems.append(f"{name} does not resolve ({exc.strerror or exc})")
    found += deps.dependencies("peer", dict.fromkeys(g.peers))
    return found, problems
