"""Adapter: a throw-away network lab on the real kernel (root only).

How it works: `Lab` builds two network namespaces joined by a veth pair: a *server*
(192.0.2.1, 2001:db8:f2b::1) and a *remote* that may forge any source address on the
link (documentation and benchmark ranges only). The server's routes all point back into
the remote namespace, so every reply stays inside the lab; neither namespace has any
other link. `/proc/sys/net/netfilter/nf_log_all_netns` is set to 1 while the lab lives
(namespaces log nothing otherwise) and restored when it closes, as is every other sysctl
it touches. `KernelLog` reads the kernel's records from /dev/kmsg, keeping only this
lab's (by its interface names). Frames are written raw (AF_PACKET) from the remote side,
built by scapy, so flags, ICMP types and broadcast MACs are exactly what a test asks for
(SYN floods are built with struct: scapy is too slow for 100,000 frames).

Used by the sample capture script, the live tests and `f2b-ext demo`.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import itertools
import json
import os
import random
import select
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from f2b_ext.errors import F2bExtError

NF_LOG_ALL_NETNS = Path("/proc/sys/net/netfilter/nf_log_all_netns")
CLONE_NEWNET = 0x40000000

SERVER_V4, REMOTE_V4, LINK_V4 = "192.0.2.1", "192.0.2.2", "192.0.2.0/24"
SERVER_V6, REMOTE_V6, LINK_V6 = "2001:db8:f2b::1", "2001:db8:f2b::2", "2001:db8:f2b::/64"
# Sources the remote may use: documentation and benchmark ranges, the unspecified
# addresses and link-local (which never leaves the lab's own link), nothing else.
ALLOWED_SOURCES = tuple(ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15", "2001:db8::/32",
    "0.0.0.0/32", "::/128", "fe80::/10"))


class LabError(F2bExtError, RuntimeError):
    pass


def sh(*args: str, check: bool = True, input: str | None = None) -> str:
    """Run a command, return stdout; raise LabError with its stderr on failure."""
    proc = subprocess.run(args, capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def until(predicate, timeout: float, every: float = 0.05):
    """The first truthy predicate() within `timeout` seconds (tried at least once),
    else None: how the lab, its tests and the demo wait for the kernel or fail2ban."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value or None
        time.sleep(every)


def forgeable_source(addr) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """`addr` as an address if the remote may forge it (ALLOWED_SOURCES), else LabError."""
    ip = ipaddress.ip_address(addr)
    if not any(ip in net for net in ALLOWED_SOURCES if net.version == ip.version):
        raise LabError(f"refusing to forge {addr}: only documentation/benchmark ranges")
    return ip


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn_frame(src_mac: str, dst_mac: str, src, dport: int, sport: int, seq: int) -> bytes:
    """An Ethernet frame holding one TCP SYN from `src` to the server (IPv4 or IPv6)."""
    macs = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    v6 = src.version == 6
    dst = ipaddress.ip_address(SERVER_V6 if v6 else SERVER_V4).packed
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src.packed + dst + (struct.pack("!IxxxB", len(tcp), 6) if v6 else struct.pack("!xBH", 6, len(tcp)))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    if v6:
        return macs + b"\x86\xdd" + struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + src.packed + dst + tcp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), seq & 0xFFFF, 0x4000, 64, 6, 0, src.packed, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return macs + b"\x08\x00" + ip + tcp


class Sysctls:
    """Set sysctls, remember the old values, restore them all on close."""

    def __init__(self):
        self._saved: list[tuple[Path, str]] = []

    def set(self, path: Path | str, value: str):
        path = Path(path)
        self._saved.append((path, path.read_text().strip()))
        path.write_text(value)

    def restore(self):
        while self._saved:
            path, old = self._saved.pop()
            with contextlib.suppress(OSError):
                path.write_text(old)


_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def in_netns(name: str):
    """Run the block with this thread inside network namespace `name`; sockets made in
    the block stay in it."""
    with open("/proc/self/ns/net") as home, open(f"/run/netns/{name}") as target:
        if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise LabError(f"setns({name}): {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            _libc.setns(home.fileno(), CLONE_NEWNET)


class Listener:
    """A listening socket whose accept loop runs in a thread. close() shuts it down
    first: a plain close() leaves a blocked accept() holding the port."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


class Background:
    """Threads that run while a block runs (a lab's watchers and probers): each target
    in a daemon thread, started on entering; on leaving `_stop` is set and each is
    joined (at most 5 s)."""

    def __init__(self, *targets):
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=t, daemon=True) for t in targets]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(5)


@dataclass
class KernelRecord:
    uptime: float
    message: str

    def syslog(self, style: str, host: str = "lab", stamp: str = "2026-11-21T08:08:21.452534+00:00") -> str:
        """Render as a syslog daemon would: 'rfc3339' (Debian 12 rsyslog), 'classic',
        'nouptime' (RHEL /var/log/messages), 'journal' (fail2ban's systemd backend)."""
        up = f"[{self.uptime:12.6f}]"
        if style == "rfc3339":
            return f"{stamp} {host} kernel: {up} {self.message}"
        if style == "classic":
            return f"Nov 21 08:08:21 {host} kernel: {up} {self.message}"
        if style == "nouptime":
            return f"Nov 21 08:08:21 {host} kernel: {self.message}"
        if style == "journal":
            return f"{host} kernel: {up} {self.message}"
        raise ValueError(style)


class KernelLog:
    """New kernel records from /dev/kmsg that mention one of `ifaces`."""

    def __init__(self, ifaces: tuple[str, ...]):
        self.ifaces = ifaces
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def close(self):
        os.close(self.fd)

    def _mine(self, message: str) -> bool:
        return any(f"IN={i} " in message or f"OUT={i} " in message for i in self.ifaces)

    def read(self, settle: float = 0.3, want: int | None = None, timeout: float = 3.0,
             until=None) -> list[KernelRecord]:
        """Records until `want` arrived (or `timeout`), or until none came for `settle` s;
        with `until`, not before a record for which until(record) is true arrived (or
        `timeout`): a loaded machine may log a packet's line later than `settle`."""
        out: list[KernelRecord] = []
        deadline = time.monotonic() + timeout
        quiet_until = time.monotonic() + settle
        waiting = until is not None
        while time.monotonic() < deadline:
            if want is not None and len(out) >= want:
                break
            if want is None and not waiting and time.monotonic() > quiet_until:
                break
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            while True:
                try:
                    raw = os.read(self.fd, 8192).decode("utf-8", "replace")
                except BlockingIOError:
                    break
                except OSError:      # EPIPE: records overwritten before we read them
                    continue
                head, _, text = raw.partition(";")
                text = text.split("\n", 1)[0]
                fields = head.split(",")
                if self._mine(text):
                    out.append(KernelRecord(int(fields[2]) / 1e6, text))
                    quiet_until = time.monotonic() + settle
                    waiting = waiting and not until(out[-1])
        return out


_labs = itertools.count(1)


def new_tag() -> str:
    """Unique per lab, also within one process: log lines are told apart by the
    interface names, and rsyslog's imklog replays older labs' lines."""
    return f"{os.getpid() % 100000}n{next(_labs)}"


class LabScope:
    """What every lab shares (Lab, LiveLab, FleetLab): built on entering, closed on
    leaving, and closed too when its build fails half way, before the error goes on, so
    nothing a half-built lab made is left. `add_netns` makes a namespace and remembers
    it; `remove_namespaces` deletes exactly those, last first (a namespace takes its
    veths with it), never one the lab did not make. A lab defines `build` and, when it
    holds more than namespaces, `close`."""

    def __init__(self):
        self._made: list[str] = []

    def __enter__(self):
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def build(self):
        raise NotImplementedError

    def close(self):
        self.remove_namespaces()

    def add_netns(self, name: str):
        sh("ip", "netns", "add", name)
        self._made.append(name)

    def remove_namespaces(self):
        while self._made:
            sh("ip", "netns", "del", self._made.pop(), check=False)


@dataclass
class Lab(LabScope):
    """Two namespaces and a veth; use as a context manager."""
    tag: str = field(default_factory=new_tag)
    sysctls: Sysctls = field(default_factory=Sysctls)

    def __post_init__(self):
        super().__init__()
        self.server = f"f2bx{self.tag}s"
        self.remote = f"f2bx{self.tag}r"
        self.server_if = f"f2bx{self.tag}a"
        self.remote_if = f"f2bx{self.tag}b"
        self.server_mac = self.remote_mac = ""

    def build(self):
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, netfilter)")
        self.sysctls.set(NF_LOG_ALL_NETNS, "1")
        for ns in (self.server, self.remote):
            self.add_netns(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", self.server_if, "netns", self.server, "type", "veth",
           "peer", "name", self.remote_if, "netns", self.remote)
        for ns, iface, v4, v6 in ((self.server, self.server_if, SERVER_V4, SERVER_V6),
                                  (self.remote, self.remote_if, REMOTE_V4, REMOTE_V6)):
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
               "net.ipv6.conf.default.accept_dad=0")
            sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", iface)
            sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", iface, "nodad")
            sh("ip", "-n", ns, "link", "set", iface, "up")
        # Replies to forged sources go back into the lab, never anywhere else.
        sh("ip", "-n", self.server, "route", "add", "default", "via", REMOTE_V4)
        sh("ip", "-n", self.server, "-6", "route", "add", "default", "via", REMOTE_V6)
        # The remote accepts traffic for any lab source it forges, so hosts answer it.
        for net in ("198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15"):
            sh("ip", "-n", self.remote, "route", "add", "local", net, "dev", "lo")
        self.server_mac = self._mac(self.server, self.server_if)
        self.remote_mac = self._mac(self.remote, self.remote_if)

    def close(self):
        self.remove_namespaces()
        self.sysctls.restore()

    @staticmethod
    def _mac(ns: str, iface: str) -> str:
        return json.loads(sh("ip", "-n", ns, "-j", "link", "show", iface))[0]["address"]

    # -- acting --
    def server_sh(self, *args: str, check: bool = True, input: str | None = None) -> str:
        return sh("ip", "netns", "exec", self.server, *args, check=check, input=input)

    def remote_sh(self, *args: str, check: bool = True, input: str | None = None) -> str:
        return sh("ip", "netns", "exec", self.remote, *args, check=check, input=input)

    def kernel_log(self) -> KernelLog:
        return KernelLog((self.server_if,))

    def send_frames(self, frames: list[bytes]):
        """Write raw Ethernet frames onto the link from the remote side."""
        with in_netns(self.remote):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            try:
                s.bind((self.remote_if, 0))
                for frame in frames:
                    while True:
                        try:
                            s.send(frame)
                            break
                        except OSError as exc:      # a burst filled the queue: let it drain
                            if exc.errno != errno.ENOBUFS:
                                raise
                            time.sleep(0.001)
            finally:
                s.close()

    def send(self, *packets, dst_mac: str | None = None):
        """Send scapy IP/IPv6 packets to the server as the remote (any lab source);
        `dst_mac` overrides the server's MAC (broadcast, multicast frames)."""
        from scapy.layers.l2 import Ether
        frames = []
        for pkt in packets:
            forgeable_source(pkt.src)
            frames.append(bytes(Ether(src=self.remote_mac, dst=dst_mac or self.server_mac) / pkt))
        self.send_frames(frames)

    def probe(self, src: str, dport: int = 23, timeout: float = 0.3) -> bool:
        """Does the server answer (SYN-ACK, RST or an ICMP error) a SYN from `src`
        within `timeout` s? The kernel's behaviour, seen on the wire at the remote end.
        Frames the remote itself sends (a flood beside the probe) and frames to other
        addresses are skipped unparsed, and what arrived in time is read even when this
        process gets the CPU back late: a loaded machine delays the reading, not the answer."""
        from scapy.layers.inet import ICMP, IP, TCP
        from scapy.layers.inet6 import IPv6
        from scapy.layers.l2 import Ether
        sport = random.randint(20000, 60000)
        addr = ipaddress.ip_address(src)
        ip = IPv6(src=src, dst=SERVER_V6) if addr.version == 6 else IP(src=src, dst=SERVER_V4)
        # where the frame's destination address sits (after the Ethernet header)
        ethertype, at = (b"\x86\xdd", 14 + 24) if addr.version == 6 else (b"\x08\x00", 14 + 16)
        with in_netns(self.remote):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        try:
            s.bind((self.remote_if, 0))
            self.send(ip / TCP(sport=sport, dport=dport, flags="S", seq=random.getrandbits(32)))
            deadline = time.monotonic() + timeout
            while select.select([s], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raw, (_, _, pkttype, _, _) = s.recvfrom(65535)
                if pkttype == socket.PACKET_OUTGOING or raw[12:14] != ethertype or raw[at:at + len(addr.packed)] != addr.packed:
                    continue
                pkt = Ether(raw).payload
                if TCP in pkt and pkt[TCP].dport == sport and pkt[TCP].sport == dport:
                    return True
                if ICMP in pkt or pkt.haslayer("ICMPv6DestUnreach"):
                    return True
            return False
        finally:
            s.close()

    def answered_within(self, src: str, dport: int = 23, timeout: float = 10.0) -> bool:
        """probe() until the server answers, at most `timeout` s: for a source that must
        be answered (a banned one never is, however often it knocks), so that one
        answer the loaded machine delivered late is not read as a ban. Mind `dport`:
        a firewall that logs SYNs to it makes each retry an attempt (the live lab's
        probes use its accepted PROBE_PORT)."""
        return bool(until(lambda: self.probe(src, dport), timeout))

    def listen(self, port: int) -> "Listener":
        """A TCP listener in the remote namespace on every address it answers for
        (its link address and the lab ranges it routes locally); accepts and closes."""
        with in_netns(self.remote):
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", port))
        srv.listen(64)
        return Listener(srv)

    def serve(self, port: int, backlog: int) -> socket.socket:
        """A dual-stack TCP listener in the server namespace that never accepts: its
        queue of half-open connections (SYN_RECV) holds at most `backlog` entries."""
        with in_netns(self.server):
            srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("::", port))
        srv.listen(backlog)
        return srv

    def mute_forged_sources(self):
        """The remote answers for the lab ranges it routes locally; from now on it drops
        the SYN-ACKs they receive (netfilter, after the capture probe() reads), as a
        forged source that does not exist would: the server's entries stay half-open."""
        self.remote_sh("nft", "add table inet f2bx_mute; "
                       "add chain inet f2bx_mute input { type filter hook input priority 0; }; "
                       "add rule inet f2bx_mute input tcp flags & (syn | ack) == syn | ack drop")

    def syn_flood(self, sources, dport: int, sport: int = 1024):
        """One SYN to the server's `dport` from each of `sources` (lab ranges only),
        built with struct rather than scapy: fast enough for 100,000 sources."""
        frames = [syn_frame(self.remote_mac, self.server_mac, forgeable_source(src),
                            dport, sport + i % 60000, seq=i * 7919 + 1)
                  for i, src in enumerate(sources)]
        self.send_frames(frames)

    def connect_from_server(self, dst: str, port: int, timeout: float = 1.0) -> bool:
        """Can the server open a TCP connection to dst:port?"""
        with in_netns(self.server):
            c = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(timeout)
        try:
            c.connect((dst, port))
            return True
        except OSError:
            return False
        finally:
            c.close()
