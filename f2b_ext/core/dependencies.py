"""Dependencies: the addresses this server needs, which forged evidence may never ban.

How it works
------------
A forged packet can claim any source. If its claimed source is the server's gateway, its
resolver, its NTP server or a peer it talks to, a ban would cut the server off from what
it depends on. So the addresses the server depends on are gathered from the machine
(the adapter, f2b_ext/system/host.py, reads the files and tables) and parsed here, each with
where it came from, as `Dependency(net, source, detail)`:

  source     from                                                       protects against
  this-host  the interfaces' addresses (ip -j addr)                     every ban
  gateway    the routing tables' next hops (ip -j route: default and
             any `via`, IPv6 link-local routers included)               every ban
  router     IPv6 neighbours flagged as routers (ip -j -6 neigh)        every ban
  resolver   /etc/resolv.conf nameservers; systemd-resolved's upstream
             servers (/run/systemd/resolve/resolv.conf) behind its stub every ban
  ntp        chrony, ntpd/ntpsec (server|pool|peer), systemd-timesyncd
             (NTP=, FallbackNTP=); names resolved by the adapter        every ban
  ignoreip   the jail's ignoreip, host names resolved                   every ban
  protect    subnet-escalate's `protect` parameter                      every ban
  peer       remotes of connections this host opened and that were
             answered: TCP past the handshake (the socket table, or
             conntrack), UDP flows with a reply (conntrack); remembered
             for `retention` (7 days) in a file, across restarts         forgeable evidence

Peers are protected from forgeable evidence only: an outbound jail still blocks a remote
this host once talked to (a call-home after a first contact), never a gateway or resolver.

`PeerMemory` keeps when each peer was last seen and forgets it after the retention.
Parsers take text and plain data and return address strings; they never raise on
hostile input (a bad line is skipped). Nothing here does I/O.
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from f2b_ext.core.escalation import WEEK, Network

# source -> does it protect against every ban (True) or against forgeable evidence only
SOURCES = {
    "this-host": True,
    "gateway": True,
    "router": True,
    "resolver": True,
    "ntp": True,
    "ignoreip": True,
    "protect": True,
    "peer": False,
}

# systemd-resolved's stub listeners: the real upstreams are in its own resolv.conf
STUB_RESOLVERS = frozenset({"127.0.0.53", "127.0.0.54"})
RESOLVED_UPSTREAMS = "/run/systemd/resolve/resolv.conf"

RETENTION = WEEK

# include/net/tcp_states.h: states in which no handshake has completed (yet)
TCP_NOT_CONNECTED = frozenset({0x02, 0x03, 0x07, 0x0A})   # SYN_SENT SYN_RECV CLOSE LISTEN
TCP_LISTEN = 0x0A
# conntrack TCP states before the handshake completed
CONNTRACK_TCP_UNANSWERED = frozenset({"SYN_SENT", "SYN_SENT2", "NONE", "SYN_RECV"})


@dataclass(frozen=True, order=True)
class Dependency:
    net: Network
    source: str
    detail: str = ""

    @property
    def always(self) -> bool:
        """Protected against every ban, not only against forgeable evidence."""
        return SOURCES[self.source]

    def __str__(self) -> str:
        addr = str(self.net.network_address) if self.net.prefixlen == self.net.max_prefixlen else str(self.net)
        return f"{addr} {self.source}" + (f" ({self.detail})" if self.detail else "")


def address(text: str) -> Optional[str]:
    """An address in canonical form, or None. A zone (`fe80::1%eth0`) is dropped."""
    try:
        return str(ipaddress.ip_address(text.strip().split("%", 1)[0]))
    except ValueError:
        return None


def dependencies(source: str, items: Iterable[str], detail: str = "") -> list[Dependency]:
    """Addresses or CIDRs of one source as Dependency entries; bad items are skipped."""
    if source not in SOURCES:
        raise ValueError(f"unknown dependency source {source!r}")
    out = []
    for item in items:
        try:
            net = ipaddress.ip_network(item.strip().split("%", 1)[0], strict=False)
        except ValueError:
            continue
        out.append(Dependency(net, source, detail))
    return out


# --- parsers --------------------------------------------------------------------------

def resolv_conf(text: str) -> list[str]:
    """`nameserver` addresses of a resolv.conf (resolv.conf(5)), in order."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver" and (a := address(words[1])):
            out.append(a)
    return out


def route_gateways(routes: list) -> list[tuple[str, str]]:
    """(gateway, device) of every route with a next hop (`ip -j route show table all`,
    multipath `nexthops` included)."""
    out = []
    for route in routes if isinstance(routes, list) else ():
        if not isinstance(route, dict):
            continue
        hops = [route] + [h for h in route.get("nexthops") or () if isinstance(h, dict)]
        for hop in hops:
            gw = hop.get("gateway")
            if isinstance(gw, str) and (a := address(gw)):
                out.append((a, str(hop.get("dev") or route.get("dev") or "")))
    return out


def neighbour_routers(neighbours: list) -> list[str]:
    """Neighbours the kernel knows as routers (`ip -j -6 neigh`: a "router" key)."""
    return [a for n in neighbours if isinstance(n, dict) and "router" in n
            and isinstance(n.get("dst"), str) and (a := address(n["dst"]))] \
        if isinstance(neighbours, list) else []


_NTP_LINE = re.compile(r"^\s*(?:server|pool|peer)\s+(\S+)", re.M)
_TIMESYNCD_LINE = re.compile(r"^\s*(?:NTP|FallbackNTP)\s*=\s*(.*)$", re.M)


def ntp_conf(text: str) -> list[str]:
    """Hosts (names or addresses) of chrony.conf, chrony's sources.d, ntp.conf and
    ntpsec's ntp.conf: `server`, `pool` and `peer` directives."""
    return [h for h in _NTP_LINE.findall(_strip_comments(text)) if _hostname_or_address(h)]


def timesyncd_conf(text: str) -> list[str]:
    """Hosts of systemd-timesyncd's NTP= and FallbackNTP= (timesyncd.conf(5))."""
    return [h for line in _TIMESYNCD_LINE.findall(_strip_comments(text)) for h in line.split()
            if _hostname_or_address(h)]


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0].split("!", 1)[0] for line in text.splitlines())


_HOSTNAME = re.compile(r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")


def _hostname_or_address(text: str) -> bool:
    return address(text) is not None or bool(_HOSTNAME.fullmatch(text))


def split_names(hosts: Iterable[str]) -> tuple[list[str], list[str]]:
    """(addresses, names to resolve)."""
    addrs, names = [], []
    for h in hosts:
        (addrs.append(a) if (a := address(h)) else names.append(h))
    return addrs, names


def _proc_address(text: str) -> Optional[str]:
    """/proc/net/tcp{,6}'s hex address (little-endian 32-bit words) -> canonical text."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    if len(raw) == 16:
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        addr = ipaddress.IPv6Address(words)
        return str(addr.ipv4_mapped or addr)
    return None


def proc_tcp_peers(rows: Iterable[str]) -> list[str]:
    """Remotes of TCP connections this host opened that got past the handshake, from the
    rows of /proc/net/tcp and tcp6: a socket whose local port is not a listening port
    and whose state is not SYN_SENT, SYN_RECV, LISTEN or CLOSE."""
    parsed, listening = [], set()
    for row in rows:
        f = row.split()
        if len(f) < 4 or ":" not in f[1] or ":" not in f[2]:
            continue
        try:
            state = int(f[3], 16)
            lport = int(f[1].rsplit(":", 1)[1], 16)
        except ValueError:
            continue
        if state == TCP_LISTEN:
            listening.add(lport)
        parsed.append((state, lport, f[2].rsplit(":", 1)[0]))
    out = []
    for state, lport, remote in parsed:
        if state in TCP_NOT_CONNECTED or lport in listening:
            continue
        if (a := _proc_address(remote)) and not ipaddress.ip_address(a).is_unspecified:
            out.append(a)
    return out


def conntrack_peers(lines: Iterable[str], own: Iterable[str]) -> list[str]:
    """Remotes of flows this host opened (original source is one of its addresses) that
    were answered: no [UNREPLIED], and for TCP a state past the handshake. Lines are
    /proc/net/nf_conntrack's (or `conntrack -L`'s, which lack the family columns)."""
    mine = {a for a in (address(x) for x in own) if a}
    out = []
    for line in lines:
        if "[UNREPLIED]" in line:
            continue
        words = line.split()
        fields = [w.split("=", 1) for w in words if "=" in w]
        src = next((v for k, v in fields if k == "src"), None)
        dst = next((v for k, v in fields if k == "dst"), None)
        if not src or not dst or address(src) not in mine:
            continue
        if "tcp" in words[:4] and not any(w in words for w in ("ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
                                                              "LAST_ACK", "TIME_WAIT", "CLOSE")):
            continue
        if (a := address(dst)) and a not in mine:
            out.append(a)
    return out


# --- remembered peers -----------------------------------------------------------------

class PeerMemory:
    """Peers and when each was last seen; forgotten after `retention` seconds."""

    def __init__(self, retention: float = RETENTION):
        self.retention = retention
        self.seen: dict[str, float] = {}

    def observe(self, peers: Iterable[str], now: float) -> int:
        """Record peers seen now; returns how many were new."""
        new = 0
        for p in peers:
            if (a := address(p)) is None:
                continue
            new += a not in self.seen
            self.seen[a] = max(now, self.seen.get(a, now))
        return new

    def expire(self, now: float) -> list[str]:
        gone = [a for a, t in self.seen.items() if t < now - self.retention]
        for a in gone:
            del self.seen[a]
        return gone

    def dumps(self) -> str:
        return json.dumps({"version": 1, "peers": self.seen}, sort_keys=True)

    @classmethod
    def loads(cls, text: str, retention: float = RETENTION) -> "PeerMemory":
        """From `dumps()`; entries that are not an address with a number are dropped."""
        memory = cls(retention)
        try:
            data = json.loads(text)
        except ValueError:
            return memory
        peers = data.get("peers") if isinstance(data, dict) else None
        for key, when in (peers.items() if isinstance(peers, dict) else ()):
            if isinstance(key, str) and isinstance(when, (int, float)) and (a := address(key)):
                memory.seen[a] = float(when)
        return memory
