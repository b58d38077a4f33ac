"""Adapter: `f2b-ext synwatch`, the daemon around the pure core in synwatch.py.

How it works: every `interval` seconds a reader takes one sample of the kernel's
SYN_RECV entries in this network namespace and streams it into a `Tally` (a few hundred
entries at a time, so memory is the tally's bounded tables, whatever the flood):
  - `NetlinkReader` asks sock_diag for TCP sockets in SYN_RECV, IPv4 and IPv6; the
    kernel filters by state, so a sample costs what the half-open entries cost;
  - `ProcReader` reads /proc/net/tcp and tcp6, where the kernel formats every socket as
    text and the state is filtered here.
`auto` uses netlink (cheaper, see BENCHMARKS.md) and falls back to /proc if the kernel
has no inet_diag. The offenders' lines go to a log file (opened, appended and closed per
interval, so logrotate needs no signal; written only by this daemon, so nobody else can
put a line in it) or to stdout for journald. Names are never resolved. This machine's
addresses and what it depends on (gateways, resolvers, NTP servers given by address,
peers it connected to: f2b_ext/host.gather) are never named, and re-read every
`ADDRESS_REFRESH` seconds.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from f2b_ext.core import synwatch as sw
from f2b_ext.core.dependencies import dependencies
from f2b_ext.system.host import gather

TAG = "f2b-ext-synwatch"
DEFAULT_LOG = "/var/log/f2b-ext/synwatch.log"
ADDRESS_REFRESH = 60.0
RECV_BUFFER = 1 << 16
BATCH = 512                     # entries parsed before they are counted


class NetlinkReader:
    name = "netlink"

    def __init__(self):
        self._seq = 0

    def sample(self, tally: sw.Tally):
        for family in (socket.AF_INET, socket.AF_INET6):
            self._dump(family, tally)

    def probe(self):
        """Raises OSError if this kernel cannot answer (no inet_diag). It asks for the
        listening sockets, a few entries even under a flood; none of them is counted."""
        self._dump(socket.AF_INET, sw.Tally(sw.Thresholds()), sw.TCP_LISTEN)

    def _dump(self, family: int, tally: sw.Tally, state: int = sw.TCP_SYN_RECV):
        self._seq += 1
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, sw.NETLINK_SOCK_DIAG) as nl:
            nl.send(sw.diag_request(family, self._seq, state))
            buf = bytearray(RECV_BUFFER)
            batch: list = []
            done = False
            while not done:
                n = nl.recv_into(buf)
                done = sw.parse_diag(memoryview(buf)[:n], batch)
                tally.feed(batch)
                batch.clear()


class ProcReader:
    name = "proc"

    def __init__(self, root: Path = Path("/proc/thread-self/net")):     # this thread's namespace
        self.root = root

    def sample(self, tally: sw.Tally):
        for name in ("tcp", "tcp6"):
            try:
                fh = open(self.root / name, encoding="ascii", errors="replace")
            except FileNotFoundError:       # no IPv6 in this kernel
                continue
            with fh:
                next(fh, None)                  # the header row
                batch = []
                for row in fh:
                    entry = sw.parse_proc_row(row, sys.byteorder)
                    if entry is not None:
                        batch.append(entry)
                        if len(batch) >= BATCH:
                            tally.feed(batch)
                            batch.clear()
                tally.feed(batch)


READERS = {"netlink": NetlinkReader, "proc": ProcReader}


def reader_for(choice: str, warn=lambda msg: None):
    """The reader named `choice`; `auto`: netlink if this kernel answers it, else /proc."""
    if choice != "auto":
        return READERS[choice]()
    reader = NetlinkReader()
    try:
        reader.probe()
        return reader
    except OSError as exc:
        warn(f"sock_diag unavailable ({exc.strerror or exc}); reading /proc/net/tcp instead")
        return ProcReader()


class LineSink:
    """Where offender lines go: a file (stamped like syslog's RFC 3339 format, tagged)
    or stdout (bare: journald stamps and tags it)."""

    def __init__(self, path: str):
        self.path = path
        if path != "-":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a"):          # fail now, not at the first flood
                pass

    def write(self, lines: list[str], now: float):
        if not lines:
            return
        if self.path == "-":
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()
            return
        local = time.localtime(now)
        zone = time.strftime("%z", local)                   # +0900 -> +09:00 (RFC 3339)
        head = f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}{zone[:3]}:{zone[3:]} {TAG}[{os.getpid()}]: "
        with open(self.path, "a") as fh:
            fh.write("".join(head + line + "\n" for line in lines))


@dataclass
class Watcher:
    thresholds: sw.Thresholds
    reader: object
    sink: LineSink
    capacity: int = 65536
    refresh: bool = True                 # re-read this machine's dependencies now and then

    def __post_init__(self):
        self._ignore = self.thresholds.protected
        self._addresses_at = float("-inf")

    def _protect_own(self, now: float):
        """Never name this machine nor what it depends on (its gateways, resolvers, NTP
        servers by address, peers it connected to): a SYN flood can forge any of them."""
        if not self.refresh or now - self._addresses_at < ADDRESS_REFRESH:
            return
        self._addresses_at = now
        gathered = gather()
        found = [d.net for d in gathered.found] + [d.net for d in dependencies("peer", gathered.peers)]
        self.thresholds = replace(self.thresholds, protected=self._ignore + tuple(dict.fromkeys(found)))

    def once(self, now: float | None = None) -> list[str]:
        """One sample: the lines it gives (also written to the sink)."""
        now = time.time() if now is None else now
        self._protect_own(time.monotonic())
        tally = sw.Tally(self.thresholds, self.capacity)
        self.reader.sample(tally)
        found = sw.offenders(tally)
        lines = [sw.offender_line(o) for o in found]
        summary = sw.summary_line(tally, found)
        if summary:
            lines.append(summary)
        self.sink.write(lines, now)
        return lines

    def run(self, interval: float, stop=lambda: False):
        """Sample every `interval` seconds (on a fixed beat: a slow sample does not
        shift the next) until `stop()` or SIGTERM/SIGINT."""
        stopping = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.append(True))
        beat = time.monotonic()
        while not stopping and not stop():
            try:
                self.once()
            except OSError as exc:          # (EINTR never gets here: Python retries it)
                print(f"{TAG}: sample failed: {exc.strerror or exc}", file=sys.stderr, flush=True)
            beat += interval
            while not stopping and not stop() and (left := beat - time.monotonic()) > 0:
                time.sleep(min(left, 0.5))
            if time.monotonic() - beat > interval:
                beat = time.monotonic()           # fell behind (suspend, overload): no burst
