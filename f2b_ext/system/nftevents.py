"""Adapter: a thread that listens to the kernel's nf_tables notifications (what `nft
monitor` reads) and calls back soon after something may have removed a jail's
enforcement; what counts and when is f2b_ext.core.nftevents' business.

How it works: `open_socket()` subscribes a NETLINK_NETFILTER socket to NFNLGRP_NFTABLES
in the caller's network namespace (the set action calls it in its start(), inside
fail2ban-server, so it hears the namespace fail2ban enforces in). `EventWatch` reads it
in one daemon thread: each datagram is parsed, fed to a core.nftevents.Transactions, and
`check(reason)` runs when core.nftevents.due() says. A receive buffer overrun (ENOBUFS:
messages were lost) calls `check` too, as any unreadable message does. Errors in `check`
go to the logger, never out of the thread. `stop()` wakes the thread through a pipe and
joins it.
"""
from __future__ import annotations

import errno
import math
import os
import select
import socket
import threading
import time
from typing import Callable

from f2b_ext.core import nftevents

RECEIVE_BUFFER = 8 << 20        # bytes (the kernel doubles it): one message per element of a flush, and of our own
                                # repair; 16 MB hold about 100,000 of them (an overrun costs one extra compare)


def open_socket() -> socket.socket:
    """A socket subscribed to nf_tables notifications in this thread's network
    namespace; OSError when it cannot be (no netlink, not permitted)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, nftevents.NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        sock.setsockopt(nftevents.SOL_NETLINK, nftevents.NETLINK_ADD_MEMBERSHIP, nftevents.NFNLGRP_NFTABLES)
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, RECEIVE_BUFFER)       # SO_RCVBUFFORCE (root)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    except OSError:
        sock.close()
        raise
    return sock


def thread_ids_comparable() -> bool:
    """Are this process's thread ids the kernel's own (NEWGEN names the committing thread
    by its id in the first pid namespace)? Not in a container with its own pid
    namespace: there our own transactions cannot be told apart, and are heard."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    return len(line.split()) == 2
    except OSError:
        pass
    return False


class EventWatch:
    """Calls `check(reason)` after nf_tables changes that may have removed enforcement
    (see f2b_ext.core.nftevents); one thread, from start() to stop()."""

    def __init__(self, sock: socket.socket, transactions: nftevents.Transactions,
                 check: Callable[[str], None], log, name: str):
        self._sock, self._transactions, self._check, self._log = sock, transactions, check, log
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self.checks = 0             # compares this watch asked for
        self.thread = threading.Thread(target=self._run, daemon=True, name=name)

    def start(self) -> "EventWatch":
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0):
        """Wake the thread and wait for it; it closes the socket as it ends."""
        if self._stopping:
            return
        self._stopping = True
        if not self.thread.is_alive() and self.thread.ident is None:
            return self._close()            # never started
        os.write(self._wake_w, b"x")
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _close(self):
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1
        self._sock.close()

    def _run(self):
        try:
            self._loop()
        finally:
            self._close()

    def _loop(self):
        first = last = None              # the pending removals (monotonic seconds)
        last_check, last_cost = -math.inf, 0.0
        while not self._stopping:
            now = time.monotonic()
            wait = None if first is None else max(0.0, nftevents.due(first, last, last_check, last_cost) - now)
            try:
                ready = select.select([self._sock, self._wake_r], [], [], wait)[0]
            except (OSError, ValueError):
                return                   # closed under us: stop() is under way
            if self._stopping:
                return
            reasons = []
            if self._sock in ready:
                try:
                    data = self._sock.recv(65536)
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        reasons.append("nftables events were lost (receive buffer overrun)")
                    elif exc.errno in (errno.EAGAIN, errno.EINTR):
                        pass
                    else:
                        self._log.error("nftables events: %s; repairs wait for the next check", exc)
                        return
                else:
                    for event in nftevents.parse(data):
                        reason = self._transactions.feed(event)
                        if reason:
                            reasons.append(reason)
            now = time.monotonic()
            if reasons:
                if first is None:
                    first, why = now, reasons[0]
                last = now
            if first is not None and now >= nftevents.due(first, last, last_check, last_cost):
                first = last = None
                last_check = now
                self.checks += 1
                try:
                    self._check(why)
                except Exception as exc:         # keep watching; the next event or round may succeed
                    self._log.error("check after an nftables event failed: %s", exc)
                last_cost = time.monotonic() - last_check
