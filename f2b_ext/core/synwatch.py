"""Half-open (SYN_RECV) floods: which sources one snapshot of the kernel's table names.

How it works
------------
A SYN flood against an open port is accepted by the firewall, so no LOG rule fires; its
only trace is the kernel's request sockets, connections left in SYN_RECV because the
(often forged) source never completes the handshake. A *sample* is every SYN_RECV entry
at one moment, as `HalfOpen(version, address, port)`: the remote address as an int and
the local port. Two readers' formats are parsed here, on bytes and text handed in by the
adapter (f2b_ext/system/synwatch.py): netlink sock_diag dump messages (`parse_diag`) and the
rows of /proc/net/tcp and tcp6 (`parse_proc_row`). IPv4 clients of a dual-stack listener
appear as ::ffff:a.b.c.d; they are read as the IPv4 addresses they are.

`Tally` counts one sample per remote host and per /24 (/64) in `report.Bounded` tables
(exact until `capacity` keys, then Space-Saving: a count may be at most `error` too high,
so a threshold is compared with `count - error`, which is never too high). Each key
keeps the ports its entries target (at most `PORTS_PER_KEY`).

`offenders()` applies `Thresholds`: a prefix holding at least `net` entries is one
offender, and the hosts inside it are not reported again; otherwise a host holding at
least `host` entries is. A prefix that would cover a protected network (this machine's
addresses, loopback, the admin's --ignore list) is never reported; hosts inside it still
are, unless protected themselves. `unattributed()` is what no offender explains: many
forged random sources, nothing to ban.

`offender_line()` is the one log line per offender per interval that
filter.d/synrecv.conf reads; `summary_line()` reports a spread flood in words the filter
never matches. Nothing here does I/O.
"""
from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from f2b_ext.core.escalation import HOST_PREFIX, Network, first_overlap, parse_networks, prefix_network
from f2b_ext.core.report import Bounded
from f2b_ext.errors import F2bExtError

TCP_SYN_RECV = 3               # include/net/tcp_states.h; /proc prints it as "03"
TCP_LISTEN = 10
PORTS_PER_KEY = 16             # ports remembered per source; more are only counted

# Always protected: a half-open connection from here is this machine talking to itself.
LOOPBACK = ("127.0.0.0/8", "::1/128")

# --- netlink sock_diag (linux/inet_diag.h, linux/netlink.h) ---------------------------
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLMSG_HEADER = struct.Struct("=IHHII")          # len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states; then inet_diag_sockid (48 bytes,
# zero: a dump ignores it)
DIAG_REQUEST = struct.Struct("=BBBBI48x")
# inet_diag_msg after the netlink header: family, state, timer, retrans (1 byte each),
# then inet_diag_sockid: sport, dport (big-endian), src[16], dst[16] (dst: the remote),
# if, cookie[2]; then expires, rqueue, wqueue, uid, inode.
DIAG_MSG_OFFSET = NLMSG_HEADER.size
DIAG_MSG_SIZE = 72
# family, state, (timer, retrans), sport, (dport, src), dst: single bytes need no byte
# order, the ports are big-endian, so one big-endian struct reads them all
_DIAG_FIELDS = struct.Struct(">BBxxH2x16x16s")
AF_INET, AF_INET6, IPPROTO_TCP = 2, 10, 6

V4_MAPPED = 0xFFFF                               # ::ffff:0:0/96: its bits above the IPv4 address


class HalfOpen(NamedTuple):
    version: int        # 4 or 6
    address: int        # the remote address
    port: int           # the local (listening) port


class DiagError(F2bExtError, OSError):
    """The kernel answered the dump with an error (errno in .errno)."""


def diag_request(family: int, seq: int = 1, state: int = TCP_SYN_RECV) -> bytes:
    """The netlink message asking for every TCP socket of `family` in `state`."""
    body = DIAG_REQUEST.pack(family, IPPROTO_TCP, 0, 0, 1 << state)
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY,
                             NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _ipv6(value: int) -> tuple[int, int]:
    """(version, address) of an IPv6 address: ::ffff:a.b.c.d is an IPv4 client."""
    if value >> 32 == V4_MAPPED:
        return 4, value & 0xFFFFFFFF
    return 6, value


def _remote(family: int, raw: bytes) -> tuple[int, int]:
    """(version, address int) of a 16-byte inet_diag address field."""
    if family == AF_INET:
        return 4, int.from_bytes(raw[:4], "big")
    return _ipv6(int.from_bytes(raw, "big"))


def parse_diag(buf: bytes | memoryview, out: list) -> bool:
    """Append the SYN_RECV entries of one netlink read to `out`. True once the dump is
    done. Raises DiagError on an error message and ValueError on a truncated message."""
    view = memoryview(buf)
    off, end = 0, len(view)
    while off + NLMSG_HEADER.size <= end:
        length, kind = NLMSG_HEADER.unpack_from(view, off)[:2]
        if length < NLMSG_HEADER.size or off + length > end:
            raise ValueError(f"truncated netlink message ({length} bytes at {off} of {end})")
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            errno = -struct.unpack_from("=i", view, off + NLMSG_HEADER.size)[0]
            if errno:
                raise DiagError(errno, f"sock_diag dump failed (errno {errno})")
            return True
        if kind == SOCK_DIAG_BY_FAMILY and length >= DIAG_MSG_OFFSET + DIAG_MSG_SIZE:
            family, state, port, dst = _DIAG_FIELDS.unpack_from(view, off + DIAG_MSG_OFFSET)
            if state == TCP_SYN_RECV:
                out.append(HalfOpen(*_remote(family, dst), port))
        off += (length + 3) & ~3
    return False


def _proc_address(text: str, byteorder: str) -> tuple[int, int]:
    """/proc/net/tcp{,6} prints each 32-bit word of the address in host byte order."""
    if len(text) not in (8, 32):
        raise ValueError(f"not an address: {text!r}")
    raw = bytes.fromhex(text)
    if byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    value = int.from_bytes(raw, "big")
    return (4, value) if len(raw) == 4 else _ipv6(value)


def parse_proc_row(row: str, byteorder: str) -> HalfOpen | None:
    """One row of /proc/net/tcp{,6}: the entry if it is in SYN_RECV, else None.
    `sl local_address rem_address st ...`, addresses as HEX:PORT."""
    parts = row.split(None, 4)
    if len(parts) < 4 or parts[3] != "03":
        return None
    try:
        local, remote = parts[1], parts[2]
        version, address = _proc_address(remote.split(":", 1)[0], byteorder)
        return HalfOpen(version, address, int(local.rsplit(":", 1)[1], 16))
    except (ValueError, IndexError):
        return None


# --- deciding -----------------------------------------------------------------------

@dataclass(frozen=True)
class Thresholds:
    host: int = 20                   # SYN_RECV entries from one address
    net: int = 50                    # ... from one /prefix4 (/prefix6)
    prefix4: int = 24
    prefix6: int = 64
    ports: frozenset | None = None   # local ports watched; None: all
    protected: tuple = ()            # networks never reported (nor any prefix holding one)
    unattributed: int = 200          # entries no offender explains: a spread flood

    def __post_init__(self):
        if self.host < 1 or self.net < 1 or self.unattributed < 1:
            raise ValueError("thresholds must be at least 1")
        if not 8 <= self.prefix4 <= 32 or not 16 <= self.prefix6 <= 128:
            raise ValueError("prefix4 must be /8../32 and prefix6 /16../128")
        protected = parse_networks(LOOPBACK, "loopback") + parse_networks(self.protected, "protected")
        object.__setattr__(self, "protected", tuple(dict.fromkeys(protected)))

    def prefix(self, version: int) -> int:
        return self.prefix4 if version == 4 else self.prefix6


@dataclass(frozen=True)
class Offender:
    source: Network          # a host (/32, /128) or a prefix
    count: int               # SYN_RECV entries, a lower bound when the tally is approximate
    port: int                # the local port most of them target
    more_ports: int          # how many other ports they target
    addresses: int | None    # distinct remote addresses inside a prefix (None: a host)


class Tally:
    """One sample counted per host and per prefix, in at most `capacity` keys each."""

    def __init__(self, thresholds: Thresholds, capacity: int = 65536):
        self.thresholds = thresholds
        self.hosts = Bounded(capacity, dict)        # (version, address) -> {port: entries}
        self.nets = Bounded(capacity, dict)         # (version, address >> host bits) -> {port: entries}
        self.total = 0
        self._shift = {v: HOST_PREFIX[v] - thresholds.prefix(v) for v in HOST_PREFIX}   # address -> prefix
        self._ports = thresholds.ports

    def feed(self, entries: Iterable[HalfOpen]) -> "Tally":
        """Count entries. The hot loop of a sample, so it does Bounded.add's work inline
        (same rule: a new key starts at `error`) and calls it only when a table is full."""
        watched, shift = self._ports, self._shift
        hosts, nets = self.hosts, self.nets
        for version, address, port in entries:
            if watched is not None and port not in watched:
                continue
            self.total += 1
            for table, key in ((hosts, (version, address)), (nets, (version, address >> shift[version]))):
                extra = table.extra
                ports = extra.get(key)
                if ports is not None:
                    table.counts[key] += 1
                elif len(extra) < table.capacity:
                    table.counts[key] = table.error + 1
                    ports = extra[key] = {}
                else:
                    ports = table.add(key)          # full: Space-Saving makes room
                n = ports.get(port)
                if n is not None:
                    ports[port] = n + 1
                elif len(ports) < PORTS_PER_KEY:
                    ports[port] = 1
        return self

    @property
    def exact(self) -> bool:
        return self.hosts.error == 0 and self.nets.error == 0


def _offender(source: Network, count: int, ports: dict, addresses: int | None) -> Offender:
    port, _ = min(ports.items(), key=lambda kv: (-kv[1], kv[0]))
    return Offender(source, count, port, len(ports) - 1, addresses)


def offenders(tally: Tally) -> list[Offender]:
    """The prefixes and hosts above their thresholds, most entries first (see the module
    docstring). A count is `count - error`, never more than the truth."""
    th = tally.thresholds
    out: list[Offender] = []
    reported: set = set()
    shift = tally._shift
    addresses = Counter((v, a >> shift[v]) for v, a in tally.hosts.counts)
    for key, count in tally.nets.top(len(tally.nets.counts)):
        low = count - tally.nets.error
        if low < th.net:
            break
        version, value = key
        net = prefix_network(version, value, th.prefix(version))
        if first_overlap(net, th.protected) is not None:
            continue
        out.append(_offender(net, low, tally.nets.extra[key], addresses[key]))
        reported.add(key)
    for key, count in tally.hosts.top(len(tally.hosts.counts)):
        low = count - tally.hosts.error
        if low < th.host:
            break
        version, address = key
        if (version, address >> shift[version]) in reported:
            continue
        host = prefix_network(version, address, HOST_PREFIX[version])
        if first_overlap(host, th.protected) is not None:
            continue
        out.append(_offender(host, low, tally.hosts.extra[key], None))
    out.sort(key=lambda o: (-o.count, o.source.version, o.source))
    return out


def unattributed(tally: Tally, found: list[Offender]) -> int:
    """Entries of the sample that no reported offender holds."""
    return max(0, tally.total - sum(o.count for o in found))


# --- the log lines (filter.d/synrecv.conf reads offender lines) ------------------------

def offender_line(o: Offender) -> str:
    """`half-open flood from 203.0.113.0/24: 57 SYN_RECV to port 80 from 57 addresses`."""
    source = str(o.source.network_address) if o.addresses is None else str(o.source)
    line = f"half-open flood from {source}: {o.count} SYN_RECV to port {o.port}"
    if o.more_ports:
        line += f" and {o.more_ports} more port{'s' if o.more_ports > 1 else ''}"
    if o.addresses is not None:
        line += f" from {o.addresses} address{'es' if o.addresses != 1 else ''}"
    return line


def summary_line(tally: Tally, found: list[Offender]) -> str | None:
    """One line when more than `unattributed` entries belong to no offender: a flood
    from sources spread too thin to ban (typically forged at random). The filter never
    matches it; it tells the admin why nothing is banned."""
    rest = unattributed(tally, found)
    if rest < tally.thresholds.unattributed:
        return None
    approx = "" if tally.exact else "about "
    return (f"half-open total: {approx}{rest} SYN_RECV held by no offender "
            f"({len(tally.hosts.counts)} addresses, {len(tally.nets.counts)} prefixes): "
            f"spread or forged at random, nothing to ban; keep net.ipv4.tcp_syncookies=1")


def parse_ports(text: str) -> frozenset | None:
    """'80,443' or '8000-8080,443' -> a set of ports; '' or 'all' -> None (every port)."""
    text = text.strip()
    if text in ("", "all", "any"):
        return None
    ports: set[int] = set()
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            a, b = int(low), int(high or low)
        except ValueError:
            raise ValueError(f"bad port {part!r}: expected N, N-M or all") from None
        if not 1 <= a <= b <= 65535:
            raise ValueError(f"bad port range {part!r}: ports are 1-65535")
        ports.update(range(a, b + 1))
    return frozenset(ports)
